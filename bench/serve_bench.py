"""Online serving over loopback HTTP vs the bare model, and visual search at 100k vectors, in one run.

Serving: a ResNext classifier (trained for a few steps on Fashion-MNIST; what it learned does
not matter here) at each ``--image-size``, served by ``deeptrain serve``'s Ray Serve app.

  bare batched : the version's own predict (flip averaging included) on a preprocessed
                 batch of 16 (the Predictor's ``max_batch_size``), images/s
  bare single  : the same on one image, p50 ms
  in-process   : ``deeptrain.inference.predict_bytes`` (decode + resize + the same
                 predict) on 16 and on 1 encoded image: the work a request adds before HTTP
  HTTP         : ``POST /v2/apps/bench/models/clf/outputs``, one base64 PNG per request,
                 from C concurrent clients (asyncio + httpx) for C = 1, 8, 32; each level
                 bounded by --requests and --seconds (after a warm-up). Only successful (2xx)
                 responses count as throughput and latency; failed requests are counted by
                 status (or exception) and any failure makes the benchmark exit with status 1

  no-op Serve  : the same two Ray Serve hops (HTTP proxy -> FastAPI ingress -> a handle call to
                 a second deployment, with the actor options the real app runs with here) doing no work at all,
                 under the same load: what the serving path alone costs on this machine, the
                 ceiling of any model behind it

Targets (issue #7): images/s at C=32 >= 0.7 x bare batched; p50 at C=1 <= bare single + 15 ms.
The load generator runs on the same cores as the server (it takes its share of them).

Search: ``deeptrain.search`` indexes (the one ``build_index`` picks for that many vectors)
over N vectors (default 100k, 256-d, drawn around 1,000 centres: clustered like real
embeddings), queries/s of one query at a time through ``SearchIndex.query`` (what a search
request does) and Recall@10 against exact inner-product search over the same vectors.

    python bench/serve_bench.py [--image-size 32 128] [--requests 400] [--seconds 30] [--vectors 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from deeptrain.config import Settings  # noqa: E402
from deeptrain.sample_data import write_fashion_mnist_folder  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402

BATCH = 16  # serve.app.Predictor's max_batch_size
CONCURRENCY = (1, 8, 32)
PREDICTOR_CPUS = 0  # CPUs reserved for the Predictor replica here, in the real app and the no-op one alike


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bare(loaded, images: list[bytes], rounds: int) -> dict[str, float]:
    """Images/s of the version's predict on a preprocessed batch, p50 ms on one image; and the same in-process
    through predict_bytes (decode + preprocess + predict)."""
    import torch

    from deeptrain.inference import model_input, predict_bytes, prepare
    from deeptrain.models.tasks import predict_with_flips

    flips = loaded.params.average_horizontal_flips
    batch = images[:BATCH]
    prepared = [prepare(loaded, data) for data in batch]
    x16, x1 = model_input(loaded, prepared), model_input(loaded, prepared[:1])

    def timed(fn, n: int) -> list[float]:
        fn()  # warm-up
        out = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    with torch.no_grad():
        batched = timed(lambda: predict_with_flips(loaded.model, "classification", x16, flips), rounds)
        single = timed(lambda: predict_with_flips(loaded.model, "classification", x1, flips), rounds * 4)
    full_batched = timed(lambda: predict_bytes(loaded, batch), rounds)
    full_single = timed(lambda: predict_bytes(loaded, batch[:1]), rounds * 4)
    return {"batched_ips": BATCH / min(batched), "single_p50_ms": 1000 * statistics.median(single),
            "bytes_batched_ips": BATCH / min(full_batched), "bytes_single_p50_ms": 1000 * statistics.median(full_single)}


async def load(url: str, key: str, images: list[bytes], concurrency: int, requests: int, seconds: float) -> dict:
    """``concurrency`` clients posting one image each until ``requests`` are done or ``seconds`` are up."""
    import httpx

    bodies = [{"inputs": [{"data": {"image": {"base64": base64.b64encode(d).decode()}}}]} for d in images]
    path = "/v2/apps/bench/models/clf/outputs"
    latencies: list[float] = []  # successful (2xx) responses only
    errors: dict[str, int] = {}  # failed requests by HTTP status or exception name
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Key {key}"}, limits=limits,
                                 timeout=120) as http:
        for body in bodies[: max(concurrency, 8)]:  # warm-up: connections open, model loaded
            (await http.post(path, json=body)).raise_for_status()
        deadline = time.perf_counter() + seconds
        sent = 0

        async def client() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    r = await http.post(path, json=body)
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                else:
                    failure = None if r.is_success else str(r.status_code)
                if failure is None:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[failure] = errors.get(failure, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": len(latencies), "errors": sum(errors.values()),
            "error_kinds": errors, "seconds": elapsed, "ips": len(latencies) / elapsed,
            "p50_ms": 1000 * _pct(latencies, 50), "p99_ms": 1000 * _pct(latencies, 99)}


def noop_app():
    """Gateway and Predictor stand-ins with the actor options the real app runs with here, and no work."""
    from fastapi import FastAPI
    from ray import serve

    from serve.app import Gateway, Predictor

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": PREDICTOR_CPUS},
                      max_ongoing_requests=Predictor.max_ongoing_requests)
    class NoopPredictor:
        async def predict(self, size: int) -> int:
            return size

    @serve.deployment(ray_actor_options=Gateway.ray_actor_options, max_ongoing_requests=Gateway.max_ongoing_requests)
    @serve.ingress(api)
    class NoopGateway:
        def __init__(self, predictor) -> None:
            self.predictor = predictor

        @api.post("/v2/apps/{app_id}/models/{model_id}/outputs")
        async def outputs(self, app_id: str, model_id: str, body: dict) -> dict:
            sizes = [len(i["data"]["image"]["base64"]) for i in body["inputs"]]
            return {"outputs": await asyncio.gather(*(self.predictor.predict.remote(n) for n in sizes))}

    return NoopGateway.bind(NoopPredictor.bind())


def serve_floor(images: list[bytes], requests: int, seconds: float) -> list[dict]:
    """The load levels against the no-op app (see the module docstring)."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(noop_app(), name="floor", route_prefix="/")
    try:
        return [asyncio.run(load(f"http://127.0.0.1:{port}", "none", images, c, requests, seconds))
                for c in CONCURRENCY]
    finally:
        serve.shutdown()


def serving(work: Path, images: list[bytes], image_size: int, requests: int, seconds: float,
            rounds: int) -> tuple[dict, list[dict]]:
    from deeptrain.inference import predict_bytes  # noqa: F401  (imports torch before timing)
    from serve.app import start, stop

    client = Client(Settings.from_env(env={"DEEPTRAIN_HOME": str(work / f"home-{image_size}")}))
    client.create_app("bench")
    client.import_inputs("bench", work / "train", format="imagefolder", split="train")
    client.import_inputs("bench", work / "test", format="imagefolder", split="test")
    client.create_model("bench", "clf", "classification", "ResNext",
                        {"image_size": image_size, "num_epochs": 1, "batch_size": 20, "num_items_per_epoch": 40,
                         "lrate": 0.05})
    version = client.train("bench", "clf", workers=1)
    assert version["status"] == "trained", version["error"]
    base = bare(client.load_version("bench", "clf"), images, rounds)
    key = client.create_key("bench", ["predict"])["key"]
    url = start(client.settings, "127.0.0.1", _free_port(), predictor_cpus=PREDICTOR_CPUS)
    try:
        levels = [asyncio.run(load(url, key, images, c, requests, seconds)) for c in CONCURRENCY]
    finally:
        stop()
    return base, levels


def search(n: int, dim: int, queries: int, seed: int = 0) -> dict:
    """Queries/s and Recall@10 of the index ``deeptrain.search`` builds for ``n`` vectors vs exact search."""
    import faiss

    from deeptrain.search import SearchIndex, make_index, normalize

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)

    def draw(k: int) -> np.ndarray:
        return normalize(centres[rng.integers(0, len(centres), k)] + 0.6 * rng.standard_normal((k, dim)))

    vectors, q = draw(n), draw(queries)
    start = time.perf_counter()
    index = make_index(vectors, np.arange(n, dtype=np.int64))
    build_s = time.perf_counter() - start
    rows = {i: {"input_id": str(i), "sha256": "", "concepts": []} for i in range(n)}
    searcher = SearchIndex({"artifacts": ""}, index, rows)
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(q, 10)
    start = time.perf_counter()
    hits = [searcher.query(v, 10) for v in q]
    qps = queries / (time.perf_counter() - start)
    recall = float(np.mean([len({int(h["input_id"]) for h in hit} & set(t.tolist())) / 10
                            for hit, t in zip(hits, truth)]))
    start = time.perf_counter()
    for v in q:
        exact.search(v[None], 10)
    exact_qps = queries / (time.perf_counter() - start)
    return {"vectors": n, "dim": dim, "index": type(faiss.downcast_index(index.index)).__name__
            if hasattr(index, "index") else type(index).__name__, "build_s": build_s, "qps": qps,
            "recall@10": recall, "exact_qps": exact_qps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--requests", type=int, default=400, help="requests per concurrency level (at most)")
    parser.add_argument("--seconds", type=float, default=30, help="time per concurrency level (at most)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds of the bare forward")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the figures (error counts included) to this JSON file")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="deeptrain-serve-bench-"))
    try:
        write_fashion_mnist_folder(work / "train", "train", per_class=10)
        write_fashion_mnist_folder(work / "test", "test", per_class=10)
        images = [p.read_bytes() for p in sorted((work / "test").rglob("*.png"))]
        results = {size: serving(work, images, size, args.requests, args.seconds, args.rounds)
                   for size in args.image_size}
        floor = serve_floor(images, args.requests, args.seconds)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    found = search(args.vectors, 256, args.queries)

    print(f"\nserving: ResNext classifier, flip averaging on, one 28x28 PNG per request, {os.cpu_count()} CPUs "
          "(load generator on the same cores)")
    for size, (base, levels) in results.items():
        print(f"\nimage_size {size}: bare batched {base['batched_ips']:.1f} images/s (batch {BATCH}), bare single "
              f"p50 {base['single_p50_ms']:.1f} ms; in-process predict_bytes {base['bytes_batched_ips']:.1f} images/s, "
              f"single p50 {base['bytes_single_p50_ms']:.1f} ms")
        print(f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'images/s':>9} {'vs bare':>8} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'p50 - bare single':>18}")
        for lv in levels:
            print(f"{lv['concurrency']:>11} {lv['requests']:>8} {lv['errors']:>6} {lv['ips']:9.1f} "
                  f"{lv['ips'] / base['batched_ips']:8.2f} {lv['p50_ms']:8.1f} {lv['p99_ms']:8.1f} "
                  f"{lv['p50_ms'] - base['single_p50_ms']:18.1f}")
        c1, c32 = levels[0], levels[-1]
        ratio, overhead = c32["ips"] / base["batched_ips"], c1["p50_ms"] - base["single_p50_ms"]
        print(f"targets: C=32 throughput / bare batched = {ratio:.2f} (>= 0.7: {'met' if ratio >= 0.7 else 'MISSED'}); "
              f"C=1 p50 overhead = {overhead:.1f} ms (<= 15: {'met' if overhead <= 15 else 'MISSED'})")
        print(f"ceiling: the no-op Serve app at C=32 = {floor[-1]['ips'] / base['batched_ips']:.2f} x bare batched; "
              f"its C=1 p50 = {floor[0]['p50_ms']:.1f} ms of overhead with no work behind it")
    print("\nno-op Serve app (same hops and actor options, no store, no decode, no model):")
    print(f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'requests/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for lv in floor:
        print(f"{lv['concurrency']:>11} {lv['requests']:>8} {lv['errors']:>6} {lv['ips']:10.1f} {lv['p50_ms']:8.1f} "
              f"{lv['p99_ms']:8.1f}")
    print(f"\nsearch: {found['vectors']:,} vectors of {found['dim']} dims (clustered), index {found['index']} "
          f"built in {found['build_s']:.1f}s: {found['qps']:.0f} queries/s one at a time through SearchIndex.query, "
          f"Recall@10 {found['recall@10']:.3f} vs exact; exact flat search {found['exact_qps']:.0f} queries/s")
    failed = failures(results, floor)
    if args.json:
        args.json.write_text(json.dumps({"serving": {str(size): {"bare": base, "levels": levels}
                                                     for size, (base, levels) in results.items()},
                                         "noop_serve": floor, "search": found, "failed_requests": failed}, indent=2))
    if failed:
        print(f"\nFAILED: {sum(failed.values())} request(s) did not succeed: "
              f"{', '.join(f'{where}: {n}' for where, n in failed.items())}", file=sys.stderr)
        sys.exit(1)


def failures(results: dict, floor: list[dict]) -> dict[str, int]:
    """Failed requests per (app, image size, concurrency, status): empty when every request succeeded."""
    runs = [(f"image_size {size}", levels) for size, (_, levels) in results.items()] + [("no-op", floor)]
    return {f"{name} C={lv['concurrency']} {kind}": n for name, levels in runs for lv in levels
            for kind, n in lv["error_kinds"].items()}


if __name__ == "__main__":
    main()
