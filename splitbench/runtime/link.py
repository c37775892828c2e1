"""A user-space model of the device's wireless link, for emulating it (the client sleeps) and for predicting it.

There is no netem here, so the device client delays each message itself by what this model says the link
would take; the latency it measures then includes the link. Each direction (uplink: request, downlink:
response) is one FIFO link, shared by every request in flight, with an explicit clock, so the model is
deterministic and testable without waiting:

* **rate**: a message of ``n`` bytes occupies the link for ``n·8 / rate`` seconds (serialisation), after the
  messages queued before it (``queue``);
* **propagation**: RTT/2 per direction, after the last byte is sent;
* **loss**: each ``PACKET_BYTES`` packet is lost with probability ``loss``, independently (seeded); each loss
  costs one extra RTT (the sender notices) plus the packet's resend (serialisation again; a resend can be lost
  too). Losses are repaired one after another: a pessimistic, TCP-like stop-and-wait, simple to predict;
* **trace** (instead of a rate): a Mahimahi trace, one line per packet delivery opportunity, a millisecond
  timestamp at which one ``PACKET_BYTES`` packet may leave; the trace loops with the period of its last line.
  A message of ``k`` packets leaves with the ``k``-th free opportunity at or after it is sent.

Bytes are what HTTP puts on the wire (request line, headers, body); TCP/IP headers and handshakes are not
modelled. Torch-free: the device client imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from splitbench.errors import SplitbenchError

PACKET_BYTES = 1500


@dataclass(frozen=True)
class Transfer:
    """One message over one direction: when it was sent, when its last byte arrives, and why it took that long."""

    sent_s: float
    done_s: float
    queue_s: float  # waiting behind earlier messages on the same direction
    serialization_s: float
    propagation_s: float
    retransmission_s: float
    lost_packets: int

    @property
    def delay_s(self) -> float:
        return self.done_s - self.sent_s


class Direction(Protocol):
    """One direction of a link: schedules messages at a given time (seconds on the caller's clock)."""

    def schedule(self, nbytes: int, now: float) -> Transfer: ...

    def describe(self) -> dict: ...


def packets(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / PACKET_BYTES))


@dataclass
class Losses:
    """Independent packet loss with probability ``p``: how many transmissions of ``n`` packets are lost."""

    p: float = 0.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise SplitbenchError(f"loss is a probability in [0, 1), got {self.p}")
        self.rng = np.random.default_rng(self.seed)

    def lost(self, n: int) -> int:
        """Losses before each of ``n`` packets gets through (a resend may be lost again)."""
        return 0 if self.p == 0 else int((self.rng.geometric(1 - self.p, size=n) - 1).sum())


@dataclass
class RateDirection:
    """A direction of ``rate_bps`` bits/s (None: no serialisation delay), ``rtt_s`` round trip, ``losses``."""

    rate_bps: float | None
    rtt_s: float = 0.0
    losses: Losses = field(default_factory=Losses)
    busy_until: float = -math.inf

    def __post_init__(self) -> None:
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise SplitbenchError(f"a link rate must be positive, got {self.rate_bps} bit/s")
        if self.rtt_s < 0:
            raise SplitbenchError(f"the RTT must be at least 0, got {self.rtt_s * 1000:g} ms")

    def seconds(self, nbytes: int) -> float:
        return 0.0 if self.rate_bps is None else nbytes * 8 / self.rate_bps

    def describe(self) -> dict:
        return {"mbps": None if self.rate_bps is None else self.rate_bps / 1e6, "rtt_ms": self.rtt_s * 1000,
                "loss": self.losses.p}

    def schedule(self, nbytes: int, now: float) -> Transfer:
        start = max(now, self.busy_until)
        serialization = self.seconds(nbytes)
        lost = self.losses.lost(packets(nbytes))
        resend = lost * self.seconds(min(nbytes, PACKET_BYTES))
        self.busy_until = start + serialization + resend
        retransmission = lost * self.rtt_s + resend
        done = start + serialization + retransmission + self.rtt_s / 2
        return Transfer(now, done, start - now, serialization, self.rtt_s / 2, retransmission, lost)


def read_mahimahi(path: Path) -> np.ndarray:
    """A Mahimahi trace's delivery opportunities (ms, non-decreasing integers, one packet each)."""
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines()]
        stamps = np.array([int(line) for line in lines if line], dtype=np.int64)
    except (OSError, ValueError) as error:
        raise SplitbenchError(f"cannot read the Mahimahi trace {path}: {error}") from None
    if stamps.size == 0 or stamps[-1] <= 0 or (stamps < 0).any() or (np.diff(stamps) < 0).any():
        raise SplitbenchError(f"{path}: a Mahimahi trace is non-decreasing millisecond timestamps ending after 0")
    return stamps


@dataclass
class TraceDirection:
    """A direction that delivers one packet per opportunity of a looping Mahimahi trace, from ``origin_s`` on."""

    stamps_ms: np.ndarray
    rtt_s: float = 0.0
    losses: Losses = field(default_factory=Losses)
    origin_s: float = 0.0
    next_free: int = 0  # index of the first opportunity no earlier message uses

    @property
    def period_ms(self) -> int:
        return int(self.stamps_ms[-1])

    def opportunity_s(self, index: int) -> float:
        cycle, j = divmod(index, len(self.stamps_ms))
        return self.origin_s + (cycle * self.period_ms + int(self.stamps_ms[j])) / 1000

    def first_at(self, t: float) -> int:
        """The index of the first opportunity at or after ``t`` seconds."""
        ms = max(0.0, (t - self.origin_s) * 1000)
        cycle = int(ms // self.period_ms)
        j = int(np.searchsorted(self.stamps_ms, ms - cycle * self.period_ms, side="left"))
        if j == len(self.stamps_ms):
            cycle, j = cycle + 1, 0
        return cycle * len(self.stamps_ms) + j

    def describe(self) -> dict:
        return {"trace_opportunities": len(self.stamps_ms), "trace_period_ms": self.period_ms,
                "rtt_ms": self.rtt_s * 1000, "loss": self.losses.p}

    def schedule(self, nbytes: int, now: float) -> Transfer:
        n = packets(nbytes)
        lost = self.losses.lost(n)
        first = max(self.first_at(now), self.next_free)
        sent = self.opportunity_s(first + n - 1)
        queue = max(0.0, self.opportunity_s(first) - now)
        done = sent
        if lost:  # each loss: an RTT to notice, then the resend waits for the next opportunity
            index = first + n
            for _ in range(lost):
                done += self.rtt_s
                index = max(index, self.first_at(done))
                done = self.opportunity_s(index)
                index += 1
            self.next_free = index
        else:
            self.next_free = first + n
        return Transfer(now, done + self.rtt_s / 2, queue, sent - now - queue, self.rtt_s / 2, done - sent, lost)


@dataclass
class Link:
    """Both directions of the device's link."""

    uplink: Direction
    downlink: Direction

    @classmethod
    def build(cls, uplink_mbps: float | None = None, downlink_mbps: float | None = None, rtt_ms: float = 0.0,
              loss: float = 0.0, trace: Path | None = None, seed: int = 0, origin_s: float = 0.0) -> Link:
        """From the client's options; a ``trace`` replaces both rates (the same trace each way)."""
        rtt = rtt_ms / 1000
        up, down = Losses(loss, seed), Losses(loss, seed + 1)
        if trace is not None:
            stamps = read_mahimahi(trace)
            return cls(TraceDirection(stamps, rtt, up, origin_s), TraceDirection(stamps, rtt, down, origin_s))
        rate = {k: None if v is None else v * 1e6 for k, v in (("up", uplink_mbps), ("down", downlink_mbps))}
        return cls(RateDirection(rate["up"], rtt, up), RateDirection(rate["down"], rtt, down))

    def describe(self) -> dict:
        return {"uplink": self.uplink.describe(), "downlink": self.downlink.describe(), "packet_bytes": PACKET_BYTES}


def predict_ms(nbytes: int, mbps: float, rtt_ms: float = 0.0) -> float:
    """What one message of ``nbytes`` takes over an idle, lossless link (ms): serialisation + RTT/2."""
    return RateDirection(mbps * 1e6, rtt_ms / 1000).schedule(nbytes, 0.0).delay_s * 1000
