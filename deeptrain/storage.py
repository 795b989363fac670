"""Object storage behind one root URI, through ``pyarrow.fs``.

``file:///abs/dir`` and ``s3://bucket/prefix`` are supported; S3 reads the standard AWS
variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``).

Keys are relative POSIX paths checked so that nothing escapes the root. A write goes to a
temporary key first and is then published with a move, so a reader (or a crash) never sees
half an object; except ``put_immutable`` on S3, for objects whose key names their content:
there a single PUT (atomic in S3) writes the object where it belongs. Error messages name keys, never the root: they reach
HTTP clients and CLI users, who are not told where the service keeps its data.
"""

from __future__ import annotations

import os
import posixpath
import threading
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping
from urllib.parse import urlparse

import pyarrow.fs as pafs

from deeptrain.errors import InvalidInput, NotFound, StorageError

TMP_PREFIX = ".tmp"
_COPY_CHUNK = 8 * 1024 * 1024


def check_key(key: str) -> str:
    """Refuse keys that are absolute, contain '..', backslashes or empty segments."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"invalid storage key {key!r}: empty")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or "\x00" in key or any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"invalid storage key {key!r}: must be a relative path without '.', '..' or empty parts")
    return key


S3_MAX_ATTEMPTS = 5


def s3_filesystem(env: Mapping[str, str] | None = None) -> pafs.S3FileSystem:
    """An S3 filesystem configured from the standard AWS variables."""
    env = os.environ if env is None else env
    kwargs: dict[str, object] = {
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        "connect_timeout": 10,
        "request_timeout": 60,
        # the AWS SDK's standard retry mode: throttling, 5xx and dropped connections retried with jittered backoff
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
    }
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if env.get("AWS_ACCESS_KEY_ID"):
        kwargs["access_key"] = env["AWS_ACCESS_KEY_ID"]
        kwargs["secret_key"] = env.get("AWS_SECRET_ACCESS_KEY", "")
        if env.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = env["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def s3_client(env: Mapping[str, str] | None = None, max_connections: int = 64):
    """A boto3 S3 client from the same AWS variables as ``s3_filesystem`` (and the same retry policy);
    thread-safe, with a connection pool wide enough for an import's upload threads."""
    import boto3  # imported here: a second or so of start-up that only S3 writes of immutable objects need
    from botocore.config import Config

    env = os.environ if env is None else env
    config = Config(connect_timeout=10, read_timeout=60, max_pool_connections=max_connections,
                    retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS})
    return boto3.session.Session().client(
        "s3", region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=env.get("AWS_SESSION_TOKEN") or None, config=config)


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a ``file://`` / ``s3://`` URI or a local path."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInput(f"invalid storage URI {uri!r}: missing bucket name")
        return s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/")
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), str(Path(parsed.path).resolve())
    if parsed.scheme == "":
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    raise InvalidInput(f"unsupported storage URI {uri!r}: use file:///path or s3://bucket/prefix")


class Storage:
    """Keyed byte storage under one root URI."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.root = filesystem_for(self.uri)
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self._dirs: set[str] = set()
        self._client = None
        self._client_lock = threading.Lock()

    def __reduce__(self):  # picklable for Ray workers: rebuild the filesystem there
        return (Storage, (self.uri,))

    def __repr__(self) -> str:
        return f"Storage({self.uri!r})"

    # --- paths -----------------------------------------------------------------------
    def path(self, key: str) -> str:
        """The filesystem path of a key (for pyarrow readers given ``self.fs``)."""
        return f"{self.root}/{check_key(key)}"

    def uri_for(self, key: str) -> str:
        return f"{self.uri}/{check_key(key)}"

    def key_for_uri(self, uri: str) -> str | None:
        """The key of a URI inside this storage, or None if it points elsewhere or is not a valid key."""
        prefix = self.uri + "/"
        if not isinstance(uri, str) or not uri.startswith(prefix):
            return None
        try:
            return check_key(uri[len(prefix):])
        except InvalidInput:
            return None

    def scrub(self, text: str) -> str:
        """``text`` with the storage root (as URI and as filesystem path) replaced by ``<storage>``."""
        for secret in sorted({self.uri, self.root, self.uri.removeprefix("file://")}, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "<storage>")
        return text

    # --- writes ----------------------------------------------------------------------
    def _tmp_path(self, key: str) -> str:
        return f"{self.root}/{TMP_PREFIX}/{uuid.uuid4().hex}-{posixpath.basename(key)}"

    @contextmanager
    def _publishing(self, key: str) -> Iterator[str]:
        """A temporary path to write ``key``'s bytes to, moved into place when the block ends cleanly and removed
        when it does not (a write to local files or S3 is then atomic: a reader sees the whole object or none)."""
        tmp, final = self._tmp_path(key), self.path(key)
        with self._guard(key):
            self._ensure_dir(posixpath.dirname(tmp))
            try:
                yield tmp
                self._ensure_dir(posixpath.dirname(final))
                if self.is_local:
                    os.replace(tmp, final)
                else:
                    self.fs.move(tmp, final)
            except BaseException:
                with suppress(OSError):
                    self.fs.delete_file(tmp)
                raise

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        """A stream whose content is published under ``key`` only when the block ends cleanly."""
        with self._publishing(key) as tmp, self.fs.open_output_stream(tmp) as out:
            yield out

    def _ensure_dir(self, path: str) -> None:
        """Local filesystems need parent directories; S3 has none. Known ones are cached."""
        if self.is_local and path not in self._dirs:
            self.fs.create_dir(path, recursive=True)
            self._dirs.add(path)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write an object atomically (temporary key, then move)."""
        if self.is_local:
            self._put_local(key, data)
            return
        with self.writer(key) as out:
            out.write(data)

    def _put_local(self, key: str, data: bytes) -> None:
        """``put_bytes`` on local files with the os calls themselves, written in one call (on tmpfs 15.6 vs 22.1 us
        for a 400-byte object through pyarrow's output stream, which adds stats, seeks and a buffered writer)."""
        with self._publishing(key) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)

    def put_immutable(self, key: str, data: bytes) -> None:
        """Write an object whose key names its content (a content-addressed input), so that whatever is
        ever under ``key`` is these bytes. On S3: one ``PutObject`` straight at the key. A PUT is atomic (a
        reader sees the whole object or none, a killed upload leaves nothing) and rewriting the key changes
        nothing, so the temporary key and its move (COPY + DELETE on S3: ~140 objects/s on SeaweedFS,
        whatever the threads) buy nothing. boto3's ``put_object`` measured faster than a pyarrow output
        stream (SeaweedFS, 400-byte objects: 630 vs 230/s on one thread, 840 vs 740/s on 16). Local files
        keep write-then-rename, which is what makes a local write atomic."""
        if self.is_local:
            self.put_bytes(key, data)
            return
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, prefix = self.root.partition("/")
        object_key = f"{prefix}/{check_key(key)}" if prefix else check_key(key)
        try:
            self._s3().put_object(Bucket=bucket, Key=object_key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            detail = self.scrub(str(exc)).replace(bucket, "<storage>")
            raise StorageError(f"storage failed on {key!r}: {type(exc).__name__}: {detail}") from exc

    def _s3(self):
        """This storage's boto3 client, made on first use (one per process, shared by threads)."""
        with self._client_lock:
            if self._client is None:
                self._client = s3_client()
            return self._client

    def put_stream(self, key: str, source: BinaryIO) -> None:
        """Copy a readable binary stream into an object atomically, in chunks."""
        with self.writer(key) as out:
            while chunk := source.read(_COPY_CHUNK):
                out.write(chunk)

    def delete(self, key: str) -> None:
        with self._guard(key):
            try:
                self.fs.delete_file(self.path(key))
            except FileNotFoundError:
                pass

    def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix/`` (a "directory")."""
        with self._guard(prefix):
            self._dirs.clear()
            try:
                self.fs.delete_dir(self.path(prefix))
            except FileNotFoundError:
                pass

    # --- reads -----------------------------------------------------------------------
    def get_bytes(self, key: str) -> bytes:
        with self._guard(key):
            try:
                with self.fs.open_input_stream(self.path(key)) as f:
                    return f.read()
            except FileNotFoundError:
                raise NotFound(f"no object {key!r} in storage") from None

    def exists(self, key: str) -> bool:
        with self._guard(key):
            return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def list(self, prefix: str) -> Iterator[str]:
        """Keys of all objects under ``prefix/``, sorted."""
        base = self.path(prefix)
        with self._guard(prefix):
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        root = self.root + "/"
        yield from sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File)

    def list_info(self, prefix: str) -> Iterator["ObjectInfo"]:
        """Every object under ``prefix/`` with its size and modification time, sorted by key."""
        base = self.path(prefix)
        with self._guard(prefix):
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        root = self.root + "/"
        found = [ObjectInfo(i.path[len(root):], i.size or 0, i.mtime.timestamp() if i.mtime else None)
                 for i in infos if i.type == pafs.FileType.File]
        yield from sorted(found, key=lambda o: o.key)

    def _guard(self, key: str) -> "_StorageGuard":
        return _StorageGuard(self, key)


@dataclass(frozen=True)
class ObjectInfo:
    """An object in storage: its key, size in bytes and modification time (seconds since the epoch)."""

    key: str
    size: int
    mtime: float | None


class _StorageGuard:
    """Turn low-level OSErrors (unreachable endpoint, denied) into a StorageError naming the key."""

    def __init__(self, storage: Storage, key: str):
        self.storage, self.key = storage, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            detail = self.storage.scrub(str(exc))
            raise StorageError(f"storage failed on {self.key!r}: {type(exc).__name__}: {detail}") from exc
        return False
