"""The deployment model: per image, the end-to-end latency and the device's energy of one configuration over one
link at one arrival rate.

A configuration (:class:`Option`) is what the device does per image: compute alone (**local computing**, the whole
model on the device), or one or more requests, each a device computation, an upload and a server answer (a split
at one rate point; **full offloading**, the raw image or a codec's file; three single-task students: three
requests). Its latency is the runtime's: device network + encode, uplink (wire bytes incl. HTTP headers, at the
link's rate, RTT, loss retransmissions), server queue + decode + network (+ HTTP transport), downlink of the
answer — with the transfers scheduled on :mod:`splitbench.runtime.link`'s FIFO link model, the same one the
device client emulates, so a prediction and a measurement share one link model. With loss (or a trace) the
latency is a distribution: the model samples it over seeded links (trace phases) and reports its p50.

Energy per image = compute (the profile's compute power x device compute time, idle power while waiting for the
answer) + radio: transmit (active power x transfer time, at the transfer's rate) and the session around it —
tail energy of the gaps between transfers and until the next image (1/rate later), and the promotion after a gap
the tail does not cover (:class:`~splitbench.deploy.radio.Radio`). ``session_j`` is the radio's whole share per
image, transmit included; ``device_j`` = compute + session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from splitbench.deploy.links import DeployLink
from splitbench.deploy.profiles import DeviceProfile, Power, ServerProfile
from splitbench.errors import SplitbenchError
from splitbench.runtime.client import infer_request_bytes
from splitbench.runtime.link import Transfer

LOCAL, SPLIT, OFFLOAD = "local computing", "split", "full offloading"
SAMPLES = 101  # link draws for a lossy link or a trace


@dataclass(frozen=True)
class Request:
    """One request of a configuration: device compute before it, bytes each way, the server's ms per stage."""

    device_ms: float
    request_bytes: float  # on the wire: payload + HTTP request line and headers
    response_bytes: float
    server_ms: dict[str, float]  # server_queue, server_decode, server_network, other

    @property
    def server_total_ms(self) -> float:
        return sum(self.server_ms.values())


@dataclass(frozen=True)
class Option:
    """A deployable configuration: its name, kind (local / split / full offloading), accuracy, what it does."""

    label: str
    kind: str
    metric: float | None
    requests: tuple[Request, ...] = ()
    local_ms: float = 0.0  # device compute with no network (local computing)
    sources: str = ""  # where its times come from
    record: dict | None = None

    @property
    def device_ms(self) -> float:
        return self.local_ms + sum(r.device_ms for r in self.requests)


def request(record: dict, device: DeviceProfile, server: ServerProfile) -> tuple[Request, str]:
    """One record's request (payload: its mean bytes per sample) and where its times come from."""
    payload = float(record["data_size"]["bytes_mean"])
    device_ms, device_source = device.compute_ms(record)
    server_ms, server_source = server.stages_ms(record)
    headers = device.request_header_bytes(record) or infer_request_bytes(round(payload))
    req = Request(device_ms, payload + headers, server.response_bytes(record), server_ms)
    return req, f"device: {device_source}; server: {server_source}"


@dataclass(frozen=True)
class Estimate:
    option: Option
    link: str
    rate: float | None  # images per second; None: one isolated request
    latency_ms: float  # p50
    stages_ms: dict[str, float]  # mean ms per stage (device, uplink, server, downlink)
    promotion_ms: float  # what the radio's promotion adds when a request finds it idle (not in latency_ms)
    compute_j: float
    transmit_j: float
    session_j: float  # the radio's energy per image: transmit + its share of promotion and tail
    saturated: bool  # images arrive faster than the device or the link can serve them

    @property
    def device_j(self) -> float:
        return self.compute_j + self.session_j


def _mbps(transfer: Transfer, nbytes: float) -> float:
    return nbytes * 8 / transfer.serialization_s / 1e6 if transfer.serialization_s > 0 else 0.0


def _active_s(transfer: Transfer) -> float:
    return transfer.serialization_s + transfer.retransmission_s


def _one(option: Option, link: DeployLink, period_s: float, seed: int, phase: float) -> dict[str, float]:
    """One draw of the link: the option's timeline, its latency and energy parts."""
    runtime = link.build(2 * seed)  # uplink and downlink draw their losses from seeds 2k and 2k + 1
    period_ms = runtime.uplink.describe().get("trace_period_ms")
    if period_ms:  # a trace: start at a drawn phase of it
        for direction in (runtime.uplink, runtime.downlink):
            direction.origin_s = -phase * period_ms / 1000
    radio = link.radio
    t = option.local_ms / 1000
    done, active, parts = t, [], {"device": option.local_ms, "uplink": 0.0, "server": 0.0, "downlink": 0.0}
    transmit = 0.0
    for request in option.requests:
        t += request.device_ms / 1000  # the device's one encoder: requests computed one after another
        up = runtime.uplink.schedule(int(math.ceil(request.request_bytes)), t)
        answered = up.done_s + request.server_total_ms / 1000
        down = runtime.downlink.schedule(int(math.ceil(request.response_bytes)), answered)
        done = max(done, down.done_s)
        parts["device"] += request.device_ms
        parts["uplink"] += up.delay_s * 1000
        parts["server"] += request.server_total_ms
        parts["downlink"] += down.delay_s * 1000
        active += [(up.done_s - up.propagation_s - _active_s(up), up.done_s - up.propagation_s),
                   (down.done_s - down.propagation_s - _active_s(down), down.done_s - down.propagation_s)]
        if radio is not None:
            transmit += radio.transfer_j(_active_s(up), up_mbps=_mbps(up, request.request_bytes))
            transmit += radio.transfer_j(_active_s(down), down_mbps=_mbps(down, request.response_bytes))
    latency_s = done
    session, promotion_s, span = transmit, 0.0, 0.0
    if radio is not None and active:
        active.sort()
        end = active[0][1]
        for start, stop in active[1:]:  # the radio's waits inside one image: tail phases (and any promotion)
            session += radio.gap_j(start - end) if start > end else 0.0
            end = max(end, stop)
        span = end - active[0][0]
        gap = period_s - span
        session += radio.gap_j(gap)
        promotion_s = radio.promotion_s(gap)
    return {"latency": latency_s * 1000, "transmit": transmit, "session": session, "promotion": promotion_s * 1000,
            "span": span, **{f"stage_{k}": v for k, v in parts.items()}}


def estimate(option: Option, link: DeployLink, rate: float | None = None, power: Power | None = None) -> Estimate:
    """``option`` over ``link`` with images arriving at ``rate`` per second (None: one isolated request).
    ``power``: the device profile's :class:`~splitbench.deploy.profiles.Power` (None: no compute energy)."""
    if rate is not None and not rate > 0:
        raise SplitbenchError(f"the arrival rate must be positive images/s, got {rate}")
    period_s = math.inf if rate is None else 1 / rate
    spec = link.spec
    draws = 1 if spec.loss == 0 and spec.trace is None else SAMPLES
    phases = np.random.default_rng(0).uniform(0, 1, draws)
    runs = [_one(option, link, period_s, seed, phases[seed]) for seed in range(draws)]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    latency = float(np.percentile([r["latency"] for r in runs], 50))
    compute_j = 0.0
    if power is not None:
        busy_s = option.device_ms / 1000
        compute_j = power.compute_w * busy_s + power.idle_w * max(0.0, mean["latency"] / 1000 - busy_s)
    saturated = option.device_ms / 1000 > period_s or mean["span"] > period_s
    stages = {k.removeprefix("stage_"): v for k, v in mean.items() if k.startswith("stage_")}
    return Estimate(option, link.label, rate, latency, stages, mean["promotion"], compute_j, mean["transmit"],
                    mean["session"], saturated)


def reduction(value: float, reference: float) -> float | None:
    """How much lower ``value`` is than ``reference``, in % of it, as papers state it ("95.4% lower")."""
    return None if reference <= 0 else 100 * (reference - value) / reference
