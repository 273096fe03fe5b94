from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from pipelines import storage
from pipelines.errors import ConfigError, DataValidationError, MissingDependencyError, ModelError, StorageError


@pytest.fixture(params=["local", "s3", "gs"])
def root(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "store"), {}
    if request.param == "gs":
        request.getfixturevalue("plain_gcsfs")
        emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
        return f"gs://{emulator.bucket}/{tmp_path.name}", emulator.options
    bucket, options = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/store", options


@dataclass
class GcsEmulator:
    """gcp-storage-emulator (in memory, in this process) with what it lacks of GCS: the upload
    precondition ``ifGenerationMatch`` (412 unless the object's generation is the one given; 0:
    unless there is no object), which the emulator ignores, storing every upload. GCS decides it
    with the write, so uploads are served one at a time. ``requests`` is its request log;
    ``before_next_upload`` runs before the next upload is served: another writer's request
    landing just before it."""

    endpoint: str
    bucket: str = "bucket"
    requests: list[str] = field(default_factory=list)
    before_next_upload: Callable[[], object] | None = None
    uploads: threading.Lock = field(default_factory=threading.Lock)

    @property
    def options(self) -> dict:
        return {"endpoint_url": self.endpoint, "token": "anon", "skip_instance_cache": True}


def _answer_gcs_error(handler, code: int, message: str, reason: str) -> None:
    """Answer ``handler``'s request as the GCS JSON API answers an error."""
    import json

    handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    body = json.dumps({"error": {"code": code, "message": message, "errors": [{"reason": reason}]}}).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[GcsEmulator]:
    import functools
    import sys
    from http.server import ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers.buckets import create_bucket
    from gcp_storage_emulator.server import RequestHandler
    from gcp_storage_emulator.storage import Storage

    emulator = GcsEmulator(endpoint="")

    class WithPreconditions(RequestHandler):
        def do_POST(self) -> None:
            emulator.requests.append(f"POST {self.path}")
            url = urlsplit(self.path)
            if not url.path.startswith("/upload/"):
                return super().do_POST()
            hook, emulator.before_next_upload = emulator.before_next_upload, None
            if hook is not None:
                hook()
            query = parse_qs(url.query)
            with emulator.uploads:
                expected = query.get("ifGenerationMatch", [None])[0]
                if expected is not None:
                    try:
                        generation = self.storage.get_file_obj(url.path.split("/")[5], query["name"][0])["generation"]
                    except NotFound:
                        generation = "0"
                    if generation != expected:
                        return self.precondition_failed()
                return super().do_POST()

        def do_GET(self) -> None:
            emulator.requests.append(f"GET {self.path}")
            super().do_GET()

        def precondition_failed(self) -> None:
            _answer_gcs_error(self, 412, "At least one of the pre-conditions you specified did not hold.", "conditionNotMet")

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            # gcsfs's info() drops the listing it asked for beside the object once the object answers.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    store = Storage(use_memory_fs=True)
    create_bucket(emulator.bucket, store)
    server = Server(("127.0.0.1", 0), functools.partial(WithPreconditions, store))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    emulator.endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        yield emulator
    finally:
        server.shutdown()
        server.server_close()


def test_write_read_find_remove_round_trip(root: tuple[str, dict]) -> None:
    url, options = root
    storage.atomic_write(storage.join(url, "a", "b.bin"), b"one", options)
    storage.atomic_write(storage.join(url, "c.bin"), b"two", options)
    storage.atomic_write(storage.join(url, "c.bin"), b"three", options)

    assert storage.read_bytes(storage.join(url, "a", "b.bin"), options) == b"one"
    assert storage.read_bytes(storage.join(url, "c.bin"), options) == b"three"
    assert storage.find(url, options) == ["a/b.bin", "c.bin"]

    storage.remove(storage.join(url, "c.bin"), options)
    storage.remove(storage.join(url, "c.bin"), options)  # already gone: no error
    assert not storage.exists(storage.join(url, "c.bin"), options)
    assert storage.find(url, options) == ["a/b.bin"]


def test_missing_things(root: tuple[str, dict]) -> None:
    url, options = root
    assert storage.find(storage.join(url, "nowhere"), options) == []
    assert not storage.exists(storage.join(url, "nothing.bin"), options)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(url, "nothing.bin"), options)


def test_local_write_that_fails_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch) -> None:
    target = tmp_path / "pointer.json"
    storage.atomic_write(str(target), b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        storage.atomic_write(str(target), b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pointer.json"]


@pytest.mark.parametrize("name", ["a" * 250 + ".csv", "é" * 125 + ".csv"], ids=["ascii", "two-byte"])
def test_a_file_name_near_the_limit_is_written_whole(tmp_path, name: str) -> None:
    # 254 bytes is a valid name on ext4/XFS/btrfs; its staging file must fit too.
    target = tmp_path / name
    storage.atomic_write(str(target), b"rows")
    storage.atomic_write(str(target), b"rows again")
    assert target.read_bytes() == b"rows again"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_shortened_temporary_names_stay_apart_and_within_the_limit() -> None:
    first, second = "x" * 250 + "-1.parquet", "x" * 250 + "-2.parquet"
    names = {storage.temporary_name(name, "0123456789ab") for name in (first, second)}
    assert len(names) == 2
    assert all(len(name.encode()) <= 255 and name.startswith(".xxx") for name in names)
    assert storage.temporary_name("day.parquet", "ab12") == ".day.parquet.ab12.tmp"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("gs://bucket/key", r"Access to gs://bucket/key needs .*'gcsfs'.*pip install -c constraints.txt -e '\.\[gcs\]'"),
        ("s3://bucket/key", r"pip install -c constraints.txt -e '\.\[s3\]' in the anomaly-pipelines repository"),
    ],
)
def test_a_missing_file_system_package_gives_the_install_command(monkeypatch, url: str, says: str) -> None:
    def not_installed(url: str, **options: object) -> None:
        raise ImportError("Please install the package to access this store")

    monkeypatch.setattr(storage.fsspec.core, "url_to_fs", not_installed)
    with pytest.raises(MissingDependencyError, match=says):
        storage.filesystem(url)


def test_join_strips_a_trailing_slash() -> None:
    assert storage.join("s3://bucket/root/", "job=a", "part-0.parquet") == "s3://bucket/root/job=a/part-0.parquet"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_local_files_and_folders_get_the_usual_permissions(tmp_path, umask: int) -> None:
    # As other tools create them: 0o666 (folders 0o777) less the umask, not tempfile's 0o600.
    source = tmp_path / "source.bin"
    source.write_bytes(b"data")
    previous = os.umask(umask)
    try:
        storage.atomic_write(str(tmp_path / "new" / "written.json"), b"{}")
        storage.atomic_copy(str(source), str(tmp_path / "new" / "copied.bin"))
        storage.atomic_write(str(tmp_path / "new" / "written.json"), b"[]")  # replacing keeps them
    finally:
        os.umask(previous)

    def mode(name: str) -> int:
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("new") == 0o777 & ~umask
    assert mode("new/written.json") == mode("new/copied.bin") == 0o666 & ~umask
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["copied.bin", "written.json"]


def test_s3_reads_see_what_another_process_wrote_after_a_listing(s3_bucket: tuple[str, dict]) -> None:
    import boto3

    bucket, options = s3_bucket
    url = f"s3://{bucket}/store"
    storage.atomic_write(storage.join(url, "old.json"), b"old", options)
    assert storage.find(url, options) == ["old.json"]  # s3fs caches this listing
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="store/new.json", Body=b"new")
    client.delete_object(Bucket=bucket, Key="store/old.json")

    assert storage.exists(storage.join(url, "new.json"), options)
    assert storage.read_bytes(storage.join(url, "new.json"), options) == b"new"
    assert not storage.exists(storage.join(url, "old.json"), options)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(url, "old.json"), options)


def test_an_s3_read_is_not_answered_from_a_listing_that_refilled_the_cache_after_the_file_was_written(
    s3_bucket: tuple[str, dict], monkeypatch
) -> None:
    # Another thread's listing, started before the file was written, can land in s3fs's cache
    # between read_bytes' invalidation and its read: here the stale listing is put in place and
    # the invalidation does nothing, which is that moment. The read said the file was missing.
    bucket, options = s3_bucket
    url = f"s3://{bucket}/store"
    storage.atomic_write(storage.join(url, "old.json"), b"old", options)
    fs, path = storage.filesystem(url, options)
    stale = fs.ls(path, detail=True)
    storage.atomic_write(storage.join(url, "new.json"), b"new", options)
    fs.dircache[path] = stale
    monkeypatch.setattr(type(fs), "invalidate_cache", lambda self, path=None: None)

    assert storage.read_bytes(storage.join(url, "new.json"), options) == b"new"


def test_replace_if_unchanged_refuses_a_file_written_created_or_removed_since_it_was_read(root: tuple[str, dict]) -> None:
    url, options = root
    target = storage.join(url, "pointer.json")
    missing = storage.read_snapshot(target, options)
    assert missing.data is None
    assert storage.replace_if_unchanged(target, b"one", missing, options)  # created: there was none
    assert not storage.replace_if_unchanged(target, b"two", missing, options)  # created since
    assert storage.read_bytes(target, options) == b"one"

    one = storage.read_snapshot(target, options)
    assert one.data == b"one"
    assert storage.replace_if_unchanged(target, b"three", one, options)
    assert not storage.replace_if_unchanged(target, b"four", one, options)  # written since
    assert storage.read_bytes(target, options) == b"three"

    three = storage.read_snapshot(target, options)
    storage.remove(target, options)
    assert not storage.replace_if_unchanged(target, b"five", three, options)  # removed since
    assert not storage.exists(target, options)


def test_replace_if_unchanged_lets_one_of_two_racing_writers_win(root: tuple[str, dict]) -> None:
    import threading

    url, options = root
    target = storage.join(url, "pointer.json")
    storage.atomic_write(target, b"old", options)
    both_read = threading.Barrier(2, timeout=30)
    won: dict[bytes, bool] = {}

    def write(data: bytes) -> None:
        seen = storage.read_snapshot(target, options)
        both_read.wait()  # both read "old" before either writes
        won[data] = storage.replace_if_unchanged(target, data, seen, options)

    threads = [threading.Thread(target=write, args=(data,)) for data in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(won.values()) == [False, True]
    [winner] = [data for data, ok in won.items() if ok]
    assert storage.read_bytes(target, options) == winner


def test_gcs_replace_if_unchanged_is_one_upload_under_the_generation_read(plain_gcsfs, gcs_emulator: GcsEmulator, tmp_path) -> None:
    # gs:// was compared, then written (a GET, then an unconditional upload): a write between the two was lost.
    # The series folder is percent-encoded; "+" and " " mean different things in a query string.
    url = f"gs://{gcs_emulator.bucket}/{tmp_path.name}/host%3Da é+b/champion.json"
    options = gcs_emulator.options
    storage.atomic_write(url, b"one", options)
    fs, path = storage.filesystem(url, options)
    generation = fs.info(path)["generation"]

    seen = storage.read_snapshot(url, options)
    assert (seen.data, seen.generation) == (b"one", generation)
    del gcs_emulator.requests[:]
    assert storage.replace_if_unchanged(url, b"two", seen, options)
    [upload] = gcs_emulator.requests
    assert upload.startswith(f"POST /upload/storage/v1/b/{gcs_emulator.bucket}/o?")
    assert f"&ifGenerationMatch={generation}" in upload
    assert storage.read_bytes(url, options) == b"two"  # the upload named the object read
    del gcs_emulator.requests[:]
    # Created between read_snapshot's two reads (no generation, then content): not there when looked at.
    assert not storage.replace_if_unchanged(url, b"three", storage.Snapshot(b"two"), options)
    assert gcs_emulator.requests == []

    missing = storage.read_snapshot(url + ".new", options)
    assert missing == storage.Snapshot(None)
    del gcs_emulator.requests[:]
    assert storage.replace_if_unchanged(url + ".new", b"first", missing, options)
    [upload] = gcs_emulator.requests
    assert "&ifGenerationMatch=0" in upload


@pytest.mark.parametrize(
    ("before", "meanwhile", "after"),
    [(b"old", b"other", b"other"), (None, b"other", b"other"), (b"old", None, None)],
    ids=["written", "created", "removed"],
)
def test_gcs_replace_if_unchanged_keeps_a_write_that_lands_just_before_its_own(
    plain_gcsfs, gcs_emulator: GcsEmulator, tmp_path, before: bytes | None, meanwhile: bytes | None, after: bytes | None
) -> None:
    # Two runs promoting on a gs:// registry could both win: the other run's champion was overwritten unseen.
    url = f"gs://{gcs_emulator.bucket}/{tmp_path.name}/champion.json"
    options = gcs_emulator.options
    if before is not None:
        storage.atomic_write(url, before, options)
    seen = storage.read_snapshot(url, options)

    def other_writer() -> None:
        if meanwhile is None:
            storage.remove(url, options)
        else:
            storage.atomic_write(url, meanwhile, options)

    gcs_emulator.before_next_upload = other_writer
    assert not storage.replace_if_unchanged(url, b"mine", seen, options)
    assert gcs_emulator.before_next_upload is None  # the other write did land first
    assert (storage.read_bytes(url, options) if storage.exists(url, options) else None) == after


def test_an_s3_store_without_etags_is_compared_then_written(s3_bucket: tuple[str, dict]) -> None:
    # Some S3-compatible stores list no ETag; If-None-Match on the existing key failed at every try.
    bucket, options = s3_bucket
    url = f"s3://{bucket}/pointer.json"
    storage.atomic_write(url, b"old", options)
    assert not storage.replace_if_unchanged(url, b"new", storage.Snapshot(b"stale", None), options)
    assert storage.read_bytes(url, options) == b"old"
    assert storage.replace_if_unchanged(url, b"new", storage.Snapshot(b"old", None), options)
    assert storage.read_bytes(url, options) == b"new"



def test_find_skips_the_folder_markers_of_s3_consoles(s3_bucket: tuple[str, dict]) -> None:
    import boto3

    bucket, options = s3_bucket
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1")
    for key in ("store/", "store/date=2024-01-05/"):  # what "Create folder" in the AWS console writes
        client.put_object(Bucket=bucket, Key=key, Body=b"")
    storage.atomic_write(f"s3://{bucket}/store/date=2024-01-05/part-0.parquet", b"x", options)

    assert storage.find(f"s3://{bucket}/store", options) == ["date=2024-01-05/part-0.parquet"]


EVERY_CALL = pytest.mark.parametrize(
    "call",
    [
        lambda url, options: storage.read_bytes(url, options),
        lambda url, options: storage.atomic_write(url, b"one", options),
        lambda url, options: storage.exists(url, options),
        lambda url, options: storage.find(url, options),
        lambda url, options: storage.remove(url, options),
        lambda url, options: storage.read_snapshot(url, options),
        lambda url, options: storage.replace_if_unchanged(url, b"one", storage.Snapshot(None), options),
        lambda url, options: storage.move(url + ".tmp", url, options),
    ],
    ids=["read_bytes", "atomic_write", "exists", "find", "remove", "read_snapshot", "replace_if_unchanged", "move"],
)


@EVERY_CALL
def test_missing_s3_credentials_say_where_to_set_them(s3_without_credentials: tuple[str, dict], call) -> None:
    bucket, no_keys = s3_without_credentials
    url = f"s3://{bucket}/store/m.bin"

    with pytest.raises(StorageError, match=rf"^no credentials to reach {url} \(.*\)\. Give this worker credentials \(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE") as caught:
        call(url, no_keys)
    # Neither bad data nor bad configuration: Airflow retries it, as credentials may appear.
    assert not isinstance(caught.value, (ConfigError, DataValidationError, ModelError))


@EVERY_CALL
def test_an_unreachable_s3_endpoint_is_a_storage_error_naming_the_url(unreachable_s3_options: dict, call) -> None:
    options = unreachable_s3_options
    url = "s3://bucket/store/m.bin"

    with pytest.raises(StorageError, match=rf"^cannot reach {url} \(.*Could not connect.*\)\. Check that the store is up and that `endpoint_url`"):
        call(url, options)


@pytest.fixture
def plain_gcsfs(monkeypatch) -> None:
    """gs:// through gcsfs's plain file system, with no pause between its retries. Its default
    (GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, read once at import) first asks a gRPC API for the bucket
    layout, retrying for a minute where none answers; the retries' pauses add half a minute more."""
    import importlib
    import types

    import gcsfs.core
    import gcsfs.retry

    fsspec_registry = importlib.import_module("fsspec.registry")  # the module; fsspec.registry is a mapping

    async def no_pause(seconds: float) -> None:
        return None

    monkeypatch.setitem(fsspec_registry._registry, "gs", gcsfs.core.GCSFileSystem)
    monkeypatch.setattr(gcsfs.retry, "asyncio", types.SimpleNamespace(sleep=no_pause))


@pytest.fixture(scope="module")
def gcs_refusing_anonymous_callers() -> Iterator[str]:
    """A GCS JSON API endpoint answering every request as GCS answers an anonymous one to a private bucket."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refusing(BaseHTTPRequestHandler):
        def answer(self) -> None:
            message = "Anonymous caller does not have storage.objects.get access to the Google Cloud Storage object."
            _answer_gcs_error(self, 401, message, "required")

        do_GET = do_POST = do_PUT = do_DELETE = answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


GCS_HINT = r"Set `token` to the path of a service-account key file .*GOOGLE_APPLICATION_CREDENTIALS"


@EVERY_CALL
def test_missing_google_credentials_say_where_to_set_them(monkeypatch, tmp_path, call) -> None:
    # google-auth's DefaultCredentialsError came through as it was, a traceback.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server
    url = "gs://bucket/store/m.bin"

    with pytest.raises(StorageError, match=rf"^no credentials to reach {url} \(Your default credentials were not found.*\)\. {GCS_HINT}"):
        call(url, {"token": "google_default"})


@EVERY_CALL
def test_gcs_refusing_an_anonymous_caller_says_where_to_set_credentials(plain_gcsfs, gcs_refusing_anonymous_callers, call) -> None:
    # gcsfs falls back to anonymous requests when it finds no credentials; GCS answers them 401,
    # which came through as gcsfs's HttpError, a traceback.
    url = "gs://bucket/store/m.bin"
    options = {"endpoint_url": gcs_refusing_anonymous_callers, "token": "anon", "skip_instance_cache": True}

    with pytest.raises(StorageError, match=rf"^no credentials to reach {url} \(Anonymous caller .*\)\. {GCS_HINT}"):
        call(url, options)


@EVERY_CALL
def test_an_unreachable_gcs_endpoint_is_a_storage_error_naming_the_url(plain_gcsfs, unreachable_s3_options: dict, call) -> None:
    # aiohttp's ClientConnectorError came through as it was, a traceback.
    url = "gs://bucket/store/m.bin"
    options = {"endpoint_url": unreachable_s3_options["endpoint_url"], "token": "anon", "skip_instance_cache": True}

    with pytest.raises(StorageError, match=rf"^cannot reach {url} \(Cannot connect to host.*\)\. Check that the store is up and that `endpoint_url`"):
        call(url, options)


def test_a_local_write_that_cannot_start_names_the_file_asked_for() -> None:
    # /proc takes no new files: the error named the hidden staging file ('/proc/.out.parquet.5dd918e6.tmp').
    with pytest.raises(FileNotFoundError) as info:
        storage.atomic_write("/proc/out.parquet", b"scores")
    assert info.value.filename == "/proc/out.parquet" and ".tmp" not in str(info.value)


@pytest.mark.parametrize("where", ["s3", "gs"])
def test_listing_in_a_missing_bucket_names_the_url(request: pytest.FixtureRequest, where: str) -> None:
    # s3fs said only "The specified bucket does not exist", gcsfs "b/nope/o": neither named the URL.
    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        url = f"s3://{bucket}-missing/outputs/job=sales"
    else:
        request.getfixturevalue("plain_gcsfs")
        options = request.getfixturevalue("gcs_emulator").options
        url = "gs://missing-bucket/outputs/job=sales"

    with pytest.raises(FileNotFoundError, match=r"bucket that does not exist .*check the bucket name") as caught:
        storage.find(url, options)
    assert caught.value.filename == url


def test_a_copy_to_memory_is_never_seen_half_written(tmp_path, monkeypatch) -> None:
    from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

    url = f"memory://{tmp_path.name}/big.bin"
    storage.atomic_write(url, b"old")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 2**20))
    monkeypatch.setattr(MemoryFileSystem, "blocksize", 2**20)
    seen, write = [], MemoryFile.write

    def recording(self, data) -> int:  # what a reader would read while the copy is under way
        seen.append(storage.read_bytes(url))
        return write(self, data)

    monkeypatch.setattr(MemoryFile, "write", recording)
    try:
        storage.atomic_copy(str(source), url)
        assert storage.read_bytes(url) == source.read_bytes()
        assert all(content in (b"old", source.read_bytes()) for content in seen), sorted({len(c) for c in seen})
    finally:
        storage.remove(url)


@pytest.mark.parametrize(
    "call",
    [
        lambda url, options: storage.atomic_write(url, b"new", options),
        lambda url, options: storage.atomic_copy(__file__, url, options),
        lambda url, options: storage.move(url + ".tmp", url, options),
        lambda url, options: storage.replace_if_unchanged(url, b"new", storage.Snapshot(None), options),
    ],
    ids=["atomic_write", "atomic_copy", "move", "replace_if_unchanged"],
)
def test_a_store_that_writes_files_in_place_is_refused_naming_the_url(tmp_path, call) -> None:
    # fsspec's dir:// (a folder as a file system) writes into the target as bytes arrive, as do
    # SFTP, FTP, SMB, WebDAV...: a failure half-way would leave a half-written file.
    options = {"path": str(tmp_path), "target_protocol": "file"}
    (tmp_path / "out.bin.tmp").write_bytes(b"staged")
    with pytest.raises(ConfigError, match=r"^cannot write dir://out\.bin: the dir file system .*half-written.*local path, s3:// or gs://"):
        call("dir://out.bin", options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin.tmp"]
