"""Remote mode in tests and benchmarks: a real deeptrain server (``serve.app.start`` on a local Ray) and the
``deeptrain`` command run against it with only ``DEEPTRAIN_API_URL`` / ``DEEPTRAIN_API_KEY``.

    with deeptrain_server(settings) as (url, key):          # Ray: wrap the run in `flock /tmp/c20/ray.lock`
        run_remote_cli(url, key, "apps", "create", "fashion", check=True)
        run_remote_cli(url, key, "inputs", "import", "fashion", str(folder), "-f", "imagefolder", check=True)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from typing import Iterator

from deeptrain.config import Settings


def remote_env(api_url: str, api_key: str | None, home: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a remote client: this one without any ``DEEPTRAIN_*`` (no store, storage or home of
    its own reaches it; its home is ``home``, an empty folder the caller removes) plus the server's URL and key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPTRAIN_") and not k.startswith("AWS_")}
    env.update(DEEPTRAIN_API_URL=api_url, DEEPTRAIN_HOME=home)
    if api_key:
        env["DEEPTRAIN_API_KEY"] = api_key
    return {**env, **(extra or {})}


def run_remote_cli(api_url: str, api_key: str | None, *args: str, check: bool = False, timeout: float = 600,
                   env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real ``deeptrain`` command in a subprocess against the server at ``api_url``."""
    with tempfile.TemporaryDirectory(prefix="deeptrain-remote-home-") as home:
        proc = subprocess.run([sys.executable, "-m", "deeptrain.cli.main", *args],
                              env=remote_env(api_url, api_key, home, env),
                              capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"remote deeptrain {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


@contextlib.contextmanager
def deeptrain_server(settings: Settings, port: int | None = None) -> Iterator[tuple[str, str]]:
    """A deeptrain server for ``settings`` on this process's (local) Ray, with a new user key:
    yields ``(url, key)``; Serve is shut down after. Starts Ray: hold ``/tmp/c20/ray.lock`` (flock) around it."""
    from deeptrain.sdk import Client
    from serve import app as serve_app
    from tests.servers import _free_ports

    key = Client(settings).create_user_key("remote tests")["key"]
    url = serve_app.start(settings, port=port or _free_ports(1)[0])
    try:
        _wait_ready(url)
        yield url, key
    finally:
        serve_app.stop()


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the deeptrain server at {url} is not ready after {timeout}s")
        time.sleep(0.5)
