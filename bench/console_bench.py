"""The console's inputs grid at 60,000 inputs: how long its first page takes to show, in a real Chromium,
against ``deeptrain serve`` (Ray Serve on a local Ray, local files + SQLite: the embedded default).

An app with N real Fashion-MNIST images (all 60,000 of the training set by default; built once and kept under
``.bench/console``) is served, then, each repeated ``--repeat`` times (median reported):
  - browser: navigating to ``/apps/<app>/inputs`` until the grid shows its first page (60 thumbnails decoded:
    every ``img`` complete with a natural width) — unfiltered, filtered by a concept, and the unlabelled filter;
    its bare baseline: the same browser navigating to ``/healthz`` (a page with no data at all);
  - API: ``GET /v2/apps/<app>/inputs?per_page=60&thumbnail=128`` (what the grid calls) and ``…/inputs/counts``
    over HTTP; its bare baseline: the same 60 rows read and thumbnailed in process (no HTTP, no Serve);
and prints the seconds and the ratios to the baselines (``--json PATH``: also writes them there).
Target (issue 21): the grid's first page in under 1 s.

    python bench/console_bench.py [--n 60000] [--repeat 5] [--json out.json]

It starts Ray: on a shared machine hold its lock (``flock /tmp/c21/ray.lock python bench/console_bench.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from deeptrain.config import Settings  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = "grid"
PER_PAGE = 60


def build_app(home: Path, n: int) -> Client:
    """The app with ``n`` Fashion-MNIST inputs, imported once (kept between runs)."""
    from deeptrain.errors import Conflict
    from deeptrain.sample_data import write_fashion_mnist_folder

    client = Client(Settings.from_env(env={**os.environ, "DEEPTRAIN_HOME": str(home / "home")}))
    try:
        client.create_app(APP, "console bench")
    except Conflict:
        pass
    have = client.count_inputs(APP) if hasattr(client, "count_inputs") else None
    if have is None:
        from deeptrain.services import input_reads

        have = input_reads.count_inputs(client.ctx, APP)
    if have < n:
        folder = home / f"images-{n}"
        if not folder.exists():
            print(f"writing {n} Fashion-MNIST PNGs to {folder} …", file=sys.stderr)
            write_fashion_mnist_folder(folder, "train", per_class=n // 10)
        print(f"importing them (embedded) …", file=sys.stderr)
        started = time.perf_counter()
        report = client.import_inputs(APP, folder, format="imagefolder", split="train")
        print(f"imported {report['imported']} in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return client


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def browser_times(url: str, key: str, repeat: int) -> dict[str, float]:
    from tests.browser import chromium

    driver = chromium()
    wait_grid = ("const done = arguments[arguments.length - 1]; const t0 = performance.now();"
                 "(function check() { const imgs = document.querySelectorAll('#grid .thumb img');"
                 f" if (imgs.length >= {PER_PAGE} && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0))"
                 " done(performance.now()); else setTimeout(check, 5); })();")
    try:
        driver.set_script_timeout(60)
        driver.get(url + "/healthz")
        driver.execute_script("localStorage.setItem('deeptrain.key', arguments[0])", key)
        driver.get(url + "/")

        def navigate(path: str) -> float:
            driver.get(url + path)  # returns after the load event; the grid fills after its API answer
            shown_ms = driver.execute_async_script(wait_grid)
            return shown_ms / 1000.0  # from the navigation's start (performance.now()'s origin)

        def bare() -> float:
            driver.get(url + "/healthz")
            return driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000

        out = {"bare_navigation_s": statistics.median(bare() for _ in range(repeat))}
        for name, path in (("grid_first_page_s", f"/apps/{APP}/inputs"),
                           ("grid_concept_filter_s", f"/apps/{APP}/inputs?concept_id=bag"),
                           ("grid_split_filter_s", f"/apps/{APP}/inputs?split=train&page=500")):
            navigate(path)  # warm: the first visit compiles the modules
            out[name] = statistics.median(navigate(path) for _ in range(repeat))
        return out
    finally:
        driver.quit()


def api_times(url: str, key: str, client: Client, repeat: int) -> dict[str, float]:
    from deeptrain.images_thumbnail import thumbnail_png
    from deeptrain.services import input_reads

    headers = {"Authorization": f"Key {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        def page() -> None:
            r = http.get(f"/v2/apps/{APP}/inputs", params={"per_page": PER_PAGE, "thumbnail": 128})
            r.raise_for_status()
            assert len(r.json()["inputs"]) == PER_PAGE

        def counts() -> None:
            http.get(f"/v2/apps/{APP}/inputs/counts").raise_for_status()

        page()

        def bare() -> None:
            views = input_reads.input_views(client.ctx, APP, limit=PER_PAGE)
            keys = input_reads.storage_keys(client.ctx, APP, [v["id"] for v in views])
            for key in keys.values():
                thumbnail_png(client.ctx.storage.get_bytes(key), 128, client.settings.max_image_pixels)

        return {"api_page_s": median_time(page, repeat), "api_counts_s": median_time(counts, repeat),
                "bare_page_in_process_s": median_time(bare, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from serve import app as serve_app

    client = build_app(ROOT / ".bench" / "console", args.n)
    key = client.create_user_key("console bench")["key"]
    url = serve_app.start(client.settings, "127.0.0.1", 8797, predictor_cpus=0)
    try:
        result = {"inputs": args.n, "per_page": PER_PAGE, **api_times(url, key, client, args.repeat),
                  **browser_times(url, key, args.repeat)}
    finally:
        serve_app.stop()
    result["api_vs_bare_in_process"] = result["api_page_s"] / result["bare_page_in_process_s"]
    result["grid_vs_bare_navigation"] = result["grid_first_page_s"] / result["bare_navigation_s"]
    for name, value in result.items():
        print(f"{name:28s} {value:.3f}" if isinstance(value, float) else f"{name:28s} {value}")
    print(f"grid first page: {result['grid_first_page_s']:.3f}s (target < 1 s): "
          f"{'OK' if result['grid_first_page_s'] < 1 else 'TOO SLOW'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
