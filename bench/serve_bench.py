"""Online serving over loopback HTTP vs the bare model, in one run, at the image sizes users serve.

A ResNext classifier (trained for a few steps on Fashion-MNIST; what it learned does not matter here) at
each ``--image-size`` (256 is the template's default), served by ``deeptrain serve``'s Ray Serve app:

  bare batched : the version's own predict (flip averaging included, its inference graph) on preprocessed
                 batches, images/s, the best of 1 and 2 torch threads, of batch sizes 1 to 32 (on CPU a small
                 batch is often the fastest per image at large sizes) and of as many threads side by side as
                 the Predictor reserves CPUs, each on one torch thread (the Predictor's lanes)
  bare single  : the same on one image, p50 ms (best of 1 and 2 threads)
  layout       : gateway -> Predictor deployment (two hops, the default), or ``--model-in-gateway`` (one hop)
  HTTP         : ``POST /v2/apps/bench/models/clf/outputs``, one base64 PNG per request, from ``wrk`` with C
                 connections for C = 1, 8, 32 (each level runs --seconds, after a warm-up); successful
                 responses/s, p50, p99, the mean size of the batches the Predictor ran during the level and
                 its ms per pass (its counter, ``Predictor.stats``, read through ``Gateway.predictor_stats``).
                 Any failed request: exit status 1
  many inputs  : requests of 32 inputs each (C = 1), images/s (32 / the mean latency)
  no-op Serve  : the same app shape (FastAPI ingress -> one handle call to a second deployment, the same actor
                 options) doing no work, under the same load: the ceiling of any model behind Ray Serve here

Targets (issue #23, 2 cores): C=32 images/s >= 0.85 x bare batched at 256, >= 0.75 at 128; at 32 the app
>= 0.8 x the no-op ceiling; C=1 p50 <= bare single + 15 ms at 128; 32 inputs a request >= 0.9 x bare batched.
``wrk`` runs on the same cores as the server: its share of them is reported per level.

    python bench/serve_bench.py [--image-size 256 128 32] [--seconds 12] [--json out.json]
                                [--predictor-cpus 2] [--model-in-gateway]   # one hop: the model in the gateway
                                [--ingress haproxy]   # HAProxy takes HTTP instead of Serve's proxy actor
                                [--profile DIR]   # py-spy on the replicas during C=32 at each size

Search at 1,000,000 vectors: ``bench/search_bench.py``.
"""

from __future__ import annotations

import argparse
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

from bench import serve_load  # noqa: E402
from deeptrain.config import Settings  # noqa: E402
from deeptrain.sample_data import write_fashion_mnist_folder  # noqa: E402
from deeptrain.sdk import Client  # noqa: E402

CONCURRENCY = (1, 8, 32)
MANY = 32  # inputs per request on the "many inputs" line
PATH = "/v2/apps/bench/models/clf/outputs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare(loaded, images: list[bytes], rounds: int, lanes: int = 2) -> dict[str, float]:
    """The model alone, at its best, through what it predicts with (``deeptrain.inference.predict_model``: its
    inference graph): images/s on preprocessed batches, the best of 1 and 2 torch threads, of batch sizes 1..32
    (up to 32 x 128 x 128 pixels), and of ``lanes`` threads each running its own forwards on one torch thread;
    p50 ms on one image (the best thread count)."""
    import torch

    from deeptrain.inference import model_input, predict_model, prepare
    from deeptrain.models.tasks import predict_with_flips

    flips, size = loaded.params.average_horizontal_flips, loaded.manifest["preprocessing"]["image_size"]
    prepared = [prepare(loaded, images[k % len(images)]) for k in range(32)]
    net = predict_model(loaded)

    def timed(x, n: int) -> list[float]:
        with torch.no_grad():
            predict_with_flips(net, "classification", x, flips)  # warm-up
            out = []
            for _ in range(n):
                start = time.perf_counter()
                predict_with_flips(net, "classification", x, flips)
                out.append(time.perf_counter() - start)
        return out

    found: dict[str, float] = {"batched_ips": 0.0, "single_p50_ms": float("inf")}
    before = torch.get_num_threads()
    batches = [b for b in (1, 2, 4, 8, 16, 32) if b * size * size <= 32 * 128 * 128]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        p50 = 1000 * statistics.median(timed(model_input(loaded, prepared[:1]), rounds * 2))
        if p50 < found["single_p50_ms"]:
            found.update(single_p50_ms=p50, single_threads=threads)
        for batch in batches:
            ips = batch / statistics.median(timed(model_input(loaded, prepared[:batch]), rounds))
            if ips > found["batched_ips"]:
                found.update(batched_ips=ips, batched_threads=threads, batched_batch=batch, batched_lanes=1)
    torch.set_num_threads(before)
    for batch in batches:
        ips = lanes_ips(timed, model_input(loaded, prepared[:batch]), batch, lanes, rounds)
        if ips > found["batched_ips"]:
            found.update(batched_ips=ips, batched_threads=1, batched_batch=batch, batched_lanes=lanes)
    return found


def lanes_ips(timed, x, batch: int, lanes: int, rounds: int) -> float:
    """images/s of ``lanes`` threads each timing ``rounds`` forwards of ``x`` on one torch thread, side by side."""
    import threading

    import torch

    def lane() -> None:
        torch.set_num_threads(1)
        timed(x, rounds)

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lanes * (rounds + 1) * batch / (time.perf_counter() - start)


def bodies(images: list[bytes], per_request: int, count: int = 64) -> list[str]:
    b64 = [base64.b64encode(d).decode() for d in images]
    return [json.dumps({"inputs": [{"data": {"image": {"base64": b64[(k * per_request + j) % len(b64)]}}}
                                   for j in range(per_request)]}) for k in range(count)]


def levels(url: str, key: str, images: list[bytes], args, stats=None, profile_dir: Path | None = None) -> list[dict]:
    """The load levels of CONCURRENCY, one image a request; ``stats``: the Predictor's batch counter."""
    one = bodies(images, 1)
    serve_load.warm(url, PATH, key, one)
    found = []
    for c in CONCURRENCY:
        before = stats() if stats else None
        spies = serve_load.profile(args.seconds, profile_dir) if profile_dir and c == CONCURRENCY[-1] else []
        cpu_before = serve_load.cpu_snapshot()
        level = serve_load.wrk(url, PATH, key, one, c, args.seconds)
        cpu_after = serve_load.cpu_snapshot()
        for spy in spies:
            spy.wait(timeout=120)
        after = stats() if stats else None
        level["mean_batch_size"] = level["forward_ms"] = None
        forward_cpu = None
        if before and after and after["batches"] > before["batches"]:
            batches = after["batches"] - before["batches"]
            level["mean_batch_size"] = (after["items"] - before["items"]) / batches
            level["forward_ms"] = 1000 * (after["seconds"] - before["seconds"]) / batches  # a pass in the replica
            forward_cpu = after.get("cpu_seconds", 0.0) - before.get("cpu_seconds", 0.0)
        level["cpu_shares"] = serve_load.cpu_shares(cpu_before, cpu_after, forward_cpu)
        found.append(level)
    return found


def serving(work: Path, images: list[bytes], image_size: int, args) -> dict:
    from ray import serve

    from serve.app import start, stop

    env = {"DEEPTRAIN_HOME": str(work / f"home-{image_size}")}
    if args.max_batch_pixels:
        env["DEEPTRAIN_SERVE_MAX_BATCH_PIXELS"] = str(args.max_batch_pixels)
    client = Client(Settings.from_env(env=env))
    client.create_app("bench")
    client.import_inputs("bench", work / "train", format="imagefolder", split="train")
    client.import_inputs("bench", work / "test", format="imagefolder", split="test")
    client.create_model("bench", "clf", "classification", "ResNext",
                        {"image_size": image_size, "num_epochs": 1, "batch_size": 20, "num_items_per_epoch": 40,
                         "lrate": 0.05})
    version = client.train("bench", "clf", workers=1)
    assert version["status"] == "trained", version["error"]
    base = bare(client.load_version("bench", "clf"), images, args.rounds, lanes=max(1, int(args.predictor_cpus)))
    key = client.create_key("bench", ["predict"])["key"]
    url = start(client.settings, "127.0.0.1", _free_port(), predictor_cpus=args.predictor_cpus,
                model_in_gateway=args.model_in_gateway, ingress=args.ingress)
    try:
        handle = serve.get_deployment_handle("Gateway", app_name="deeptrain")

        def stats() -> dict | None:  # None: a deeptrain before the counter (issue 23's "before" runs)
            try:
                return handle.predictor_stats.remote().result()
            except Exception:  # noqa: BLE001
                return None
        profile_dir = args.profile / f"image_size_{image_size}" if args.profile else None
        found = levels(url, key, images, args, stats, profile_dir)
        many = bodies(images, MANY)
        serve_load.warm(url, PATH, key, many, 2)
        line = serve_load.wrk(url, PATH, key, many, 1, args.seconds)
        # images/s from the mean latency (one connection: a request every mean latency), not from the requests
        # completed in the level: at 256 px three or four requests of 32 fit in it, so that count moves in steps
        # of a quarter of the rate (12.0 images/s for anything from 12 to 16)
        line.update(inputs_per_request=MANY, ips=MANY * 1000 / line["mean_ms"], ips_completed=line["rps"] * MANY)
    finally:
        stop()
    for level in found:
        level["ips"] = level["rps"]
    frames = {}
    if profile_dir:
        frames = {f.stem: serve_load.top_frames(f) for f in sorted(profile_dir.glob("*.txt")) if f.stat().st_size}
    return {"bare": base, "levels": found, "many_inputs": line, "profile": frames}


def ceiling(images: list[bytes], args) -> list[dict]:
    """The load levels against the no-op app."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(serve_load.noop_app(args.predictor_cpus, args.model_in_gateway), name="floor", route_prefix="/")
    try:
        return levels(f"http://127.0.0.1:{port}", "none", images, args)
    finally:
        serve.shutdown()


def targets(size: int, result: dict, floor: list[dict]) -> dict[str, tuple[float, float]]:
    """(measured, target) per acceptance line that applies at this image size."""
    base, c1, c32 = result["bare"], result["levels"][0], result["levels"][-1]
    found = {"32 inputs a request / bare batched": (result["many_inputs"]["ips"] / base["batched_ips"], 0.9)}
    if size in (256, 128):
        found[f"C=32 / bare batched at {size}"] = (c32["ips"] / base["batched_ips"], 0.85 if size == 256 else 0.75)
    if size == 128:
        found["-C=1 p50 overhead ms"] = (-(c1["p50_ms"] - base["single_p50_ms"]), -15.0)
    if size == 32:
        found["C=32 / no-op ceiling"] = (c32["ips"] / floor[-1]["rps"], 0.8)
    return found


def attainable(result: dict, floor: list[dict]) -> float:
    """Images/s the app could reach at C=32 if it added nothing to Ray Serve's path and the model: the no-op
    app's machine time per request plus the bare batched forward's per image, both on the same cores."""
    return 1 / (1 / floor[-1]["rps"] + 1 / result["bare"]["batched_ips"])


def report(results: dict, floor: list[dict], layout: str) -> None:
    print(f"\nserving ({layout}): ResNext classifier, flip averaging on, Fashion-MNIST PNGs, {os.cpu_count()} CPUs; "
          "load: wrk")
    for size, r in results.items():
        base = r["bare"]
        print(f"\nimage_size {size}: bare batched {base['batched_ips']:.1f} images/s (batch {base['batched_batch']}, "
              f"{base['batched_lanes']} lane(s) of {base['batched_threads']} thread(s)), "
              f"bare single p50 {base['single_p50_ms']:.1f} ms")
        print(f"{'C':>3} {'requests':>8} {'errors':>6} {'images/s':>9} {'vs bare':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'p50-bare':>9} {'batch':>6} {'fwd ms':>7} {'wrk cpu':>8}")
        for lv in r["levels"]:
            print(f"{lv['concurrency']:>3} {lv['requests']:>8} {lv['errors']:>6} {lv['ips']:9.1f} "
                  f"{lv['ips'] / base['batched_ips']:8.2f} {lv['p50_ms']:8.1f} {lv['p99_ms']:8.1f} "
                  f"{lv['p50_ms'] - base['single_p50_ms']:9.1f} {lv['mean_batch_size'] or float('nan'):6.1f} "
                  f"{lv['forward_ms'] or float('nan'):7.1f} "
                  f"{lv['generator_cpu_share']:8.1%}")
        print("where the cores went at C=32: " + ", ".join(
            f"{name} {share:.1%}" for name, share in r["levels"][-1]["cpu_shares"].items()))
        many = r["many_inputs"]
        print(f"{MANY} inputs a request (C=1): {many['ips']:.1f} images/s = {many['ips'] / base['batched_ips']:.2f} "
              f"x bare batched, p50 {many['p50_ms']:.1f} ms")
        bound = attainable(r, floor)
        print(f"attainable at C=32 (no-op path + bare batched forward, same cores): {bound:.1f} images/s = "
              f"{bound / floor[-1]['rps']:.2f} x the no-op ceiling; the app reached "
              f"{r['levels'][-1]['ips'] / bound:.2f} of it")
        for name, (got, want) in targets(size, r, floor).items():
            sign = -1 if name.startswith("-") else 1
            print(f"target {name.lstrip('-')}: {sign * got:.2f} (target {sign * want:g}: "
                  f"{'met' if got >= want else 'MISSED'})")
        for replica, frames in r["profile"].items():
            print(f"  py-spy {replica} ({frames['busy_samples']} busy samples): " + "; ".join(
                f"{f} {share:.0%}" for f, share in frames["self"][:5]))
    print("\nno-op Serve app (same shape and actor options, no store, no decode, no model):")
    for lv in floor:
        print(f"C={lv['concurrency']:>2}: {lv['rps']:.1f} requests/s, p50 {lv['p50_ms']:.1f} ms, p99 "
              f"{lv['p99_ms']:.1f} ms, wrk cpu {lv['generator_cpu_share']:.1%}; cores: " + ", ".join(
                  f"{name} {share:.1%}" for name, share in lv["cpu_shares"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, nargs="+", default=[256, 128, 32])
    parser.add_argument("--seconds", type=float, default=12, help="seconds per level (at most)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds of the bare forward")
    parser.add_argument("--predictor-cpus", type=float, default=1, help="CPUs the Predictor replica reserves")
    parser.add_argument("--model-in-gateway", action="store_true",
                        help="serve with the model in the gateway's replica (one hop) instead of a Predictor")
    parser.add_argument("--ingress", choices=["proxy", "haproxy"], default="proxy",
                        help="what takes HTTP: Ray Serve's proxy actor or HAProxy (serve/ingress.py), for both apps")
    parser.add_argument("--max-batch-pixels", type=int,
                        help="the server's serve_max_batch_pixels (default: the setting's default)")
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of the replicas at C=32 here")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    serve_load.require_wrk()

    import ray

    from serve.ingress import local_ray_env

    os.environ.update(local_ray_env(args.ingress))  # read by Ray's processes when they start
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="deeptrain-serve-bench-"))
    try:
        # a few steps of training: what the model learns does not matter here
        write_fashion_mnist_folder(work / "train", "train", per_class=4)
        write_fashion_mnist_folder(work / "test", "test", per_class=10)
        images = [p.read_bytes() for p in sorted((work / "test").rglob("*.png"))]
        results = {size: serving(work, images, size, args) for size in args.image_size}
        floor = ceiling(images, args)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    layout = ("model in the gateway, one hop" if args.model_in_gateway else "gateway -> Predictor, two hops") + (
        ", HAProxy ingress" if args.ingress == "haproxy" else ", Ray Serve's HTTP proxy")
    report(results, floor, layout)
    failed = {f"{size} C={lv['concurrency']}": lv["errors"] for size, r in results.items()
              for lv in [*r["levels"], r["many_inputs"]] if lv["errors"]}
    failed.update({f"no-op C={lv['concurrency']}": lv["errors"] for lv in floor if lv["errors"]})
    if args.json:
        args.json.write_text(json.dumps({"layout": layout, "serving": {str(s): r for s, r in results.items()}, "noop_serve": floor,
                                         "targets": {str(s): targets(s, r, floor) for s, r in results.items()},
                                         "attainable_c32_ips": {str(s): attainable(r, floor)
                                                                for s, r in results.items()},
                                         "failed_requests": failed}, indent=2))
    if failed:
        print(f"\nFAILED: requests did not succeed: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
