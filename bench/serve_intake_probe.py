"""How fast Ray Serve delivers concurrent requests to a busy batching replica, with no deeptrain code in it.

200 concurrent handle calls to a ``serve.batch`` method (max 32, no wait) whose handler runs 20 ms in a worker
thread that either sleeps (``sleep``: the GIL released, as torch's kernels release it), spins holding the GIL
(``gil``) or runs ResNext on a 32 px batch (``torch``). Prints the total time and the mean batch size.

    python bench/serve_intake_probe.py sleep|gil|torch
    PENV=RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 python bench/serve_intake_probe.py sleep   # replica env
"""
import asyncio, time, sys, os
import ray
from ray import serve
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
MODE = sys.argv[1]
@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 1, "runtime_env": {"env_vars": {
    k: v for k, v in (a.split("=") for a in os.environ.get("PENV", "").split(",") if a)}}})
class P:
    def __init__(self):
        self.sizes = []
        if MODE == "torch":
            import torch, timm
            torch.set_num_threads(1)
            self.m = timm.create_model("resnext50_32x4d", num_classes=10).eval()
            self.torch = torch
    def work(self, n):
        if MODE == "sleep":
            time.sleep(0.02)
        elif MODE == "gil":
            t = time.perf_counter()
            while time.perf_counter() - t < 0.02: pass
        else:
            with self.torch.no_grad():
                self.m(self.torch.randn(2 * n, 3, 32, 32))
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def b(self, xs):
        self.sizes.append(len(xs))
        await asyncio.to_thread(self.work, len(xs))
        return xs
    async def f(self, x):
        return await self.b(x)
    def stats(self):
        return self.sizes
serve.run(P.bind(), name="m", route_prefix=None)
h = serve.get_deployment_handle("P", app_name="m")
h.f.remote(0).result()
t = time.perf_counter()
rs = [h.f.remote(i) for i in range(200)]
[r.result() for r in rs]
el = time.perf_counter() - t
s = h.stats.remote().result()[1:]
print(MODE, "200 in %.2fs" % el, "batches", len(s), "mean", sum(s) / len(s))
serve.shutdown(); ray.shutdown()
