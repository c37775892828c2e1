"""The deployment model checked against the runtime: measure a configuration's stages once on an unlimited link
(the calibration), predict its latency over emulated links from that measurement and the link model, and compare
with what the device client measures through the real server over those links.

What the check tests is everything the model adds to measured compute: the bytes on the wire (payload + HTTP
headers, the answer), their serialisation at each rate, the RTT and loss, and how the stages add up. Torch-free:
the caller brings the device (an :class:`~splitbench.runtime.client.Encoder`), the samples and the server's URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitbench.deploy.links import DeployLink, LinkSpec
from splitbench.deploy.model import SPLIT, Option, estimate, request
from splitbench.deploy.profiles import DeviceProfile, Power, ServerProfile, ServerProfileFile, Timing, parse_measured
from splitbench.runtime.client import ClientOptions, Encoder, profile, run_device
from splitbench.runtime.inputs import Sample


@dataclass(frozen=True)
class CheckRow:
    link: str
    predicted_ms: float
    measured_ms: float

    @property
    def error(self) -> float:
        return (self.predicted_ms - self.measured_ms) / self.measured_ms


def profiles_from(measured: dict) -> tuple[DeviceProfile, ServerProfile, dict]:
    """Device and server profiles holding one calibration measurement, and a record of its configuration."""
    key, found = parse_measured(measured, Path("calibration"))
    power = Power(compute_w=1.0, idle_w=0.0, source="not used by the latency check")
    device = DeviceProfile("calibration", "measured on this machine", power, Timing(source="measured"), {key: found})
    server = ServerProfile(ServerProfileFile(name="calibration", source="measured on loopback"), {key: found})
    record = {"method": "split", "run": measured["run"], "data_size": {"bytes_mean": found.bytes["payload"]}}
    return device, server, record


def predict_ms(measured: dict, spec: LinkSpec) -> float:
    """The model's latency p50 (ms) over ``spec`` for the configuration ``measured`` was calibrated on."""
    device, server, record = profiles_from(measured)
    req, sources = request(record, device, server)
    option = Option(str(measured["run"]), SPLIT, None, (req,), sources=sources, record=record)
    return estimate(option, DeployLink(spec, None, spec.name or "link")).latency_ms


CALIBRATION = LinkSpec(name="calibration: no rate limit, RTT 50 ms", rtt_ms=50)


def check(encoder: Encoder, calibration: Sequence[Sample], samples: Sequence[Sample], url: str,
          links: Sequence[LinkSpec], calibrate_over: LinkSpec = CALIBRATION, chunk: int = 4) -> list[CheckRow]:
    """For each link: calibrate on ``calibration`` over ``calibrate_over``, predict ``samples`` over the link from
    that calibration, and measure them (one request at a time, as the model assumes).

    The calibration link has an RTT (and no rate limit) so that its requests leave the machine idle between network
    events as the checked links do: on a shared CPU, each wake-up after an idle wait costs scheduling time that
    back-to-back requests never pay, and the calibration should measure the same transport as the deployment.
    Calibration and measurement alternate in chunks of ``chunk`` requests, so a drifting load on a shared machine
    falls on both alike."""
    options = ClientOptions(url, concurrency=1)
    rows = []
    for spec in links:
        link = DeployLink(spec, None, spec.name or "link")
        calibrated, measured = [], []
        for start in range(0, max(len(calibration), len(samples)), chunk):
            seed = start // chunk
            for todo, over, out in ((calibration, calibrate_over, calibrated), (samples, spec, measured)):
                if todo[start:start + chunk]:
                    run = run_device(encoder, todo[start:start + chunk], options,
                                     DeployLink(over, None, "").build(seed))
                    out.append(run)
        merged = {**calibrated[0], "images": [e for r in calibrated for e in r["images"]]}
        totals = [e["ms"]["total"] for r in measured for e in r["images"] if e["status"] == "ok"]
        rows.append(CheckRow(link.label, predict_ms(profile(merged), spec), float(np.percentile(totals, 50))))
    return rows
