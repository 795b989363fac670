"""Import at scale: the Fashion-MNIST training images into S3 (SeaweedFS) + PostgreSQL, 10k, 30k and 60k of them.

For each size, in a fresh deployment (its own database and storage prefix) and as a user would (each step a
``deeptrain`` command in a subprocess, timed whole, start-up included, with the peak RSS of that process):

  inputs import (imagefolder)  ->  datasets snapshot  ->  inputs list (first page; a page at offset N-100)
  ->  concepts list

and, in this process, how long one page of ``list_inputs`` (100 inputs) takes to answer: the first page, the
page at offset N-100 and the same page by key (``after``: the id before it), median of 5. Growth to look for:
time linear in N, memory flat, pages constant.

    python bench/import_scale.py [--sizes 10000 30000 60000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deeptrain.config import Settings  # noqa: E402
from deeptrain.sample_data import write_fashion_mnist_folder  # noqa: E402
from deeptrain.services.context import Context  # noqa: E402
from deeptrain.services.input_reads import list_inputs  # noqa: E402

PAGE = 100


def run(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MiB, stdout) of one ``deeptrain`` command, run under GNU ``/usr/bin/time``: its
    child starts from a small process, whereas a child of this one would inherit this one's RSS high-water mark
    (Linux keeps it across exec)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, sys.executable, "-m", "deeptrain.cli.main",
                               *args], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"deeptrain {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        peak_kib = int(rss.read().split()[-1])
    return seconds, peak_kib / 1024, done.stdout


def subset(full: Path, dest: Path, per_class: int) -> None:
    """The first ``per_class`` files of each class of ``full``, hard-linked into ``dest``."""
    for cls in sorted(p for p in full.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            os.link(f, dest / cls.name / f.name)


def page_ms(ctx: Context, app: str, **kw) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        rows = list_inputs(ctx, app, limit=PAGE, **kw)
        times.append((time.perf_counter() - start) * 1000)
        assert len(rows) == PAGE, len(rows)
    return statistics.median(times)


def one_size(work: Path, folder: Path, n: int, pg, bucket: str) -> dict[str, float]:
    name = f"scale{n}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPTRAIN_")}
    settings = Settings.from_env(env={"DEEPTRAIN_HOME": str(work / name), "DEEPTRAIN_STORAGE": f"s3://{bucket}/{name}",
                                      "DEEPTRAIN_DATABASE_URL": pg.create_database(name)})
    env.update(settings.as_env())
    run(env, "apps", "create", "fashion")
    row: dict[str, float] = {"images": n}
    row["import_s"], row["import_rss_mb"], out = run(env, "inputs", "import", "fashion", str(folder), "-f",
                                                     "imagefolder", "--split", "train", "--json")
    assert json.loads(out)["imported"] == n, out
    row["images_per_s"] = n / row["import_s"]
    row["snapshot_s"], row["snapshot_rss_mb"], _ = run(env, "datasets", "snapshot", "fashion", "--json")
    row["list_first_s"], row["list_rss_mb"], _ = run(env, "inputs", "list", "fashion", "--limit", str(PAGE), "--json")
    row["list_deep_s"], _, _ = run(env, "inputs", "list", "fashion", "--limit", str(PAGE), "--offset", str(n - PAGE),
                                   "--json")
    row["concepts_s"], row["concepts_rss_mb"], _ = run(env, "concepts", "list", "fashion", "--json")
    ctx = Context.from_settings(settings)
    before = list_inputs(ctx, "fashion", limit=1, offset=n - PAGE - 1)[0]["id"]
    row["page_first_ms"] = page_ms(ctx, "fashion")
    row["page_offset_ms"] = page_ms(ctx, "fashion", offset=n - PAGE)
    row["page_after_ms"] = page_ms(ctx, "fashion", after=before)
    ctx.store.engine.dispose()
    return row


COLUMNS = [("images", "{:.0f}"), ("import_s", "{:.1f}"), ("images_per_s", "{:.0f}"), ("import_rss_mb", "{:.0f}"),
           ("snapshot_s", "{:.1f}"), ("snapshot_rss_mb", "{:.0f}"), ("list_first_s", "{:.2f}"),
           ("list_deep_s", "{:.2f}"), ("list_rss_mb", "{:.0f}"), ("concepts_s", "{:.2f}"),
           ("page_first_ms", "{:.1f}"), ("page_offset_ms", "{:.1f}"), ("page_after_ms", "{:.1f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 60_000],
                        help="numbers of images (multiples of 10, at most 60000)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args()
    from tests.servers import postgres_server, seaweedfs_s3

    work = Path(tempfile.mkdtemp(prefix="deeptrain-import-scale-"))
    rows = []
    try:
        full = work / "train"
        write_fashion_mnist_folder(full, "train", per_class=max(args.sizes) // 10)
        with ExitStack() as stack:
            s3 = stack.enter_context(seaweedfs_s3())
            pg = stack.enter_context(postgres_server())
            os.environ.update(AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key,
                              AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_REGION=s3.region)
            bucket = s3.bucket("scale")
            for n in args.sizes:
                folder = full if n == max(args.sizes) else work / f"train{n}"
                if folder != full:
                    subset(full, folder, n // 10)
                rows.append(one_size(work, folder, n, pg, bucket))
                print(json.dumps({k: round(v, 3) for k, v in rows[-1].items()}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nFashion-MNIST train images into S3 (SeaweedFS) + PostgreSQL ({os.cpu_count()} CPUs); "
          "*_s: whole commands; page_*_ms: one list_inputs page of 100 in-process")
    print(" ".join(f"{name:>15}" for name, _ in COLUMNS))
    for row in rows:
        print(" ".join(f"{fmt.format(row[name]):>15}" for name, fmt in COLUMNS))
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": [
            {k: round(v, 3) for k, v in row.items()} for row in rows]}, indent=2))


if __name__ == "__main__":
    main()
