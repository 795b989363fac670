"""Smoke tests for the real test servers in tests/servers.py (SeaweedFS S3, PostgreSQL)."""

from __future__ import annotations

import os
import uuid

import pytest
from botocore.exceptions import ClientError


# -- SeaweedFS S3 -------------------------------------------------------------

@pytest.fixture(scope="module")
def s3():
    from tests.servers import seaweedfs_s3

    with seaweedfs_s3() as server:
        yield server


def _keys(client, bucket: str, prefix: str = "") -> list[str]:
    resp = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def test_s3_server_shape(s3):
    assert s3.endpoint.startswith("http://127.0.0.1:")
    assert s3.access_key and s3.secret_key
    assert s3.region == "us-east-1"
    assert all(0 < p < 65536 for p in s3.ports.values())
    assert len(set(s3.ports.values())) == len(s3.ports)


def test_s3_only_loopback(s3):
    """Every TCP port the server listens on is bound to 127.0.0.1, none to a wildcard."""
    pid = s3.process.pid
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                    listening.append(f[1])
    assert listening, "weed listens on no TCP socket?"
    # 0100007F:PORT is 127.0.0.1 (little-endian hex)
    assert all(addr.startswith("0100007F:") for addr in listening), listening
    ports = {int(addr.split(":")[1], 16) for addr in listening}
    assert ports <= set(s3.ports.values()), (ports, s3.ports)


def test_s3_boto3_roundtrip(s3):
    client = s3.client()
    bucket = s3.bucket("smoke-boto3")
    assert s3.bucket("smoke-boto3") == bucket  # idempotent
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]

    client.put_object(Bucket=bucket, Key="dir/a.txt", Body=b"hello")
    client.put_object(Bucket=bucket, Key="dir/b.txt", Body=b"world")
    assert client.get_object(Bucket=bucket, Key="dir/a.txt")["Body"].read() == b"hello"
    assert _keys(client, bucket, "dir/") == ["dir/a.txt", "dir/b.txt"]

    client.delete_object(Bucket=bucket, Key="dir/a.txt")
    assert _keys(client, bucket, "dir/") == ["dir/b.txt"]
    with pytest.raises(ClientError) as err:
        client.get_object(Bucket=bucket, Key="dir/a.txt")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"
    client.delete_object(Bucket=bucket, Key="dir/b.txt")
    assert _keys(client, bucket) == []


def test_s3_rejects_wrong_credentials(s3):
    import boto3

    bad = boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region,
                       aws_access_key_id=s3.access_key, aws_secret_access_key="wrong")
    with pytest.raises(ClientError):
        bad.list_buckets()


def test_s3_pyarrow_write_read(s3):
    from pyarrow import fs

    bucket = s3.bucket("smoke-pyarrow")
    # constructed exactly as the brief / library does it
    s3fs = fs.S3FileSystem(endpoint_override=s3.endpoint, scheme="http",
                           access_key=s3.access_key, secret_key=s3.secret_key,
                           region=s3.region)
    payload = os.urandom(6 * 1024 * 1024)  # > 5 MiB: pyarrow uses a multipart upload
    with s3fs.open_output_stream(f"{bucket}/data/blob.bin") as out:
        out.write(payload)
    info = s3fs.get_file_info(f"{bucket}/data/blob.bin")
    assert info.type == fs.FileType.File and info.size == len(payload)
    with s3fs.open_input_file(f"{bucket}/data/blob.bin") as f:
        assert f.read() == payload
        assert f.read_at(10, 100) == payload[100:110]
    assert s3fs.get_file_info(f"{bucket}/data").type == fs.FileType.Directory
    assert s3fs.get_file_info(f"{bucket}/missing").type == fs.FileType.NotFound
    listed = s3fs.get_file_info(fs.FileSelector(bucket, recursive=True))
    assert {i.path for i in listed if i.type == fs.FileType.File} == {f"{bucket}/data/blob.bin"}
    s3fs.delete_file(f"{bucket}/data/blob.bin")
    assert s3fs.get_file_info(f"{bucket}/data/blob.bin").type == fs.FileType.NotFound


def test_s3_pyarrow_move_temp_to_final(s3):
    """Write to a temporary key, then `move` (CopyObject + DeleteObject) into place."""
    from pyarrow import fs

    bucket = s3.bucket("smoke-move")
    s3fs = s3.filesystem()
    tmp = f"{bucket}/run/.tmp-{uuid.uuid4().hex}"
    final = f"{bucket}/run/final.parquet"
    for content in (b"first version", b"second version"):  # second move overwrites
        with s3fs.open_output_stream(tmp) as out:
            out.write(content)
        s3fs.move(tmp, final)
        assert s3fs.get_file_info(tmp).type == fs.FileType.NotFound
        with s3fs.open_input_stream(final) as f:
            assert f.read() == content
    files = [i.path for i in s3fs.get_file_info(fs.FileSelector(f"{bucket}/run", recursive=True))
             if i.type == fs.FileType.File]
    assert files == [final]
    with pytest.raises(OSError):
        s3fs.move(f"{bucket}/run/no-such-key", f"{bucket}/run/elsewhere")


def test_s3_pyarrow_create_dir(s3):
    from pyarrow import fs

    bucket = s3.bucket("smoke-dirs")
    s3fs = s3.filesystem()
    s3fs.create_dir(f"{bucket}/a/b")  # writes "a/" and "a/b/" marker objects, as on AWS
    assert s3fs.get_file_info(f"{bucket}/a/b").type == fs.FileType.Directory
    s3fs.delete_dir(f"{bucket}/a")
    assert s3fs.get_file_info(f"{bucket}/a").type == fs.FileType.NotFound


def test_s3_delete_nonempty_bucket_refused(s3):
    client = s3.client()
    bucket = s3.bucket("smoke-nonempty")
    client.put_object(Bucket=bucket, Key="k", Body=b"1")
    with pytest.raises(ClientError) as err:
        client.delete_bucket(Bucket=bucket)
    assert err.value.response["Error"]["Code"] == "BucketNotEmpty"
    client.delete_object(Bucket=bucket, Key="k")
    client.delete_bucket(Bucket=bucket)


# -- PostgreSQL ---------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server


def test_postgres_sqlalchemy_roundtrip(pg):
    import sqlalchemy as sa

    from deeptrain.store.db import make_engine

    assert pg.url.startswith("postgresql://")
    assert "@127.0.0.1:" in pg.url
    engine = make_engine(pg.url)
    try:
        meta = sa.MetaData()
        items = sa.Table("items", meta,
                         sa.Column("id", sa.Integer, primary_key=True),
                         sa.Column("name", sa.String(50), nullable=False))
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(items.insert(), [{"name": "a"}, {"name": "b"}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(items.c.name).order_by(items.c.id)).scalars().all() \
                == ["a", "b"]
            assert conn.execute(sa.text("SHOW server_version")).scalar().split(".")[0].isdigit()
    finally:
        engine.dispose()


def test_postgres_create_database(pg):
    import sqlalchemy as sa

    from deeptrain.store.db import make_engine

    url = pg.create_database("smoke_second")
    assert url.endswith("/smoke_second")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == "smoke_second"
            conn.execute(sa.text("CREATE TABLE t (x int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (42)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM t")).scalar() == 42
    finally:
        engine.dispose()
    # the table lives in the new database only
    main = make_engine(pg.url)
    try:
        with main.connect() as conn:
            assert not sa.inspect(conn).has_table("t")
    finally:
        main.dispose()


def test_postgres_rejects_wrong_password(pg):
    import sqlalchemy as sa

    from deeptrain.store.db import make_engine
    from sqlalchemy.engine import make_url

    bad = make_url(pg.url).set(password="wrong")
    engine = make_engine(bad.render_as_string(hide_password=False))
    try:
        with pytest.raises(sa.exc.OperationalError):
            engine.connect().close()
    finally:
        engine.dispose()


# -- lifecycle ----------------------------------------------------------------

def test_servers_leave_nothing_behind():
    """A second, short-lived instance of each: after the context nothing runs, no temp dir."""
    from tests.servers import postgres_server, seaweedfs_s3

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    with seaweedfs_s3() as s3:
        weed_pid, weed_dir = s3.process.pid, s3.data_dir.parent
        assert alive(weed_pid)
    assert not alive(weed_pid)
    assert not weed_dir.exists()

    from tests.servers import _children

    with pytest.raises(RuntimeError, match="boom"):
        with postgres_server() as pg:
            pm_pid, pg_dir = pg.process.pid, pg.data_dir.parent
            kids = _children(pm_pid)
            assert kids
            raise RuntimeError("boom")
    assert not alive(pm_pid)
    assert not any(alive(k) for k in kids)
    assert not pg_dir.exists()
