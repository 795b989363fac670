"""Import throughput: deeptrain's import pipeline vs the irreducible work on the same files.

For N real Fashion-MNIST images (PNG files in an image folder) this measures, in one run:
  - local storage: ``Client.import_inputs`` (decode + validate + sha256 + dedup lookup +
    atomic write + SQLite rows) vs the same files copied, each decoded by Pillow and hashed
    (sha256), on as many threads as the import's ``import_workers``;
  - S3 (a SeaweedFS server started here on loopback) + PostgreSQL: the same import vs the same
    decode + sha256 plus a ``boto3`` ``put_object`` of each file, on as many threads as the
    import's ``import_uploads``;
  - remote mode: ``deeptrain inputs import`` run as a command with only DEEPTRAIN_API_URL/KEY against a
    deeptrain server (``serve.app.start`` on a local Ray, local files + SQLite; the files read here, 128
    images a request, two in flight) vs the same command run embedded on the same kind of storage
    (target: ratio >= 0.5); both timed as whole commands, start-up included.
and prints images/s and the ratio pipeline / baseline (``--json PATH``: also writes them there).

    python bench/import_bench.py [--n 2000] [--no-s3] [--no-remote] [--json out.json]

The remote part starts Ray: on a shared machine, hold its lock (e.g. ``flock ray.lock python …``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
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


def pipeline(settings: Settings, folder: Path, n: int) -> float:
    return timed_import(Client(settings), folder, n)


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
        remote = cli_import(remote_env(url, key), folder, n)
    return remote, embedded


def timed_import(client, folder: Path, n: int) -> float:
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
        local_settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(work / "home")})
        bare = bare_local(files, work / "bare", local_settings.import_workers)
        local = pipeline(local_settings, folder, len(files))
        rows.append(("local files + SQLite", local, "copy+decode+sha256", bare))
        if not args.no_remote:
            remote, embedded = remote_vs_embedded(work, folder, len(files))
            rows.append(("remote CLI over HTTP (local)", remote, "embedded CLI", embedded))
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
                bare = bare_s3(files, s3, bucket, settings.import_uploads)
                rows.append(("S3 (SeaweedFS) + PostgreSQL", pipeline(settings, folder, len(files)),
                             "decode+sha256+boto3 put", bare))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nimport of {len(files)} Fashion-MNIST PNGs ({os.cpu_count()} CPUs)")
    print(f"{'storage':30} {'pipeline img/s':>15} {'baseline':>24} {'baseline img/s':>14} {'ratio':>6}")
    for name, rate, bare_name, bare_rate in rows:
        print(f"{name:30} {rate:15.0f} {bare_name:>24} {bare_rate:14.0f} {rate / bare_rate:6.2f}")
    if args.json:
        import json

        args.json.write_text(json.dumps({"images": len(files), "cpus": os.cpu_count(), "rows": [
            {"pipeline": name, "images_per_s": round(rate, 1), "baseline": bare_name,
             "baseline_images_per_s": round(bare_rate, 1), "ratio": round(rate / bare_rate, 3)}
            for name, rate, bare_name, bare_rate in rows]}, indent=2))


if __name__ == "__main__":
    main()
