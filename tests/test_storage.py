"""Object storage over pyarrow.fs, on local files and the real S3 server."""

from __future__ import annotations

import pytest

from deeptrain.errors import DeeptrainError, InvalidInput, NotFound, StorageError
from deeptrain.storage import TMP_PREFIX, Storage


@pytest.fixture
def storage(settings) -> Storage:
    return Storage(settings.storage_uri)


def test_put_get_list_delete(storage):
    storage.put_bytes("a/b/one.bin", b"1")
    storage.put_bytes("a/two.bin", b"22")
    assert storage.get_bytes("a/b/one.bin") == b"1"
    assert list(storage.list("a")) == ["a/b/one.bin", "a/two.bin"]
    assert storage.exists("a/two.bin") and not storage.exists("a/none.bin")
    storage.delete("a/two.bin")
    assert list(storage.list("a")) == ["a/b/one.bin"]
    storage.delete_prefix("a")
    assert list(storage.list("a")) == []


def test_missing_object_is_not_found(storage):
    with pytest.raises(NotFound, match="no object 'nope/x.bin'"):
        storage.get_bytes("nope/x.bin")


@pytest.mark.parametrize("key", ["../escape", "/abs/key", "a/../../b", "a//b", "a/./b", "a\\b", ""])
def test_keys_cannot_escape_the_root(storage, key):
    with pytest.raises(InvalidInput, match="invalid storage key"):
        storage.put_bytes(key, b"x")


def test_failed_write_publishes_nothing(storage):
    with pytest.raises(RuntimeError):
        with storage.writer("w/obj.bin") as out:
            out.write(b"half")
            raise RuntimeError("crash in the middle of a write")
    assert not storage.exists("w/obj.bin")
    assert list(storage.list(TMP_PREFIX)) == []


@pytest.mark.parametrize("fault", ["write", "rename"])
def test_a_local_write_that_fails_leaves_nothing_and_names_the_key_not_the_root(tmp_path, monkeypatch, fault):
    import os

    storage = Storage(str(tmp_path / "root"))
    storage.put_bytes("kept.bin", b"kept")

    def full_disk(*args):  # a full disk is a fault this test cannot cause
        raise OSError(28, "No space left on device", str(tmp_path / "root" / TMP_PREFIX / "obj.bin"))

    monkeypatch.setattr(os, {"write": "write", "rename": "replace"}[fault], full_disk)
    with pytest.raises(StorageError, match="storage failed on 'w/obj.bin'") as failed:
        storage.put_immutable("w/obj.bin", b"x" * 1000)
    monkeypatch.undo()
    assert str(tmp_path) not in str(failed.value)
    root = tmp_path / "root"
    assert [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()] == ["kept.bin"]


def test_overwrite_is_atomic_replace(storage):
    storage.put_bytes("k.bin", b"old")
    storage.put_bytes("k.bin", b"new")
    assert storage.get_bytes("k.bin") == b"new"
    assert list(storage.list(TMP_PREFIX)) == []


def test_immutable_object_is_written_whole_at_its_key(storage):
    storage.put_immutable("in/ab/abcd.png", b"bytes")
    storage.put_immutable("in/ab/abcd.png", b"bytes")  # the same content again: harmless
    assert storage.get_bytes("in/ab/abcd.png") == b"bytes"
    assert list(storage.list("in")) == ["in/ab/abcd.png"]
    assert list(storage.list(TMP_PREFIX)) == []
    with pytest.raises(InvalidInput, match="invalid storage key"):
        storage.put_immutable("../escape.png", b"x")


def test_immutable_write_failure_names_the_key_not_the_root(s3_env, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    denied = Storage(f"s3://{s3_bucket}/secret-root")
    with pytest.raises(StorageError, match="storage failed on 'k/x.png'") as failed:
        denied.put_immutable("k/x.png", b"x")
    assert s3_bucket not in str(failed.value) and "secret-root" not in str(failed.value)


def test_uri_round_trip(storage):
    storage.put_bytes("x/y.bin", b"y")
    uri = storage.uri_for("x/y.bin")
    assert storage.key_for_uri(uri) == "x/y.bin"
    assert storage.key_for_uri("s3://elsewhere/x/y.bin") is None
    assert storage.key_for_uri(storage.uri + "/../x/y.bin") is None
    assert storage.key_for_uri(storage.uri + "x/y.bin") is None  # a sibling root sharing the prefix


def test_errors_never_name_the_storage_root(storage):
    with pytest.raises(NotFound) as missing:
        storage.get_bytes("no/such.bin")
    storage.put_bytes("d/inner.bin", b"x")
    with pytest.raises(DeeptrainError) as directory:  # a "directory" (a prefix on S3)
        storage.get_bytes("d")
    for exc in (missing.value, directory.value):
        assert storage.root not in str(exc) and storage.uri not in str(exc)


def test_storage_is_picklable(storage):
    import pickle

    storage.put_bytes("p.bin", b"p")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.get_bytes("p.bin") == b"p"


def test_unsupported_uri():
    with pytest.raises(InvalidInput, match="unsupported storage URI"):
        Storage("ftp://host/x")
