"""The deployment model against the runtime: a trained Entropic Student's bundle on the torch-free device, the real
edge server on 127.0.0.1 (in a thread), and three emulated links. Per link: the latency p50 the model predicts from
a calibration run and the link model, the p50 the device client measures, and the error. The headline (last line)
is the largest error.

    python benchmarks/deploy_check.py [--out runs/quickstart] [--run RUN_DIR] [--requests 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import find_student_runs

from splitbench.deploy.check import CALIBRATION, check
from splitbench.deploy.links import LinkSpec

LINKS = [LinkSpec(name="1 Mbit/s up, 5 down, RTT 50 ms", uplink_mbps=1, downlink_mbps=5, rtt_ms=50),
         LinkSpec(name="5 Mbit/s up, 13 down, RTT 70 ms, 1% loss", uplink_mbps=5, downlink_mbps=13, rtt_ms=70,
                  loss=0.01),
         LinkSpec(name="0.3 Mbit/s up, 2 down, RTT 30 ms", uplink_mbps=0.3, downlink_mbps=2, rtt_ms=30)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="where the quickstart trained")
    parser.add_argument("--run", type=Path, help="a trained Entropic Student run folder (default: the first in --out)")
    parser.add_argument("--requests", type=int, default=32, help="measured requests per link (as many calibrate)")
    args = parser.parse_args()

    import torch

    from splitbench.runtime.app import ServeSettings, create_app
    from splitbench.runtime.dataset_inputs import dataset_samples
    from splitbench.runtime.device import Device
    from splitbench.runtime.export import export_run
    from splitbench.runtime.serve import ThreadedServer, free_port
    from splitbench.runtime.server import Server

    torch.set_num_threads(1)
    run = args.run or find_student_runs(args.out)[0]
    server = Server(run)
    d = server.config.data
    samples = dataset_samples(d.dataset, "val", 2 * args.requests, d.image_size, d.seed)
    settings = ServeSettings(port=free_port(), max_batch=8, max_delay_ms=2)
    with tempfile.TemporaryDirectory() as tmp, ThreadedServer(create_app(server, settings), settings) as url:
        device = Device(export_run(run, Path(tmp) / "bundle"), threads=1)
        rows = check(device, samples[:args.requests], samples[args.requests:], url, LINKS)
    print(f"run {run.name}; calibrated over {CALIBRATION.name}, {args.requests} requests per link, one at a time")
    print(f"{'link':44s} {'predicted p50':>14s} {'measured p50':>13s} {'error':>7s}")
    for row in rows:
        print(f"{row.link:44s} {row.predicted_ms:11.1f} ms {row.measured_ms:10.1f} ms {100 * row.error:+6.1f}%")
    worst = max(rows, key=lambda r: abs(r.error))
    print(f"model vs runtime: predicted latency p50 within {100 * abs(worst.error):.1f}% of the measured at all "
          f"{len(rows)} links (worst: {worst.link})")


if __name__ == "__main__":
    main()
