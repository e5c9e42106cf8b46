"""storage: one place for "is it local, where is the local copy, write atomically"."""

from __future__ import annotations

import os

import fsspec
import pytest

from itool_ray import storage


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


def test_local_paths_are_their_own_copy(tmp_path):
    (tmp_path / "m").mkdir()
    assert storage.local_copy(str(tmp_path / "m")) == str(tmp_path / "m")
    assert storage.local_copy(f"file://{tmp_path}/m") == str(tmp_path / "m")
    assert storage.local_copy("org/model-id") == "org/model-id"  # a hub id: transformers resolves it


def test_remote_directory_is_fetched_once_per_content(memfs, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    memfs.pipe("/runs/r/ckpt/config.json", b"{}")
    memfs.pipe("/runs/r/ckpt/sub/w.bin", b"1234")
    first = storage.local_copy("memory://runs/r/ckpt")
    assert first.startswith(str(tmp_path / "cache"))
    assert open(os.path.join(first, "sub", "w.bin"), "rb").read() == b"1234"
    assert storage.local_copy("memory://runs/r/ckpt") == first  # cached: same content, same copy
    memfs.pipe("/runs/r/ckpt/sub/w.bin", b"56789")  # the stage was redone: new weights
    second = storage.local_copy("memory://runs/r/ckpt")
    assert second != first
    assert open(os.path.join(second, "sub", "w.bin"), "rb").read() == b"56789"
    left = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".") and p.is_dir()]
    assert not left, "a temp dir was left"


def test_remote_file_is_fetched(memfs, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    memfs.pipe("/runs/r/data.jsonl", b"x\n")
    got = storage.local_copy("memory://runs/r/data.jsonl")
    assert open(got, "rb").read() == b"x\n"


def test_write_atomic_local_leaves_no_temp_and_remote_is_one_put(memfs, tmp_path):
    target = tmp_path / "a" / "b.json"
    storage.write_atomic(str(target), b"hello")
    assert target.read_bytes() == b"hello"
    assert os.listdir(target.parent) == ["b.json"]
    storage.write_atomic("memory://runs/x/b.json", lambda f: f.write(b"hi"))
    assert storage.read_bytes("memory://runs/x/b.json") == b"hi"


def test_write_atomic_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "b.json"
    target.write_bytes(b"old")

    def broken(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        storage.write_atomic(str(target), broken)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["b.json"]


def test_publish_and_upload_dir(memfs, tmp_path):
    src = tmp_path / "export"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "t.txt").write_text("t")
    storage.upload_dir(str(src), "memory://runs/x/ckpt")
    assert storage.read_bytes("memory://runs/x/ckpt/sub/t.txt") == b"t"
    storage.publish_dir(str(src), str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "t.txt").read_text() == "t"
    assert not src.exists() or not any(src.iterdir())
    storage.remove("memory://runs/x/ckpt")
    assert not storage.exists("memory://runs/x/ckpt/config.json")


def test_an_upload_that_fails_takes_back_what_it_placed(memfs, tmp_path, monkeypatch):
    src = tmp_path / "base"
    src.mkdir()
    for name in ("a.json", "b.json", "c.bin"):
        (src / name).write_text(name)
    memfs.pipe_file("runs/y/model/base/keep.txt", b"k")  # there before: kept
    put = memfs.put_file

    def put_until_full(lpath, rpath, **kw):
        if rpath.endswith("c.bin"):
            raise OSError(28, "No space left on device")
        return put(lpath, rpath, **kw)

    monkeypatch.setattr(memfs, "put_file", put_until_full)
    with pytest.raises(storage.StorageError) as e:
        storage.upload_dir(str(src), "memory://runs/y/model/base")
    assert str(e.value) == "cannot write memory://runs/y/model/base: No space left on device"
    assert sorted(p.rsplit("/", 1)[1] for p in memfs.find("runs/y")) == ["keep.txt"]
    assert sorted(p.name for p in src.iterdir()) == ["a.json", "b.json", "c.bin"]  # the source is kept


def test_a_protocol_without_its_driver_names_the_cloud_extra():
    with pytest.raises(storage.StorageError) as e:
        storage.filesystem("abfs://container/runs")
    assert "itool-ray[cloud]" in str(e.value)
    assert "\n" not in str(e.value)


def test_s3_driver_is_installed_with_the_cloud_extra():
    fs, path = storage.filesystem("s3://bucket/runs")
    assert path == "bucket/runs"
    assert "s3" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def test_s3_round_trip_through_a_real_s3_server(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    root = s3_server() + "/runs"
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "config.json").write_text('{"a": 1}')
    storage.upload_dir(str(src), root + "/ckpt")
    storage.write_atomic(root + "/m.json", b"{}")
    assert storage.read_bytes(root + "/m.json") == b"{}"
    got = storage.local_copy(root + "/ckpt")
    assert open(os.path.join(got, "config.json")).read() == '{"a": 1}'
    fs, path = storage.pyarrow_filesystem(root + "/ckpt")
    assert fs.get_file_info(path + "/config.json").size == 8


def test_concurrent_fetches_of_one_checkpoint_download_it_once(memfs, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    memfs.pipe("/runs/r/ckpt/model.bin", b"w" * 1000)
    calls = []
    real = storage._fetch
    monkeypatch.setattr(storage, "_fetch", lambda uri, final: (calls.append(uri), real(uri, final)))
    with ThreadPoolExecutor(8) as pool:  # 8 ranks (or replicas) of one node at once
        got = set(pool.map(lambda _: storage.local_copy("memory://runs/r/ckpt"), range(8)))
    assert len(got) == 1 and len(calls) == 1
