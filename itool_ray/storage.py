"""Where files live: a local path, a shared filesystem, or any fsspec URI (``s3://``, ``gs://`` …).

    fs, path = filesystem("s3://bucket/runs/x")      # an fsspec filesystem; a missing driver names the extra
    write_atomic("s3://bucket/runs/x/a.json", data)   # a reader never sees a partial file
    local = local_copy("s3://bucket/runs/x/iter_1/ckpt")  # a node-local directory (cached by content)
    upload_dir("/tmp/export", "s3://bucket/runs/x/iter_1/ckpt")

Nothing that runs on another node may read the driver's disk: a stage that needs a dataset, a base model
or a checkpoint calls ``local_copy`` on the node where it runs. A local path is its own copy (one node, or
a shared filesystem); a remote URI is fetched once into the node-local cache (``ITOOL_CACHE_DIR``,
default ``~/.cache/itool-ray``) under a key made of the URI and the listing (names, sizes, ETags or
modification times), so a rewritten checkpoint is fetched again and an unchanged one never.

Credentials are the environment's (an instance profile, ``AWS_*`` variables, a gcloud login): this module
never handles secrets. Object-store drivers are the ``cloud`` extra (``pip install 'itool-ray[cloud]'``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fsspec

CACHE_ENV = "ITOOL_CACHE_DIR"
CLOUD_EXTRA = "pip install 'itool-ray[cloud]'"


class StorageError(OSError):
    """A location cannot be used (no driver for its protocol, unreachable, unwritable)."""


def is_local(uri: str) -> bool:
    """True for a plain path or a ``file://`` URI (a local disk or a shared filesystem mount)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (``file://`` stripped, ``~`` expanded)."""
    return os.path.expanduser(uri[len("file://") :] if uri.startswith("file://") else uri)


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for ``uri``; a protocol whose driver is missing is one line."""
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as e:
        protocol = uri.split("://", 1)[0]
        raise StorageError(
            f"{uri}: the {protocol}:// filesystem needs a driver that is not installed; "
            f"install the cloud extra: {CLOUD_EXTRA} ({str(e).splitlines()[0]})"
        ) from None
    except ValueError as e:  # an unknown protocol
        raise StorageError(f"{uri}: {e}") from None


def pyarrow_filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for Ray Train's ``storage_path`` and Ray Data's readers: fsspec's
    filesystem wrapped, so any protocol fsspec knows works with the same credentials."""
    if is_local(uri):
        return None, local_path(uri)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = filesystem(uri)
    return PyFileSystem(FSSpecHandler(fs)), path


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


# ------------------------------------------------------------------------------------------------ writes
def write_local_atomic(target: str, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(f)`` into ``<target>.tmp-<pid>``, fsync, rename over ``target``: a reader never sees a partial
    file, and a failure (a full disk, an interrupt) leaves no temporary file behind. OSErrors propagate."""
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(uri: str, data: bytes | Callable[[IO[bytes]], Any]) -> None:
    """Write a whole file at ``uri``: locally a temporary name then a rename, on an object store one put
    (an object appears whole or not at all). ``data`` is bytes or a ``write(f)`` callable."""
    if is_local(uri):
        write_local_atomic(local_path(uri), data if callable(data) else (lambda f: f.write(data)))
        return
    if callable(data):
        buf = io.BytesIO()
        data(buf)
        data = buf.getvalue()
    fs, path = filesystem(uri)
    fs.pipe_file(path, data)


def read_bytes(uri: str) -> bytes:
    if is_local(uri):
        return Path(local_path(uri)).read_bytes()
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def exists(uri: str) -> bool:
    if is_local(uri):
        return os.path.exists(local_path(uri))
    fs, path = filesystem(uri)
    return fs.exists(path)


def remove(uri: str) -> None:
    """Remove a file or a directory tree; a missing one is fine."""
    if is_local(uri):
        p = local_path(uri)
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        return
    fs, path = filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def _copy_into(src: Path, f: IO[bytes]) -> None:
    with open(src, "rb") as fh:
        shutil.copyfileobj(fh, f)


def upload_dir(local_dir: str, uri: str) -> None:
    """Copy the files of ``local_dir`` into ``uri`` (files already there with other names are kept).

    A failure is a StorageError naming ``uri`` and takes back the files this call had already placed."""
    _place_files(local_dir, uri, move=False)


def publish_dir(local_dir: str, uri: str) -> None:
    """Move a finished local directory's files into ``uri`` (other files already there are kept): each file
    renamed into place when ``uri`` is on the same local filesystem, else copied under a temporary name and
    renamed, or uploaded when remote. The source is consumed.

    A failure (a full disk) is a StorageError naming ``uri`` and takes back the files this call had already
    placed, so a reader never finds half a model."""
    _place_files(local_dir, uri, move=True)
    shutil.rmtree(local_dir, ignore_errors=True)


def _place_files(local_dir: str, uri: str, *, move: bool) -> None:
    placed: list[str] = []
    try:
        if is_local(uri):
            target = Path(local_path(uri))
            for src in sorted(Path(local_dir).rglob("*")):
                if src.is_file():
                    dst = target / src.relative_to(local_dir)
                    placed.append(str(dst))
                    if not (move and _rename(src, dst)):
                        write_local_atomic(str(dst), lambda f, src=src: _copy_into(src, f))
        else:
            fs, path = filesystem(uri)
            for src in sorted(Path(local_dir).rglob("*")):
                if src.is_file():
                    placed.append(f"{path}/{src.relative_to(local_dir).as_posix()}")
                    fs.put_file(str(src), placed[-1])
    except OSError as e:
        _take_back(uri, placed)
        raise StorageError(f"cannot write {uri}: {e.strerror or e}") from None


def _rename(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst``; False when they lie on different filesystems (then it is to be copied)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        return False
    return True


def _take_back(uri: str, placed: list[str]) -> None:
    for p in placed:
        with contextlib.suppress(OSError):
            if is_local(uri):
                os.unlink(p)
            else:
                filesystem(uri)[0].rm_file(p)


# ------------------------------------------------------------------------------------- node-local copies
def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "itool-ray"))


def listing(uri: str) -> list[tuple[str, int, str]]:
    """(relative name, size, ETag or modification time) of every file under ``uri``, sorted."""
    if is_local(uri):
        root = Path(local_path(uri))
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        return [
            (
                p.relative_to(root).as_posix() if p != root else p.name,
                p.stat().st_size,
                str(p.stat().st_mtime_ns),
            )
            for p in files
        ]
    fs, path = filesystem(uri)
    infos = fs.find(path, detail=True) if fs.isdir(path) else {path: fs.info(path)}
    out = []
    for name, info in sorted(infos.items()):
        rel = name[len(path) :].lstrip("/") or name.rsplit("/", 1)[-1]
        stamp = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
        out.append((rel, int(info.get("size") or 0), str(stamp)))
    return out


def content_key(uri: str) -> str:
    """A key that changes when anything under ``uri`` changes (its listing, not its bytes: cheap at 8B)."""
    return hashlib.sha256(json.dumps([uri, listing(uri)]).encode()).hexdigest()[:24]


def local_copy(uri: str) -> str:
    """A local path holding what ``uri`` holds: the path itself when local (including a hub id, which
    transformers resolves), else a copy in this node's cache, fetched once per content and node: processes
    that ask at once (8 replicas or training ranks of one node) wait for the one that fetches."""
    if is_local(uri):
        return local_path(uri)
    import fcntl

    key = content_key(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    final = cache_dir() / f"{key}-{name}"
    if final.exists():
        return str(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not final.exists():
            _fetch(uri, final)
    return str(final)


def _fetch(uri: str, final: Path) -> None:
    key, name = final.name.split("-", 1)
    fs, path = filesystem(uri)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(tmp) + "/", recursive=True)
            src = tmp
        else:
            src = tmp / name
            fs.get_file(path, str(src))
        os.rename(src, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
