"""Small helpers over fsspec so that every path may be local or a URL such as ``s3://bucket/key``.

``storage_options`` are passed to the fsspec file system (for s3fs: ``endpoint_url``, ``key``...).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from typing import Any, BinaryIO

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from pipelines.errors import MissingDependencyError


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The file system holding ``url`` and the path of ``url`` inside it."""
    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        if fsspec.utils.get_protocol(url) in ("s3", "s3a"):
            raise MissingDependencyError("s3fs", "s3", f"Access to {url}") from exc
        raise


def join(url: str, *parts: str) -> str:
    """``url`` extended by path segments with ``/`` (valid for local paths and URLs alike)."""
    return "/".join([url.rstrip("/"), *parts])


def atomic_write(url: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` so that readers see the old content or the new one, never a partial file.

    Local folders are created as needed.
    """
    fs, path = filesystem(url, storage_options)
    if not isinstance(fs, LocalFileSystem):
        # Object stores only make an object visible once its upload completes.
        fs.pipe_file(path, data)
        return
    _replace_local(path, lambda handle: handle.write(data))


def atomic_copy(local_file: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Copy a local file to ``url`` with the same guarantee as :func:`atomic_write`, in constant memory."""
    fs, path = filesystem(url, storage_options)
    if not isinstance(fs, LocalFileSystem):
        fs.put_file(local_file, path)
        return
    with open(local_file, "rb") as source:
        _replace_local(path, lambda handle: shutil.copyfileobj(source, handle, 16 * 1024 * 1024))


def move(source: str, url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Move the file at ``source`` onto ``url`` on the same file system, replacing what is there.

    Readers see the old content or the new one: a rename locally (so ``source`` must be on the
    same file system, e.g. in the same folder), a server-side copy on object stores.
    """
    fs, path = filesystem(url, storage_options)
    _, source_path = filesystem(source, storage_options)
    if isinstance(fs, LocalFileSystem):
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


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """Content of the file at ``url``; raises ``FileNotFoundError`` when there is none."""
    fs, path = filesystem(url, storage_options)
    # s3fs answers from a listing cached by an earlier find(): a file written since by another
    # process would be missing, one deleted since would still be read from the listing.
    fs.invalidate_cache(path)
    return fs.cat_file(path)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    fs.invalidate_cache(path)  # as in read_bytes: not from a stale cached listing
    return fs.exists(path)


def remove(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete the file at ``url``; a missing file is not an error."""
    fs, path = filesystem(url, storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def find(url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths of all files below the folder ``url``, relative to it and sorted; none if it is missing."""
    fs, path = filesystem(url, storage_options)
    # Listings are cached by some file systems (s3fs); another process may have written since.
    fs.invalidate_cache(path)
    prefix = path.rstrip("/") + "/"
    return sorted(found[len(prefix) :] for found in fs.find(path) if found.startswith(prefix))
