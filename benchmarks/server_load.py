"""Load on the edge server: closed-loop concurrency 1/4/16/64 and open-loop Poisson arrivals, batching on vs off.

The server runs as its own process (``splitbench serve RUN_DIR`` on 127.0.0.1, a free port), so the load
generator does not share its interpreter; each setting sends a bounded number of requests, each with a timeout.
The streams are real ones of the run (the device's coder, on validation images). Prints one row per setting:
throughput, p50/p90/p99 latency, mean batch size, refusals; the headline (last line) is batching's speed-up.

    python benchmarks/server_load.py [--run RUN_DIR] [--requests 256] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from _common import find_student_runs

from splitbench.runtime.client import percentiles
from splitbench.runtime.protocol import FINGERPRINT_HEADER, HEALTH, INFER, MODEL
from splitbench.runtime.serve import free_port

CONCURRENCY = (1, 4, 16, 64)
BATCHING = {"on": ["--max-batch", "16", "--max-delay-ms", "5"], "off": ["--max-batch", "1", "--max-delay-ms", "0"]}


def streams_and_model_rows(run: Path, count: int) -> tuple[list[bytes], list[dict]]:
    """``count`` bitstreams of the run's validation images, coded as the torch-free device codes them, and the
    model's own throughput on them at batch 1 and 16 in this process (no HTTP): what batching can gain at most."""
    import torch

    from splitbench.data import get_dataset
    from splitbench.pipelines import LearnedPipeline
    from splitbench.runtime.server import Server

    torch.set_num_threads(1)
    server = Server(run)
    d = server.config.data
    data = get_dataset(d.dataset, "val", image_size=d.image_size, num_samples=count, seed=d.seed,
                       train_transforms=False)
    images = torch.stack([data[i][0] for i in range(len(data))])
    streams = LearnedPipeline(server.pipeline.network, backend="constriction").mobile(images)
    rows = []
    for batch in (1, 16):
        server.answer(streams[:batch])
        start = time.perf_counter()
        for i in range(0, len(streams), batch):
            server.answer(streams[i:i + batch])
        rows.append({"setting": f"model only (no HTTP), batch {batch}", "req_s": len(streams) / (
            time.perf_counter() - start), "p50": 0.0, "p90": 0.0, "p99": 0.0, "batch": float(batch), "refused": 0})
    return streams, rows


class Served:
    """``splitbench serve`` in a subprocess, waited for, and always stopped."""

    def __init__(self, run: Path, options: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
        self.process = subprocess.Popen([sys.executable, "-m", "splitbench.cli", "--no-progress", "serve", str(run),
                                         "--port", str(self.port), "--queue-size", "1024", *options],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> Served:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the server exited: {self.process.stderr.read().decode()[-500:]}")
            try:
                if httpx.get(self.url + HEALTH, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        self.__exit__()
        sys.exit("the server did not start within 120 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def one(client: httpx.AsyncClient, body: bytes, fingerprint: str, out: list) -> None:
    start = time.perf_counter()
    try:
        r = await client.post(INFER, content=body, headers={FINGERPRINT_HEADER: fingerprint})
        size = r.json().get("batch_size", 0) if r.status_code == 200 else 0
        out.append((r.status_code, time.perf_counter() - start, size))
    except httpx.HTTPError:
        out.append((0, time.perf_counter() - start, 0))


async def closed_loop(url: str, streams: list[bytes], fingerprint: str, concurrency: int, requests: int) -> tuple:
    """``concurrency`` clients, each sending its next request when its last is answered."""
    out: list = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        counter = iter(range(requests))

        async def worker() -> None:
            for i in counter:
                await one(client, streams[i % len(streams)], fingerprint, out)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return out, time.perf_counter() - start


async def open_loop(url: str, streams: list[bytes], fingerprint: str, rate: float, requests: int) -> tuple:
    """Poisson arrivals at ``rate`` per second, whatever the server's pace (seeded)."""
    out: list = []
    gaps = np.random.default_rng(0).exponential(1 / rate, requests)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        start = time.perf_counter()
        tasks, due = [], start
        for i, gap in enumerate(gaps):
            due += gap
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(client, streams[i % len(streams)], fingerprint, out)))
        await asyncio.gather(*tasks)
        return out, time.perf_counter() - start


def row(name: str, out: list, seconds: float) -> dict:
    ok = [(t, s) for code, t, s in out if code == 200]
    p = percentiles([1000 * t for t, _ in ok])
    return {"setting": name, "req_s": len(ok) / seconds, "p50": p.get("p50", 0), "p90": p.get("p90", 0),
            "p99": p.get("p99", 0), "batch": float(np.mean([s for _, s in ok])) if ok else 0.0,
            "refused": len(out) - len(ok)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained factorized-prior student (default: runs/quickstart's)")
    parser.add_argument("--requests", type=int, default=256, help="requests per setting")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop arrivals per second")
    args = parser.parse_args()
    run = args.run or next(r for r in find_student_runs(Path("runs/quickstart")) if "-fp-" in r.name)
    streams, rows = streams_and_model_rows(run, 64)
    for batching, options in BATCHING.items():
        with Served(run, options) as served:
            fingerprint = httpx.get(served.url + MODEL, timeout=10).json()["fingerprint"]
            asyncio.run(closed_loop(served.url, streams, fingerprint, 4, 32))  # warm-up
            for c in CONCURRENCY:
                rows.append(row(f"batching {batching}, closed loop c={c}",
                                *asyncio.run(closed_loop(served.url, streams, fingerprint, c, args.requests))))
            rows.append(row(f"batching {batching}, open loop {args.rate:g}/s",
                            *asyncio.run(open_loop(served.url, streams, fingerprint, args.rate, args.requests))))
    print(f"run: {run.name}, {len(streams[0])}-byte streams, {args.requests} requests per setting, "
          f"{os.cpu_count()} CPUs")
    print(f"{'setting':38} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'batch':>6} {'refused':>7}")
    for r in rows:
        print(f"{r['setting']:38} {r['req_s']:8.1f} {r['p50']:8.1f} {r['p90']:8.1f} {r['p99']:8.1f} "
              f"{r['batch']:6.1f} {r['refused']:7d}")
    on, off = (next(r for r in rows if r["setting"] == f"batching {b}, closed loop c=64") for b in ("on", "off"))
    alone, batched = rows[0]["req_s"], rows[1]["req_s"]
    print(f"dynamic batching on/off at 64 concurrent clients: {on['req_s'] / off['req_s']:.2f}x the throughput "
          f"({on['req_s']:.0f} vs {off['req_s']:.0f} req/s; p99 {on['p99']:.0f} vs {off['p99']:.0f} ms); the model "
          f"alone gains {batched / alone:.1f}x from batch 16")


if __name__ == "__main__":
    main()
