"""Model registry on any fsspec file system: versions of each series' model and a champion pointer.

Layout under ``root`` (a local folder or ``s3://bucket/prefix``)::

    <job>/<series slug>/versions/<version>/<artifact files...>
    <job>/<series slug>/versions/<version>/metadata.json   written last: marks the version complete
    <job>/<series slug>/champion.json                       {"version": ..., "promoted_at": ...}
    <job>/<series slug>/champion.json.lock                  local folders: the lock of champion writes
    <job>/<series slug>/tuned.json                          {"kind": ..., "params": ..., "report": ..., "version": ...}
    <job>/<series slug>/tuned.json.lock                     local folders: the lock of tuned.json writes
    <job>/<series slug>/tuning/<timestamp>.json             one tune run: every trial and the decision

A version without ``metadata.json`` was interrupted while being registered (or removed by
:meth:`ModelRegistry.prune`, which deletes it first) and is ignored.
Pointers are replaced atomically (:func:`pipelines.storage.atomic_write`), so a reader sees the
old champion or the new one, and a champion is always a complete version. The champion pointer is
only replaced by a conditional write (:func:`pipelines.storage.replace_if_unchanged`: a lock on
local folders, ``If-Match`` on S3, ``ifGenerationMatch`` on GCS), so a promotion that checks which champion serves and replaces
it (:meth:`ModelRegistry.promote_if_champion`) is one atomic step: of two runs promoting from the
same champion, one wins and the other learns which version won.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from fsspec.implementations.local import LocalFileSystem

from pipelines import storage
from pipelines.durations import duration_text
from pipelines.errors import ModelError
from pipelines.series import series_slug, slug_may_be_cut

log = logging.getLogger(__name__)

METADATA = "metadata.json"
CHAMPION = "champion.json"
TUNED = "tuned.json"
TUNING = "tuning"
#: Rounds of read, compare and conditional write in one promotion. Another round follows a failed
#: write only when the pointer read again still names the expected version (rewritten meanwhile).
_PROMOTION_TRIES = 5
#: Versions an error about a missing version names (the newest).
_NAMES_SHOWN = 10
#: Versions registered this recently are never pruned: the run that registered one may still be
#: about to promote it (or amend its decision), and a promotion checks the version only once.
PRUNE_GRACE = timedelta(hours=1)
#: Earlier champions kept beyond the newest versions: what a rollback (champion.json pointed back
#: by hand) needs when every recent version lost its comparison.
_EARLIER_CHAMPIONS_KEPT = 2
_VERSION_TIME = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class ModelVersion:
    job: str
    series: str
    version: str
    metadata: dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _new_version() -> str:
    # The time makes versions sort in registration order; the random part keeps two
    # registrations within one microsecond (other workers, other hosts) apart.
    return f"{datetime.now(UTC).strftime(_VERSION_TIME)}-{secrets.token_hex(3)}"


def _registered_at(version: str) -> datetime | None:
    """When ``version`` was registered, from its name; None for a name not made by :func:`_new_version`."""
    try:
        return datetime.strptime(version.partition("-")[0], _VERSION_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _is_record(name: str) -> bool:
    """Whether ``name`` in a series' ``tuning`` folder is a tune record: dot files are temporary
    files of writes still going (or interrupted)."""
    return name.endswith(".json") and not name.startswith(".")


@dataclass(frozen=True)
class Pruned:
    """What :meth:`ModelRegistry.prune` did to one series: versions removed, and those it failed to
    remove (version -> error), which the next prune tries again; likewise tuning records (by file
    name)."""

    removed: list[str]
    failed: dict[str, str]
    records_removed: list[str] = field(default_factory=list)
    records_failed: dict[str, str] = field(default_factory=dict)


def _parsed(data: bytes, url: str, remedy: str) -> dict[str, Any]:
    # json.loads raises JSONDecodeError (or UnicodeDecodeError) with no word of the file: name it.
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ModelError(f"{url} is not valid JSON ({exc}); {remedy}") from exc
    if not isinstance(document, dict):
        raise ModelError(f"{url} holds a JSON {type(document).__name__}, not an object; {remedy}")
    return document


def _pointer_version(data: bytes, url: str, job: str, series: str) -> str:
    # The url names the job and the series only as folders (the series as a slug): say them.
    remedy = f"it is the champion pointer of job {job}, series {series}: {_CHAMPION_REMEDY.format(job=job)}"
    version = _parsed(data, url, remedy).get("version")
    if not isinstance(version, str):
        raise ModelError(f"{url} names no version (its 'version' is {version!r}); {remedy}")
    return version


#: What an unreadable champion pointer (cut short, emptied, edited by hand) is expected as by
#: :meth:`ModelRegistry.promote_if_champion`: no version is named so (versions are timestamps).
#: Decision: the registry does not fall back to the newest complete version when the pointer is
#: unreadable, as the newest may be a model that lost its comparison and must never serve; scoring
#: fails naming the pointer, and the next train or tune replaces the pointer with the model it
#: registers (as it replaces a champion that cannot be loaded), so no hand repair is needed.
UNREADABLE = "(unreadable champion pointer)"
_CHAMPION_REMEDY = (
    "run the job's train (`anomaly-pipelines train {job}`, or the train DAG): it registers a model and replaces this "
    "pointer; or delete it, then run the job's train to register and promote a new model"
)
_METADATA_REMEDY = "run the job's train to register and promote a new model, or delete the version's folder {folder}"


def _dumps(document: dict[str, Any], what: str) -> bytes:
    try:
        return json.dumps(document, indent=2, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"{what} cannot be stored as JSON ({exc}); pass plain str, int, float, bool, list and dict values"
        ) from exc


def tuned_version(document: Any) -> str | None:
    """The version a ``tuned.json`` document was promoted with; None when it names none (written
    before versions were kept, or not a document)."""
    if not isinstance(document, dict):
        return None
    report = document.get("report")
    decision = report.get("decision") if isinstance(report, dict) else None
    version = document.get("version") or (decision.get("version") if isinstance(decision, dict) else None)
    return version if isinstance(version, str) else None


class ModelRegistry:
    """Versions and champions of the models of every (job, series)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None):
        self.root = root
        self.storage_options = storage_options or {}

    def _url(self, job: str, series: str, *parts: str) -> str:
        return storage.join(self.root, job, series_slug(series), *parts)

    def _read_json(self, url: str, remedy: str) -> dict[str, Any] | None:
        """The document at ``url``, ``None`` when there is none; :class:`ModelError` saying
        ``remedy`` when it is not a JSON object (cut short by a full disk, emptied, edited by hand)."""
        try:
            return _parsed(storage.read_bytes(url, self.storage_options), url, remedy)
        except FileNotFoundError:
            return None

    def _write_json(self, url: str, document: dict[str, Any], what: str) -> None:
        storage.atomic_write(url, _dumps(document, what), self.storage_options)

    def register(self, job: str, series: str, files: dict[str, bytes], metadata: dict[str, Any]) -> ModelVersion:
        """Store a new version made of ``files`` (name -> content); it is not the champion yet."""
        bad = [name for name in files if name in ("", ".", "..", METADATA) or "/" in name or "\\" in name]
        if bad:
            raise ModelError(
                f"cannot register a model of job {job!r}, series {series!r}: invalid artifact file names {bad}; "
                f"use plain file names other than {METADATA!r}"
            )
        version = _new_version()
        metadata = {**metadata, "job": job, "series": series, "version": version, "registered_at": _now()}
        document = _dumps(metadata, f"metadata of job {job!r}, series {series!r}")
        for name, content in files.items():
            storage.atomic_write(self._url(job, series, "versions", version, name), content, self.storage_options)
        # Last: until this file exists the version is invisible, so a crash leaves no half model.
        storage.atomic_write(self._url(job, series, "versions", version, METADATA), document, self.storage_options)
        log.info("registered model version %s of job %s, series %s", version, job, series)
        return ModelVersion(job, series, version, metadata)

    def version(self, job: str, series: str, version: str) -> ModelVersion:
        """One complete version; :class:`ModelError` when it does not exist, is incomplete or its
        metadata cannot be read."""
        return self._complete(
            job, series, version,
            lambda known: f"job {job!r}, series {series!r} has no complete model version {version!r} in {self.root}; "
            f"known versions: {known or 'none (train the job first)'}",
        )

    def _complete(self, job: str, series: str, version: str, gone: Callable[[str], str]) -> ModelVersion:
        """``version`` if complete, else :class:`ModelError` saying ``gone`` of the complete versions (joined)."""
        metadata = self._metadata(job, series, version)
        if metadata is None:
            # Names from one listing, the newest few: reading every version's metadata to say them
            # took a minute on S3 for 3,000 versions, and the message held all 3,000 (93 kB).
            names = self.version_names(job, series)
            shown = ", ".join(names[-_NAMES_SHOWN:])
            raise ModelError(gone(shown if len(names) <= _NAMES_SHOWN else f"{len(names)}, the newest {_NAMES_SHOWN}: {shown}"))
        return ModelVersion(job, series, version, metadata)

    def _metadata(self, job: str, series: str, version: str) -> dict[str, Any] | None:
        folder = self._url(job, series, "versions", version)
        return self._read_json(storage.join(folder, METADATA), _METADATA_REMEDY.format(folder=folder))

    def promote(self, job: str, series: str, version: str) -> None:
        """Make ``version`` the champion that scoring uses, whichever version serves now."""
        # Conditional too, so that it never lands between the check and the write of a
        # promote_if_champion (which would then replace it unseen): retried while others write.
        for _ in range(_PROMOTION_TRIES):
            if self.promote_if_champion(job, series, version, self.champion_version(job, series)) == version:
                return
        raise ModelError(
            f"job {job}, series {series}: could not promote version {version}: the champion pointer changed at each "
            f"of {_PROMOTION_TRIES} tries (other runs promoting at once, or a store whose conditional writes fail); "
            "run again"
        )

    def promote_if_champion(self, job: str, series: str, version: str, expected: str | None) -> str | None:
        """Make ``version`` the champion only if the champion is still ``expected`` (None: there is
        none), in one atomic step, and return the version serving afterwards: ``version`` when it
        was promoted, else the one that replaced ``expected`` (None: the pointer was removed)."""
        self.version(job, series, version)
        url = self._url(job, series, CHAMPION)
        pointer = _dumps({"version": version, "promoted_at": _now()}, "champion pointer")
        for _ in range(_PROMOTION_TRIES):
            seen = storage.read_snapshot(url, self.storage_options)
            serving = self._serving(seen.data, url, job, series, expected == UNREADABLE)
            if serving != expected:
                return serving
            if storage.replace_if_unchanged(url, pointer, seen, self.storage_options):
                self._check_still_complete(job, series, version, url, seen.data)
                log.info("promoted model version %s of job %s, series %s", version, job, series)
                return version
            # Written since it was read: the next read says by whom. It may name this version when
            # a retried request of this write was refused because its first try had landed.
        return self.champion_version(job, series, unreadable=expected == UNREADABLE)

    def _check_still_complete(self, job: str, series: str, version: str, url: str, previous: bytes | None) -> None:
        """After ``version`` was made champion: :class:`ModelError` when it is no longer complete,
        with the pointer put back to ``previous`` (removed when None) if it still names ``version``.

        :meth:`prune` (another process) may have removed the version between the check before the
        write and the write; it deletes ``metadata.json`` first, so this sees it. Left so, the
        pointer named a version that is gone, and scoring failed until the next promotion.
        """
        if self._metadata(job, series, version) is not None:
            return
        now = storage.read_snapshot(url, self.storage_options)
        if self._serving(now.data, url, job, series, unreadable=True) == version:
            if previous is None:
                storage.remove(url, self.storage_options)
            else:
                storage.replace_if_unchanged(url, previous, now, self.storage_options)
        raise ModelError(
            f"job {job}, series {series}: version {version} was removed (by the pruning of old versions) while it was being "
            f"promoted, so it was not promoted and the champion pointer {url} was put back; run the job's train (or tune) "
            "again to register and promote a new model"
        )

    @staticmethod
    def _serving(data: bytes | None, url: str, job: str, series: str, unreadable: bool) -> str | None:
        """The version the pointer ``data`` names (None: no pointer); :data:`UNREADABLE` for a
        damaged one when ``unreadable``, else its :class:`ModelError`."""
        if data is None:
            return None
        try:
            return _pointer_version(data, url, job, series)
        except ModelError:
            if unreadable:
                return UNREADABLE
            raise

    def amend(self, job: str, series: str, version: str, changes: dict[str, Any]) -> ModelVersion:
        """Replace top-level sections of a complete version's metadata (its decision, when the
        promotion it was registered for did not happen); job, series, version and registration
        time stay."""
        current = self.version(job, series, version).metadata
        fixed = {k: current[k] for k in ("job", "series", "version", "registered_at") if k in current}
        metadata = {**current, **changes, **fixed}
        self._write_json(self._url(job, series, "versions", version, METADATA), metadata, f"metadata of job {job!r}, series {series!r}")
        return ModelVersion(job, series, version, metadata)

    def champion(self, job: str, series: str) -> ModelVersion | None:
        """The promoted version, or ``None`` when nothing was promoted yet."""
        version = self.champion_version(job, series)
        if version is None:
            return None
        # version()'s "known versions" told people neither that the pointer is the problem nor
        # what to run (a version folder deleted by hand, or by a cleanup of old versions).
        return self._complete(
            job, series, version,
            lambda known: f"job {job}, series {series}: the champion pointer {self._url(job, series, CHAMPION)} names a "
            f"version that is gone: no complete model version {version!r} in {self.root} (its folder or its {METADATA} is "
            f"missing; complete versions: {known or 'none'}); run the job's train to register and promote a new model",
        )

    def champion_version(self, job: str, series: str, *, unreadable: bool = False) -> str | None:
        """The version the champion pointer names, without loading it (it may be unreadable), or
        ``None`` when nothing was promoted yet: what a promotion checks has not changed since it
        compared its model with the champion. A damaged pointer raises :class:`ModelError`, or
        with ``unreadable`` gives :data:`UNREADABLE`, which a promotion may then replace."""
        url = self._url(job, series, CHAMPION)
        try:
            data = storage.read_bytes(url, self.storage_options)
        except FileNotFoundError:
            return None
        return self._serving(data, url, job, series, unreadable)

    def load_files(self, job: str, series: str, version: str) -> dict[str, bytes]:
        """The artifact files of a complete version, by name (without ``metadata.json``)."""
        self.version(job, series, version)
        folder = self._url(job, series, "versions", version)
        # Dot files are temporary files of interrupted writes.
        names = [n for n in storage.find(folder, self.storage_options) if n != METADATA and not n.startswith(".")]
        return {name: storage.read_bytes(storage.join(folder, name), self.storage_options) for name in names}

    def versions(self, job: str, series: str, newest: int | None = None) -> list[ModelVersion]:
        """Complete versions, oldest first; one whose metadata cannot be read is left out, with a
        warning. With ``newest``, only the last that many, and only their metadata is read (one
        request each on object stores: 3,000 versions took half a minute on a local S3 endpoint)."""
        names = self.version_names(job, series)
        if newest is not None:
            names = names[len(names) - newest :] if newest > 0 else []
        found = []
        for version in names:
            try:
                metadata = self._metadata(job, series, version)
            except ModelError as exc:  # one bad file does not hide the other versions
                log.warning("job %s, series %s: version %s left out: %s", job, series, version, exc)
                continue
            if metadata is not None:  # None: removed since it was listed
                found.append(ModelVersion(job, series, version, metadata))
        return found

    def version_names(self, job: str, series: str) -> list[str]:
        """Names of the versions with a ``metadata.json``, oldest first, from one listing."""
        listed = (path.partition("/") for path in storage.find(self._url(job, series, "versions"), self.storage_options))
        return sorted(version for version, _, name in listed if name == METADATA)

    def series(self, job: str) -> list[str]:
        """Keys of the series of ``job`` that have at least one complete version, sorted."""
        folder = storage.join(self.root, job)
        keys = []
        for slug, versions in self._complete_versions(folder).items():
            if not slug_may_be_cut(slug):
                keys.append(unquote(slug))
                continue
            # A long key's slug is cut: its metadata holds the key (any readable one).
            for version in versions:
                url = storage.join(folder, slug, "versions", version, METADATA)
                try:
                    keys.append(_parsed(storage.read_bytes(url, self.storage_options), url, "")["series"])
                    break
                except (ModelError, KeyError, FileNotFoundError) as exc:
                    log.warning("job %s: cannot read the series key from %s (%s); trying another version", job, url, exc)
            else:
                log.warning("job %s: series folder %s left out: no version's metadata names its key", job, slug)
        return sorted(keys)

    def _complete_versions(self, folder: str) -> dict[str, list[str]]:
        """Series slug -> its complete versions (newest first) under the job folder ``folder``;
        on local folders only as many as it takes to find one (see :meth:`series`)."""
        fs, path = storage.filesystem(folder, self.storage_options)
        found: dict[str, list[str]] = {}
        if isinstance(fs, LocalFileSystem):
            # One listing of each series' versions and a look for metadata.json, newest first,
            # stopping at the first: walking every artifact and tune record of 10,000 series
            # through fsspec took 3 s.
            try:
                slugs = [entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith(".")]
            except (FileNotFoundError, NotADirectoryError):
                return found
            for slug in slugs:
                versions = os.path.join(path, slug, "versions")
                try:
                    names = sorted(os.listdir(versions), reverse=True)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                complete = (name for name in names if os.path.isfile(os.path.join(versions, name, METADATA)))
                first = next(complete, None)
                if first is not None:
                    found[slug] = [first, *complete] if slug_may_be_cut(slug) else [first]
            return found
        # Object stores: one recursive listing (a page per 1,000 keys) costs fewer requests than a
        # listing per series folder.
        for path in storage.find(folder, self.storage_options):
            parts = path.split("/")
            if len(parts) == 4 and parts[1] == "versions" and parts[3] == METADATA:
                found.setdefault(parts[0], []).append(parts[2])
        return {slug: sorted(versions, reverse=True) for slug, versions in found.items()}

    def prune(self, job: str, series: str, keep: int, *, now: datetime | None = None) -> Pruned:
        """Remove the versions and tuning records of one series that nothing needs any more.

        Versions kept whatever their age: the newest ``keep`` complete versions, the champion, the
        :data:`_EARLIER_CHAMPIONS_KEPT` newest versions among the older ones that were promoted (a
        rollback's targets, with those whose promotion was never confirmed: see below), the version
        ``tuned.json`` names, and any version registered within :data:`PRUNE_GRACE` of ``now``.
        Folders of versions never completed (interrupted registrations, or removals) are removed once
        older than :data:`PRUNE_GRACE`.

        A version whose run stopped between the champion pointer's write and the record of its
        promotion keeps the decision ``{"promoted": False, "pending": True}`` for ever, whether it
        served or not: nothing tells which without a history of the pointer. Such versions are kept
        like earlier champions, but do not count as one (at most :data:`_EARLIER_CHAMPIONS_KEPT`,
        newer than the oldest earlier champion kept).

        Tuning records (``tuning/<timestamp>.json``, one per tune run) kept: the newest ``keep``, any
        written within :data:`PRUNE_GRACE`, and those of the tune runs that promoted the version
        ``tuned.json`` names and the champion (their ``decision`` names the version), which
        :meth:`tuned_written` reads to tell a ``tuned.json`` deleted by people from one not written
        yet. The others are removed: small, but a series tuned daily gained 365 a year, kept for ever.

        Each version's ``metadata.json`` goes first, so a version half removed is incomplete
        (listings skip it, a promotion of it fails) and the next prune finishes it; then the
        champion pointer is read again, and a version promoted meanwhile (by hand) gets its
        metadata back and is kept. One version or record that cannot be removed does not stop the
        others. Nothing is removed when the champion pointer or ``tuned.json`` cannot be read
        (:class:`ModelError`): what they protect cannot be told. A series with nothing beyond what
        ``keep`` keeps costs one listing: the pointers are read only when something may go.
        """
        if keep < 1:
            raise ModelError(f"job {job}, series {series}: cannot keep {keep} model versions; keep at least 1")
        # One listing of the series' folder: its versions and its tuning records.
        files: dict[str, list[str]] = {}
        records: list[str] = []
        for path in storage.find(self._url(job, series), self.storage_options):
            top, _, rest = path.partition("/")
            if top == "versions":
                version, _, name = rest.partition("/")
                if name:
                    files.setdefault(version, []).append(name)
            elif top == TUNING and "/" not in rest and _is_record(rest):
                records.append(rest)
        complete = sorted(version for version, names in files.items() if METADATA in names)
        cutoff = (now or datetime.now(UTC)) - PRUNE_GRACE

        def recent(name: str) -> bool:
            registered = _registered_at(name)
            return registered is None or registered > cutoff  # a name not of ours is never removed

        newest = set(complete[-keep:])
        candidates = [version for version in sorted(files, reverse=True) if version not in newest and not recent(version)]
        old_records = [name for name in sorted(records)[:-keep] if not recent(name.removesuffix(".json"))]
        if not candidates and not old_records:
            return Pruned([], {})
        champion = self.champion_version(job, series)
        tuned = tuned_version(self.tuned(job, series))
        kept = {*newest, champion, tuned}
        earlier_champions = unconfirmed = 0
        removed: list[str] = []
        failed: dict[str, str] = {}
        for version in candidates:  # newest first, so the earlier champions kept are the latest ones
            if version in kept:
                continue
            try:
                looking = earlier_champions < _EARLIER_CHAMPIONS_KEPT and METADATA in files[version]
                state = self._promotion(job, series, version) if looking else None
                if state == "promoted":
                    earlier_champions += 1
                    continue
                # Pending: it may have served (the pointer was written, then its run stopped) and
                # been replaced since, which makes it a rollback target; or it never served. Which
                # one only a history of the pointer could tell, so it is kept, as keeping one too
                # many costs a folder and removing a rollback target loses it. It does not take an
                # earlier champion's place, so the confirmed ones are still kept; capped, so a
                # series whose promotions are never confirmed does not keep every version.
                if state == "pending" and unconfirmed < _EARLIER_CHAMPIONS_KEPT:
                    unconfirmed += 1
                    continue
                if self._remove_version(job, series, version):
                    removed.append(version)
            except Exception as exc:  # the others are still removed; the next prune tries this one again
                log.warning("job %s, series %s: could not remove model version %s: %s", job, series, version, exc)
                failed[version] = f"{type(exc).__name__}: {exc}"
        records_removed, records_failed = self._prune_records(job, series, old_records, {champion, tuned})
        if removed or failed:
            log.info(
                "job %s, series %s: removed %d old model versions%s; kept the newest %d, the champion, earlier champions, "
                "the tuned version and those registered in the last %s",
                job, series, len(removed), f" ({len(failed)} could not be removed: see the warnings)" if failed else "",
                keep, duration_text(PRUNE_GRACE),
            )
        if records_removed or records_failed:
            log.info(
                "job %s, series %s: removed %d old tuning records%s; kept the newest %d, those of the tuned and champion "
                "versions and those written in the last %s",
                job, series, len(records_removed),
                f" ({len(records_failed)} could not be removed or read: see the warnings)" if records_failed else "",
                keep, duration_text(PRUNE_GRACE),
            )
        return Pruned(removed[::-1], failed, records_removed, records_failed)

    def _prune_records(
        self, job: str, series: str, names: list[str], versions: set[str | None]
    ) -> tuple[list[str], dict[str, str]]:
        """Remove the tuning records ``names`` (oldest first) but those of the tune runs that promoted
        ``versions``; returns those removed, and those that could not be removed or read (-> error).

        A tune run records after it registered its version, so its record is named after the
        version's registration: only records from then on are read, oldest first, until each
        version's is found (usually the first, as :meth:`tuned_written` finds it).
        """
        folder = self._url(job, series, TUNING)
        wanted = {version: version.partition("-")[0] for version in versions if version is not None}
        protected: set[str] = set()
        failed: dict[str, str] = {}
        for name in names:
            if not wanted:
                break
            if name < min(wanted.values()):
                continue
            url = storage.join(folder, name)
            try:
                decision = _parsed(storage.read_bytes(url, self.storage_options), url, "delete it").get("decision")
            except (ModelError, FileNotFoundError):  # unreadable (tuned_written skips it too) or removed meanwhile
                continue
            except Exception as exc:  # it may be one of them: kept this time, read again next time
                log.warning("job %s, series %s: tuning record %s kept: it cannot be read (%s)", job, series, url, exc)
                protected.add(name)
                failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            named = decision.get("version") if isinstance(decision, dict) else None
            if isinstance(named, str) and named in wanted and name >= wanted[named]:
                protected.add(name)
                del wanted[named]
        removed = []
        for name in names:
            if name in protected:
                continue
            try:
                storage.remove(storage.join(folder, name), self.storage_options)
                removed.append(name)
            except Exception as exc:  # the others are still removed; the next prune tries this one again
                log.warning("job %s, series %s: could not remove tuning record %s: %s", job, series, name, exc)
                failed[name] = f"{type(exc).__name__}: {exc}"
        return removed, failed

    def prune_job(
        self, job: str, keep: int, *, now: datetime | None = None, series: Iterable[str] | None = None
    ) -> dict[str, Pruned]:
        """:meth:`prune` the series of ``job`` (``series``: only those, e.g. the ones a run trained or
        tried; None: every series, found by listing the whole job); a series that cannot be pruned is
        logged and left as it is, and the others are pruned.

        Pruning costs about three requests a series on object stores when something may go (a
        listing, the two pointers, more for each version read or removed), and listing every series
        a request per 1,000 files of the job: after a run that trained one series of 10,000, pruning
        all of them cost some 30,000 requests for the one series that had gained a version. Only
        series that gained versions or tuning records have anything new to remove.
        """
        out = {}
        for key in self.series(job) if series is None else sorted(set(series)):
            try:
                out[key] = self.prune(job, key, keep, now=now)
            except Exception as exc:
                log.warning("job %s, series %s: old model versions not removed: %s", job, key, exc)
        return out

    def holds(self, job: str, series: str) -> bool:
        """Whether the registry holds anything of ``series`` of ``job`` (a version, complete or not,
        a pointer or a tuning record): one listing."""
        return bool(storage.find(self._url(job, series), self.storage_options))

    def _promotion(self, job: str, series: str, version: str) -> str | None:
        """What the decision of ``version`` says of its promotion: "promoted", "pending" (registered
        to be promoted, outcome never recorded: see :func:`pipelines.training.register_model`), or
        None (not promoted, or damaged: it cannot serve again)."""
        try:
            metadata = self._metadata(job, series, version)
        except ModelError:
            return None
        decision = (metadata or {}).get("decision")
        if not isinstance(decision, dict):
            return None
        if decision.get("promoted") is True:
            return "promoted"
        return "pending" if decision.get("pending") is True else None

    def _remove_version(self, job: str, series: str, version: str) -> bool:
        """Remove one version's folder, ``metadata.json`` first; False when it was promoted
        meanwhile (then it is kept, complete)."""
        folder = self._url(job, series, "versions", version)
        url = storage.join(folder, METADATA)
        try:
            metadata = storage.read_bytes(url, self.storage_options)
        except FileNotFoundError:
            metadata = None
        storage.remove(url, self.storage_options)
        # A promotion checks the version, then writes the pointer: one that checked before the
        # removal may have written since. Its own check after the write may not have seen the
        # removal yet, so the version is given back.
        if self.champion_version(job, series, unreadable=True) == version:
            if metadata is not None:
                storage.atomic_write(url, metadata, self.storage_options)
            log.warning("job %s, series %s: model version %s was promoted while being pruned: kept", job, series, version)
            return False
        fs, path = storage.filesystem(folder, self.storage_options)
        if isinstance(fs, LocalFileSystem):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile by another prune
                shutil.rmtree(path)
        else:
            names = storage.find(folder, self.storage_options)
            if names:
                fs.rm([f"{path.rstrip('/')}/{name}" for name in names])
                fs.invalidate_cache(path)
        return True

    def write_tuned_params(
        self,
        job: str,
        series: str,
        params: dict[str, Any],
        report: dict[str, Any],
        *,
        kind: str | None = None,
        version: str | None = None,
    ) -> bool:
        """Store the parameters (and detector kind) chosen by tuning, replacing earlier ones, with
        the report that chose them. ``kind`` None: the job's configured kind. ``version``: the
        version promoted with them; a document naming a later version is kept (returns False).

        A tune run writes this file after its promotion, so of two tune runs promoted one after the
        other, the first one's write could land last and leave the parameters of a model no longer
        serving for every later train. The run promoted last registered its version last (it was
        compared with the other's model, or its promotion would have failed), so the later version
        wins, whatever the order of the writes; written conditionally (:func:`pipelines.storage.replace_if_unchanged`), so a
        write landing in between is seen.
        """
        url = self._url(job, series, TUNED)
        document = {"kind": kind, "params": params, "report": report, "tuned_at": _now(), "version": version}
        data = _dumps(document, f"tuning result of job {job!r}, series {series!r}")
        for _ in range(_PROMOTION_TRIES):
            seen = storage.read_snapshot(url, self.storage_options)
            try:
                stored = tuned_version(json.loads(seen.data) if seen.data is not None else None)
            except ValueError:  # unreadable: tuning replaces it
                stored = None
            if version is not None and stored is not None and stored > version:
                log.warning(
                    "job %s, series %s: tuned parameters of version %s not stored: %s holds those of the later version %s",
                    job, series, version, url, stored,
                )
                return False
            if storage.replace_if_unchanged(url, data, seen, self.storage_options):
                return True
        raise ModelError(
            f"job {job}, series {series}: could not store the tuned parameters of version {version} in {url}: it changed at "
            f"each of {_PROMOTION_TRIES} tries (other tune runs writing at once); run the job's tune again"
        )

    def tuned(self, job: str, series: str) -> dict[str, Any] | None:
        """The whole ``tuned.json`` document (kind, params, report), or ``None`` when never tuned."""
        # "Or run the job's tune again" was no remedy: a tune run that keeps the champion writes nothing.
        return self._read_json(
            self._url(job, series, TUNED),
            f"it holds the tuned parameters of job {job}, series {series}: delete it to train with the job's configured "
            "model and parameters (a tune run writes it again when it promotes a model)",
        )

    def tuned_params(self, job: str, series: str) -> dict[str, Any] | None:
        """Parameters from the last tuning, or ``None`` when the series was never tuned."""
        document = self.tuned(job, series)
        return None if document is None else document["params"]

    def record_tuning(self, job: str, series: str, document: dict[str, Any]) -> str:
        """Keep one tune run's trials and decision, whether or not it promoted anything; returns its name."""
        # A random part as in a version's name: two tune runs of the series (a CLI one beside a
        # scheduled one, on other hosts) recording within one microsecond replaced each other's record.
        name = f"{_new_version()}.json"
        self._write_json(self._url(job, series, TUNING, name), document, f"tuning record of job {job!r}, series {series!r}")
        return name

    def tuned_written(self, job: str, series: str, version: str) -> bool:
        """Whether the tune run that promoted ``version`` stored its ``tuned.json``: its tuning
        record, written after that file, names the version.

        A ``tuned.json`` that is missing, or names an earlier version, beside a tuned champion is
        either not written yet (a tune run promotes its model first, then writes the file; it may
        also have crashed in between) or was deleted by people to train with the job's configured
        model. This tells the two apart. Only records named after the version's registration are
        read, oldest first (the run's own comes first unless other tune runs of the series
        recorded in between).
        """
        folder = self._url(job, series, TUNING)
        registered = version.partition("-")[0]  # records and versions are named by UTC time alike
        names = sorted(
            n for n in storage.find(folder, self.storage_options) if _is_record(n) and n >= registered
        )
        for name in names:
            url = storage.join(folder, name)
            try:
                record = _parsed(storage.read_bytes(url, self.storage_options), url, "delete it")
            except (ModelError, FileNotFoundError) as exc:
                log.warning("job %s, series %s: tune record left out: %s", job, series, exc)
                continue
            decision = record.get("decision")
            if isinstance(decision, dict) and decision.get("version") == version:
                return True
        return False

    def tuning_history(self, job: str, series: str, newest: int | None = None) -> list[dict[str, Any]]:
        """Every recorded tune run of the series, oldest first; with ``newest``, only the last that
        many (only those are read)."""
        folder = self._url(job, series, TUNING)
        names = sorted(n for n in storage.find(folder, self.storage_options) if _is_record(n))
        if newest is not None:
            names = names[len(names) - newest :] if newest > 0 else []
        records = []
        for name in names:
            url = storage.join(folder, name)
            try:
                records.append(_parsed(storage.read_bytes(url, self.storage_options), url, "delete it"))
            except ModelError as exc:  # one bad record does not hide the others
                log.warning("job %s, series %s: tune record left out: %s", job, series, exc)
        return records
