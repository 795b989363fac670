"""Does Ray Serve's ``serve.batch`` form batches under HTTP load? (No deeptrain code in the path.)

wrk posts to a FastAPI ingress that awaits a batched method: in the ingress itself (``--hops 1``) or on a second
deployment through a handle (``--hops 2``). The "model" takes 50 ms a batch without using the CPU
(``asyncio.sleep``), so any limit is Serve's delivery and batching, not the machine:

  serve-batch : ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0)``
  batcher     : deeptrain's ``serve/batcher.py`` (a batch forms when the model is free)
  none        : no batching, 50 ms per request (how concurrent the delivery is)

Measured on 2 cores, 32 connections, hops 2: serve-batch 24 requests/s at a mean batch of 1.2 (every request
that arrives during a pass becomes a batch of its own, queued behind it); none 244 requests/s.

    python bench/serve_batch_probe.py [--mode serve-batch batcher none] [--hops 1 2] [--seconds 6]
"""

import argparse
import asyncio
import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI, Request  # noqa: E402

from bench import serve_load  # noqa: E402

PASS_S = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(mode: str, hops: int):
    from ray import serve

    from serve.batcher import Batcher

    env = {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_SERVE_LOG_TO_STDERR": "0"}}

    class Work:
        def __init__(self) -> None:
            self.sizes: list[int] = []
            self.batcher = Batcher(self._pass, 32)

        async def _pass(self, xs: list[int]) -> list[int]:
            self.sizes.append(len(xs))
            await asyncio.sleep(PASS_S)
            return xs

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0)
        async def _serve_batched(self, xs: list[int]) -> list[int]:
            return await self._pass(xs)

        async def one(self, x: int) -> int:
            if mode == "serve-batch":
                return await self._serve_batched(x)
            if mode == "batcher":
                return await self.batcher.submit(x)
            return (await self._pass([x]))[0]

        def mean_batch(self) -> float:
            sizes, self.sizes = self.sizes, []
            return sum(sizes) / max(1, len(sizes))

    @serve.deployment(ray_actor_options={"num_cpus": 0, "runtime_env": env}, max_ongoing_requests=64)
    class Model(Work):
        pass

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 0, "runtime_env": env}, max_ongoing_requests=256)
    @serve.ingress(api)
    class Ingress(Work):
        def __init__(self, model=None) -> None:
            super().__init__()
            self.model = model

        @api.post("/x")
        async def x(self, request: Request) -> dict:
            body = await request.json()
            if self.model is None:
                return {"r": await self.one(len(body))}
            return {"r": await self.model.one.remote(len(body))}

        async def stats(self) -> float:
            return self.mean_batch() if self.model is None else await self.model.mean_batch.remote()

    return Ingress.bind(Model.bind()) if hops == 2 else Ingress.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", nargs="+", default=["serve-batch", "batcher", "none"],
                        choices=["serve-batch", "batcher", "none"])
    parser.add_argument("--hops", type=int, nargs="+", default=[2, 1], choices=[1, 2])
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    serve_load.require_wrk()
    import ray
    from ray import serve

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rows = []
    try:
        for hops in args.hops:
            for mode in args.mode:
                port = _free_port()
                serve.start(http_options={"host": "127.0.0.1", "port": port})
                serve.run(build(mode, hops), name="probe", route_prefix="/")
                level = serve_load.wrk(f"http://127.0.0.1:{port}", "/x", "none", [json.dumps({"a": 1})],
                                       args.concurrency, args.seconds)
                batch = serve.get_deployment_handle("Ingress", app_name="probe").stats.remote().result()
                rows.append({"mode": mode, "hops": hops, "rps": level["rps"], "p50_ms": level["p50_ms"],
                             "mean_batch": batch, "errors": level["errors"]})
                serve.shutdown()
    finally:
        ray.shutdown()
    if args.json:
        print(json.dumps({"concurrency": args.concurrency, "pass_s": PASS_S, "rows": rows}, indent=2))
        return
    print(f"C={args.concurrency}, a {PASS_S * 1000:.0f} ms pass that uses no CPU; {os.cpu_count()} CPUs")
    for r in rows:
        print(f"hops {r['hops']} {r['mode']:>11}: {r['rps']:7.1f} requests/s, p50 {r['p50_ms']:7.1f} ms, "
              f"mean batch {r['mean_batch']:.1f}, errors {r['errors']}")


if __name__ == "__main__":
    main()
