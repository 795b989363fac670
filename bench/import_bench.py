"""Import throughput: deeptrain's import pipeline vs the irreducible work on the same files.

For N real Fashion-MNIST images (PNG files in an image folder) this measures, in one run:
  - local storage: ``Client.import_inputs`` (decode + validate + sha256 + dedup lookup +
    atomic write + SQLite rows) vs the same files copied, each decoded by Pillow and hashed
    (sha256), the faster of one thread and as many as the import's ``import_workers`` (on 2 cores,
    small images go faster on one: threads handing the GIL to one another cost more than they share);
  - S3 (a SeaweedFS server started here on loopback) + PostgreSQL: the same import vs the same
    decode + sha256 plus a ``boto3`` ``put_object`` of each file, on as many threads as the
    import's ``import_uploads``;
  - remote mode: ``deeptrain inputs import`` run as a command with only DEEPTRAIN_API_URL/KEY against a
    deeptrain server (``serve.app.start`` on a local Ray, local files + SQLite; the files read here, 128
    images a request, two in flight) vs the same command run embedded on the same kind of storage
    (target: ratio >= 0.5); both timed as whole commands, start-up included.
and prints images/s and the ratio pipeline / baseline (``--json PATH``: also writes them there).

Baseline and pipeline alternate, ``--rounds`` times each (each round a fresh app and a fresh copy folder): on a
shared disk both see the same conditions (on this machine ext4's inode allocation, ``recently_deleted``, took
~1 ms a file for minutes after large deletions, 20x its usual cost). The table gives the median of each and
the median of the rounds' ratios, and the process CPU time per image of each (threads handing the GIL to one
another cost CPU: context switches were half the import's CPU on 2 cores in ``perf``).

    python bench/import_bench.py [--n 2000] [--rounds 3] [--no-s3] [--no-remote] [--json out.json]

The remote part starts Ray: on a shared machine, hold its lock (e.g. ``flock ray.lock python …``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402
from PIL import Image  # noqa: E402

from deeptrain.config import Settings  # noqa: E402
from deeptrain.formats.records import walk_files  # noqa: E402
from deeptrain.sample_data import write_fashion_mnist_folder  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402


def decoded(data: bytes) -> str:
    """What every import must do to an image: decode it whole (Pillow) and hash it (sha256)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
    return hashlib.sha256(data).hexdigest()


def bare_local(files: list[Path], dest: Path, threads: int) -> float:
    """Copy + decode + sha256 of each file, on ``threads`` threads."""
    dest.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        data = files[i].read_bytes()
        (dest / f"{decoded(data)}.png").write_bytes(data)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(files))))
    return len(files) / (time.perf_counter() - start)


def best_local(files: list[Path], dest: Path, thread_counts: tuple[int, ...]) -> tuple[float, float]:
    """(images/s, CPU us an image) of the fastest of ``bare_local`` on each of ``thread_counts``."""
    runs = []
    for threads in thread_counts:
        cpu = cpu_s()
        rate = bare_local(files, dest / str(threads), threads)
        runs.append((rate, 1e6 * (cpu_s() - cpu) / len(files)))
    return max(runs)


def bare_s3(files: list[Path], s3, bucket: str, threads: int) -> float:
    """Decode + sha256 + ``boto3`` ``put_object`` of each file, on ``threads`` threads."""
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name=s3.region,
                          config=Config(max_pool_connections=max(10, threads)))

    def one(i: int) -> None:
        data = files[i].read_bytes()
        client.put_object(Bucket=bucket, Key=f"bare/{decoded(data)}.png", Body=data)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(files))))
    return len(files) / (time.perf_counter() - start)


def cpu_s() -> float:
    """This process's CPU seconds (user + system, all threads)."""
    times = os.times()
    return times.user + times.system


def alternate(rounds: int, n: int, baseline, pipeline) -> dict:
    """``baseline()`` and ``pipeline()`` (each returning images/s) in turn ``rounds`` times: medians, the
    median ratio, and the CPU microseconds per image of each."""
    seen: dict[str, list[float]] = {"base": [], "pipe": [], "base_cpu": [], "pipe_cpu": [], "ratio": []}
    for r in range(rounds):
        for name, run in (("base", baseline), ("pipe", pipeline)):
            cpu = cpu_s()
            rate = run(r)
            rate, cpu_us = rate if isinstance(rate, tuple) else (rate, 1e6 * (cpu_s() - cpu) / n)
            seen[name].append(rate)
            seen[f"{name}_cpu"].append(cpu_us)
        seen["ratio"].append(seen["pipe"][-1] / seen["base"][-1])
    return {k: statistics.median(v) for k, v in seen.items()} | {"rounds": rounds}


def cli_import(env: dict[str, str], folder: Path, n: int) -> float:
    """``deeptrain apps create`` then the timed ``deeptrain inputs import`` (a whole command) in ``env``."""
    import json
    import subprocess

    app = f"bench{uuid.uuid4().hex[:6]}"
    command = [sys.executable, "-m", "deeptrain.cli.main"]
    subprocess.run([*command, "apps", "create", app], env=env, check=True, capture_output=True)
    start = time.perf_counter()
    done = subprocess.run([*command, "inputs", "import", app, str(folder), "-f", "imagefolder", "--json"], env=env,
                          check=True, capture_output=True, text=True)
    rate = n / (time.perf_counter() - start)
    assert json.loads(done.stdout)["imported"] == n, done.stdout
    return rate


def remote_vs_embedded(work: Path, folder: Path, n: int) -> tuple[float, float]:
    """images/s of the command against a server on a local Ray, and of the same command embedded."""
    from tests.remote_cli import deeptrain_server, remote_env

    embedded_env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPTRAIN_")}
    embedded = cli_import({**embedded_env, "DEEPTRAIN_HOME": str(work / "home-cli")}, folder, n)
    with deeptrain_server(Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home-remote")})) as (url, key):
        (work / "client-home").mkdir(exist_ok=True)
        remote = cli_import(remote_env(url, key, str(work / "client-home")), folder, n)
    return remote, embedded


def timed_import(client, folder: Path, n: int) -> float:
    """images/s of one import of ``folder`` into a fresh app."""
    app = f"bench{uuid.uuid4().hex[:6]}"
    client.create_app(app)
    start = time.perf_counter()
    report = client.import_inputs(app, folder, format="imagefolder")
    rate = report["imported"] / (time.perf_counter() - start)
    assert report["imported"] == n, report
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="number of images (multiple of 10)")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/pipeline pairs, alternating")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 + PostgreSQL part")
    parser.add_argument("--no-remote", action="store_true", help="skip remote mode (a server on a local Ray)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deeptrain-import-bench-"))
    rows = []
    try:
        folder = work / "images"
        write_fashion_mnist_folder(folder, "test", per_class=args.n // 10)
        files = [p for p in walk_files(folder) if isinstance(p, Path)]
        n = len(files)
        local_settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home")})
        threads = local_settings.import_workers
        local = Client(local_settings)
        found = alternate(args.rounds, n, lambda r: best_local(files, work / f"bare{r}", (1, threads)),
                          lambda r: timed_import(local, folder, n))
        rows.append(("local files + SQLite", f"copy+decode+sha256, best of 1|{threads} threads", found))
        if not args.no_remote:
            remote, embedded = remote_vs_embedded(work, folder, n)
            rows.append(("remote CLI over HTTP (local)", "embedded CLI",
                         {"pipe": remote, "base": embedded, "ratio": remote / embedded, "rounds": 1}))
        if not args.no_s3:
            from tests.servers import postgres_server, seaweedfs_s3

            with ExitStack() as stack:
                s3 = stack.enter_context(seaweedfs_s3())
                pg = stack.enter_context(postgres_server())
                bucket = s3.bucket("bench")
                os.environ.update(AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key,
                                  AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_REGION=s3.region)
                settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home-s3"),
                                                  "DEEPTRAIN_STORAGE": f"s3://{bucket}/pipeline",
                                                  "DEEPTRAIN_DATABASE_URL": pg.create_database("bench")})
                uploads, client = settings.import_uploads, Client(settings)
                found = alternate(args.rounds, n, lambda r: bare_s3(files, s3, bucket, uploads),
                                  lambda r: timed_import(client, folder, n))
                rows.append(("S3 (SeaweedFS) + PostgreSQL", f"decode+sha256+boto3 put, {uploads} threads", found))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rows, n, args.json)


def report(rows: list, n: int, out: Path | None) -> None:
    """The table (medians over the rounds), and the JSON document when asked for."""
    print(f"\nimport of {n} Fashion-MNIST PNGs ({os.cpu_count()} CPUs), medians of alternating rounds")
    print(f"{'storage':30} {'pipeline img/s':>15} {'cpu us/img':>10} {'baseline':>38} {'img/s':>7} "
          f"{'cpu us/img':>10} {'ratio':>6}")
    for name, base_name, f in rows:
        print(f"{name:30} {f['pipe']:15.0f} {f.get('pipe_cpu', float('nan')):10.0f} {base_name:>38} "
              f"{f['base']:7.0f} {f.get('base_cpu', float('nan')):10.0f} {f['ratio']:6.2f}")
    if out:
        import json

        out.write_text(json.dumps({"images": n, "cpus": os.cpu_count(), "rows": [
            {"pipeline": name, "images_per_s": round(f["pipe"], 1), "baseline": base_name,
             "baseline_images_per_s": round(f["base"], 1), "ratio": round(f["ratio"], 3), "rounds": f["rounds"],
             "cpu_us_per_image": round(f.get("pipe_cpu", 0.0), 1),
             "baseline_cpu_us_per_image": round(f.get("base_cpu", 0.0), 1)}
            for name, base_name, f in rows]}, indent=2))


if __name__ == "__main__":
    main()
