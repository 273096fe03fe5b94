"""Small helpers over fsspec so that every path may be local or a URL such as ``s3://bucket/key``.

``storage_options`` are passed to the fsspec file system (for s3fs: ``endpoint_url``, ``key``...).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import inspect
import logging
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, ParamSpec, TypeVar

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import ConfigError, MissingDependencyError, StorageError

log = logging.getLogger(__name__)

#: Longest wait for the lock of a local conditional replace (:func:`replace_if_unchanged`): its
#: holder only reads and writes one small file, so a longer wait means a hung process.
LOCK_TIMEOUT_SECONDS = 60.0
#: Tries of a conditional PUT that S3 answers 409 ConditionalRequestConflict (another conditional
#: write to the key was in progress; AWS says to retry).
_CONFLICT_TRIES = 5


def missing_credentials(exc: BaseException) -> bool:
    """No credentials to reach the store, passed on as it is rather than as an OSError: botocore
    found none (or half) for s3fs; google-auth found no Application Default Credentials for gcsfs
    (``token: google_default``); or GCS answered 401, which it does to the anonymous requests gcsfs
    falls back to when it finds no credentials, and to credentials it does not accept."""
    botocore = sys.modules.get("botocore.exceptions")  # not loaded: not botocore's error
    if botocore is not None and isinstance(exc, (botocore.NoCredentialsError, botocore.PartialCredentialsError)):
        return True
    return _google_credentials(exc)


def _google_credentials(exc: BaseException | None) -> bool:
    """Whether ``exc`` is google-auth or gcsfs saying that there are no (accepted) credentials."""
    google_auth = sys.modules.get("google.auth.exceptions")
    if google_auth is not None and isinstance(exc, google_auth.DefaultCredentialsError):
        return True
    gcsfs_retry = sys.modules.get("gcsfs.retry")
    return gcsfs_retry is not None and isinstance(exc, gcsfs_retry.HttpError) and exc.code == 401


def unreachable(exc: BaseException) -> bool:
    """The client could not connect to the endpoint, or lost it (refused, timed out, closed): s3fs
    passes botocore's errors on as they are, gcsfs aiohttp's, and only some of those are OSErrors."""
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(exc, (botocore.ConnectionError, botocore.HTTPClientError)):
        return True
    aiohttp = sys.modules.get("aiohttp")  # gcsfs talks to GCS through aiohttp
    return aiohttp is not None and isinstance(exc, aiohttp.ClientConnectionError)


def credentials_hint(options: str = "storage_options", exc: BaseException | None = None) -> str:
    """What to do when :func:`missing_credentials` said so of ``exc``; ``options`` names where the
    job file sets fsspec options."""
    if _google_credentials(exc):
        return (
            f"Set `token` to the path of a service-account key file (\"anon\" for a public bucket) in {options}, "
            "or give this worker Google credentials (GOOGLE_APPLICATION_CREDENTIALS naming a "
            "service-account key, `gcloud auth application-default login`, or the metadata server's "
            "service account) that may use the bucket."
        )
    # Not `key` and `secret` in the options: a job file refuses credentials written out.
    return (
        "Give this worker credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
        f"`profile` in {options}, or an instance role) that may use the bucket."
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def as_storage_errors(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Missing credentials and an unreachable store as a :class:`StorageError` naming the URL and
    what to check, instead of botocore's bare NoCredentialsError or EndpointConnectionError. Not a
    configuration error: credentials that appear later (a refreshed role, a mounted secret) or a
    store back up make a retry succeed."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            if not (missing_credentials(exc) or unreachable(exc)):
                raise
            url = signature.bind(*args, **kwargs).arguments["url"]
            where = "the `storage_options` of that location (a job's `outputs.storage_options` for its outputs and models)"
            if missing_credentials(exc):
                raise StorageError(f"no credentials to reach {url} ({exc}). {credentials_hint(where, exc)}") from exc
            raise StorageError(
                f"cannot reach {url} ({exc}). Check that the store is up and that `endpoint_url` in {where} is "
                "right; a retry succeeds once it answers."
            ) from exc

    return wrapper


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The file system holding ``url`` and the path of ``url`` inside it."""
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        protocol = fsspec.utils.get_protocol(url)
        if protocol in ("s3", "s3a"):
            raise MissingDependencyError("s3fs", "s3", f"Access to {url}") from exc
        if protocol in ("gs", "gcs"):
            raise MissingDependencyError("gcsfs", "gcs", f"Access to {url}") from exc
        raise


def join(url: str, *parts: str) -> str:
    """``url`` extended by path segments with ``/`` (valid for local paths and URLs alike)."""
    return "/".join([url.rstrip("/"), *parts])


def _writable(fs: AbstractFileSystem, url: str) -> AbstractFileSystem:
    """``fs`` if a file written there appears whole or not at all (see :func:`atomic_write`).

    Elsewhere fsspec writes into the target as the bytes arrive (SFTP, FTP, SMB, WebDAV, a
    ``dir::`` or caching wrapper...): readers see a half-written file, and a failure or a killed
    process leaves one. Refused before anything is written, rather than written unsafely.
    """
    if isinstance(fs, LocalFileSystem) or _is_s3(fs) or _is_gcs(fs) or _is_memory(fs):
        return fs
    raise ConfigError(
        f"cannot write {url}: the {'/'.join(_protocols(fs))} file system ({type(fs).__name__}) cannot replace a file in "
        "one step, so readers, a failure or a killed process could leave it half-written. Write to a local path, "
        "s3:// or gs:// instead"
    )


@as_storage_errors
def atomic_write(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` so that readers see the old content or the new one, never a partial file.

    Local folders are created as needed. Other stores than local folders, S3, GCS and fsspec's
    in-process ``memory://`` are refused (:class:`ConfigError`), since they write a file in place.
    """
    fs, path = filesystem(url, storage_options)
    if not isinstance(_writable(fs, url), LocalFileSystem):
        # Object stores only make an object visible once its upload completes; memory:// stores
        # the bytes given to pipe_file in one step.
        fs.pipe_file(path, data)
        return
    _replace_local(path, lambda handle: handle.write(data))


@as_storage_errors
def atomic_copy(local_file: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Copy a local file to ``url`` with the same guarantee as :func:`atomic_write`, in constant memory
    (but on ``memory://``, which holds it in memory anyway)."""
    fs, path = filesystem(url, storage_options)
    if _is_memory(_writable(fs, url)):
        # Its put_file commits the file when it opens it, then appends each chunk to it.
        with open(local_file, "rb") as source:
            fs.pipe_file(path, source.read())
        return
    if not isinstance(fs, LocalFileSystem):
        fs.put_file(local_file, path)
        return
    with open(local_file, "rb") as source:
        _replace_local(path, lambda handle: shutil.copyfileobj(source, handle, 16 * 1024 * 1024))


@as_storage_errors
def move(source: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Move the file at ``source`` onto ``url`` on the same file system, replacing what is there.

    Readers see the old content or the new one: a rename locally (so ``source`` must be on the
    same file system, e.g. in the same folder), a server-side copy on object stores.
    """
    fs, path = filesystem(url, storage_options)
    _, source_path = filesystem(source, storage_options)
    if isinstance(_writable(fs, url), LocalFileSystem):
        os.replace(source_path, path)
        return
    fs.mv(source_path, path)


def _replace_local(path: str, write: Callable[[BinaryIO], object]) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # The temporary file is in the same folder so that os.replace stays on one file system.
    fd, tmp = _create_temporary(folder, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# The longest file name most file systems take (ext4, XFS, btrfs: 255 bytes).
_NAME_MAX_BYTES = 255


def temporary_name(name: str, token: str) -> str:
    """A hidden name beside ``name`` for staging its content, within the file system's name limit.

    The name is shortened (by whole characters) when needed: a target of 250 bytes is a valid
    file name, and its staging file must not be the one that fails. A shortened name ends with a
    digest of the whole one, so two long names staged with one token stay apart.
    """
    if len(f".{name}.{token}.tmp".encode()) <= _NAME_MAX_BYTES:
        return f".{name}.{token}.tmp"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    room = _NAME_MAX_BYTES - len(f".~{digest}.{token}.tmp".encode())
    kept = name.encode()[:room].decode(errors="ignore")
    return f".{kept}~{digest}.{token}.tmp"


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new empty file in ``folder`` for the content of ``name``: its descriptor and path."""
    while True:
        tmp = os.path.join(folder, temporary_name(name, secrets.token_hex(4)))
        try:
            # Mode 0o666 lets the umask (and default ACLs) decide, as for files other tools create;
            # tempfile.mkstemp would give 0o600, which os.replace then keeps.
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            # Named as the file asked for: "No such file or directory: '/proc/.out.parquet.5dd918e6.tmp'"
            # named a staging file nobody typed.
            raise OSError(exc.errno, exc.strerror, os.path.join(folder, name)) from exc


@dataclass(frozen=True)
class Snapshot:
    """A file as :func:`read_snapshot` read it, to replace it only if nobody wrote it since
    (:func:`replace_if_unchanged`). ``data`` is None when there was no file; ``etag`` is the S3
    ETag and ``generation`` the GCS object generation, each read before the content (None elsewhere)."""

    data: bytes | None
    etag: str | None = None
    generation: str | None = None


@as_storage_errors
def read_snapshot(url: str, storage_options: dict[str, Any] | None = None) -> Snapshot:
    """The content of the file at ``url`` (None when there is none), for :func:`replace_if_unchanged`."""
    fs, path = filesystem(url, storage_options)
    etag = generation = None
    # The ETag (S3) or generation (GCS) before the content: content read after it is as new or
    # newer, so a write in between makes the conditional write fail (a spurious "changed"), never
    # succeed wrongly.
    if _is_s3(fs):
        fs.invalidate_cache(path)
        with contextlib.suppress(FileNotFoundError):
            etag = fs.info(path).get("ETag")
    elif _is_gcs(fs):
        fs.invalidate_cache(path)
        with contextlib.suppress(FileNotFoundError):
            generation = fs.info(path).get("generation")
    try:
        return Snapshot(read_bytes(url, storage_options), etag, None if generation is None else str(generation))
    except FileNotFoundError:
        return Snapshot(None)


@as_storage_errors
def replace_if_unchanged(url: str, data: bytes, seen: Snapshot, storage_options: dict[str, Any] | None = None) -> bool:
    """Replace the file at ``url`` by ``data`` only if it still holds what ``seen`` read (create it
    only if there was none), in one atomic step; False, writing nothing, when it was written,
    created or removed since. Readers see the old content or the new one, as with :func:`atomic_write`.

    - Local folders: under an exclusive lock (``fcntl.flock``, through filelock) on
      ``<file>.lock`` beside the file, which every writer through this function takes; readers
      need none. The lock file stays (removing it would let a waiting writer lock a file no longer
      there). It holds between threads and processes on one host, and between hosts sharing the
      folder only where the network file system carries ``flock`` across hosts (Linux NFS v4
      does); where ``flock`` is missing (ENOSYS), filelock falls back to a lock file created exclusively.
    - S3: one conditional PUT, ``If-Match`` the ETag ``seen`` was read under (``If-None-Match: *``
      when there was no file), which S3 itself decides (AWS S3 since 2024-11). An S3-compatible
      store must support conditional writes: one that rejects them fails the write, one that
      ignores the header writes unconditionally.
    - GCS (``gs://``): one upload with the precondition ``ifGenerationMatch``, the generation
      ``seen`` was read under (0 when there was no file), which GCS itself decides.
    - ``memory://``: compared, then written: two steps, so a write between them is not seen.
    - Other file systems are refused, as by :func:`atomic_write`.
    """
    fs, path = filesystem(url, storage_options)
    if isinstance(fs, LocalFileSystem):
        return _replace_local_if_unchanged(path, data, seen.data)
    if _is_s3(fs):
        return _replace_s3_if_unchanged(fs, path, data, seen)
    if _is_gcs(fs):
        return _replace_gcs_if_unchanged(fs, path, data, seen)
    _writable(fs, url)
    log.debug("%s: %s has no conditional write; comparing, then writing", url, type(fs).__name__)
    return _compare_then_write(fs, path, data, seen.data)


def _replace_local_if_unchanged(path: str, data: bytes, expected: bytes | None) -> bool:
    from filelock import FileLock

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_SECONDS):
        try:
            with open(path, "rb") as handle:
                current: bytes | None = handle.read()
        except FileNotFoundError:
            current = None
        if current != expected:
            return False
        _replace_local(path, lambda handle: handle.write(data))
        return True


def _replace_s3_if_unchanged(fs: AbstractFileSystem, path: str, data: bytes, seen: Snapshot) -> bool:
    if seen.data is not None and seen.etag is None:
        # A store that lists no ETag: If-None-Match would fail on the existing key at every try.
        log.warning("s3://%s has no ETag: comparing, then writing (not atomic on this store)", path)
        return _compare_then_write(fs, path, data, seen.data)
    condition = {"IfMatch": seen.etag} if seen.etag is not None else {"IfNoneMatch": "*"}
    for attempt in range(1, _CONFLICT_TRIES + 1):
        try:
            fs.pipe_file(path, data, **condition)
            return True
        except FileNotFoundError:  # If-Match on a key removed since
            return False
        except OSError as exc:
            code = _s3_error_code(exc)
            if code == "PreconditionFailed":
                return False
            if code != "ConditionalRequestConflict" or attempt == _CONFLICT_TRIES:
                raise
            time.sleep(0.1 * attempt)
    return False  # not reached: the last try returns or raises


def _replace_gcs_if_unchanged(fs: AbstractFileSystem, path: str, data: bytes, seen: Snapshot) -> bool:
    if seen.data is not None and seen.generation is None:
        # GCS gives every object a generation: this one was created between the two reads of
        # read_snapshot, so it was not there when the caller looked.
        return False
    # gcsfs's pipe_file offers only "must not exist" (mode="create"), not a generation to match:
    # the JSON API's single-request upload through gcsfs's own session, credentials, endpoint and
    # retries. A retry whose first try had landed is refused (412): a spurious "changed".
    bucket, key, _ = fs.split_path(path)  # type: ignore[attr-defined]
    try:
        fs.call(  # type: ignore[attr-defined]
            "POST",
            f"{fs._location}/upload/storage/v1/b/{{}}/o",  # type: ignore[attr-defined]
            bucket,
            uploadType="media",
            name=key,
            ifGenerationMatch=seen.generation or "0",
            headers={"Content-Type": "application/octet-stream"},
            data=data,
        )
    except FileExistsError:  # gcsfs's 412 Precondition Failed: written, created or removed since
        return False
    finally:
        fs.invalidate_cache(path)
    return True


def _compare_then_write(fs: AbstractFileSystem, path: str, data: bytes, expected: bytes | None) -> bool:
    """Where no conditional write is possible: two requests, so a write between them is not seen."""
    fs.invalidate_cache(path)
    try:
        current: bytes | None = fs.cat_file(path)
    except FileNotFoundError:
        current = None
    if current != expected:
        return False
    fs.pipe_file(path, data)
    return True


def _protocols(fs: AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _is_s3(fs: AbstractFileSystem) -> bool:
    return "s3" in _protocols(fs)


def _is_gcs(fs: AbstractFileSystem) -> bool:
    return "gs" in _protocols(fs) or "gcs" in _protocols(fs)


def _is_memory(fs: AbstractFileSystem) -> bool:
    from fsspec.implementations.memory import MemoryFileSystem

    return isinstance(fs, MemoryFileSystem)


def _s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of the botocore error s3fs turned into ``exc`` (its cause), if any."""
    cause: BaseException | None = exc
    while cause is not None:
        response = getattr(cause, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return response["Error"].get("Code")
        cause = cause.__cause__
    return None


@as_storage_errors
def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """Content of the file at ``url``; raises ``FileNotFoundError`` when there is none."""
    fs, path = filesystem(url, storage_options)
    # s3fs answers from a listing cached by an earlier find(): a file written since by another
    # process would be missing, one deleted since would still be read from the listing.
    fs.invalidate_cache(path)
    if _is_s3(fs):
        # s3fs sizes a whole-file read from that cache first (to split a large file into ranged
        # GETs): a listing another thread started before the file was written can refill it right
        # after the invalidation, and the read said the file was missing (a registry read beside a
        # listing, 3 of 5 rounds of a stress run). One GET asks S3 itself.
        return fs.cat_file(path, max_concurrency=1)
    return fs.cat_file(path)


@as_storage_errors
def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    fs.invalidate_cache(path)  # as in read_bytes: not from a stale cached listing
    return fs.exists(path)


@as_storage_errors
def remove(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete the file at ``url``; a missing file is not an error."""
    fs, path = filesystem(url, storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


@as_storage_errors
def find(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths of all files below the folder ``url``, relative to it and sorted; none if it is missing
    (a FileNotFoundError naming ``url`` if its bucket is)."""
    fs, path = filesystem(url, storage_options)
    # Listings are cached by some file systems (s3fs); another process may have written since.
    fs.invalidate_cache(path)
    prefix = path.rstrip("/") + "/"
    try:
        listed = fs.find(path)
    except FileNotFoundError as exc:
        # A missing folder lists nothing; s3fs and gcsfs raise for a missing bucket, in words that
        # name neither the bucket nor the URL ("The specified bucket does not exist", "b/nope/o").
        raise FileNotFoundError(
            errno.ENOENT, f"cannot list a folder of a bucket that does not exist ({exc}); check the bucket name", url
        ) from exc
    # Keys ending in "/" are the empty folder markers that S3 consoles and some tools create:
    # s3fs lists them as files.
    return sorted(found[len(prefix) :] for found in listed if found.startswith(prefix) and not found.endswith("/"))
