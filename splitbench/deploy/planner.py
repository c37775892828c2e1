"""Which split to deploy: every configuration's expected latency, energy and accuracy over a link, filtered by the
practitioner's constraints (minimum accuracy, maximum latency, maximum energy) and ranked by an objective — as
Neurosurgeon picks a partition per layer, but over compressed splits and their rate points.

The default objective follows the constraint asked: with a minimum accuracy, the lowest latency; with a latency
or energy budget, the highest accuracy. Ties go to lower energy, then lower latency.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from splitbench.deploy.links import DeployLink
from splitbench.deploy.model import Estimate, Option, estimate
from splitbench.deploy.profiles import Power
from splitbench.errors import SplitbenchError

OBJECTIVES = ("latency", "energy", "accuracy")


@dataclass(frozen=True)
class Constraints:
    min_accuracy: float | None = None  # a fraction, as records store metrics
    max_latency_ms: float | None = None
    max_energy_j: float | None = None

    def __post_init__(self) -> None:
        if self.min_accuracy is None and self.max_latency_ms is None and self.max_energy_j is None:
            raise SplitbenchError("give a constraint: --min-accuracy, --max-latency-ms or --max-energy-j")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise SplitbenchError(f"--min-accuracy is a fraction in [0, 1] (0.9 for 90%), got {self.min_accuracy}")

    def default_objective(self) -> str:
        return "latency" if self.min_accuracy is not None else "accuracy"

    def violations(self, e: Estimate) -> list[str]:
        out = []
        if self.min_accuracy is not None and (e.option.metric is None or e.option.metric < self.min_accuracy):
            out.append("accuracy")
        if self.max_latency_ms is not None and e.latency_ms > self.max_latency_ms:
            out.append("latency")
        if self.max_energy_j is not None and e.device_j > self.max_energy_j:
            out.append("energy")
        if e.saturated:
            out.append("rate")
        return out


def _rank_key(e: Estimate, objective: str) -> tuple:
    primary = {"latency": e.latency_ms, "energy": e.device_j,
               "accuracy": -(e.option.metric if e.option.metric is not None else -1.0)}[objective]
    return (primary, e.device_j, e.latency_ms, e.option.label)


@dataclass(frozen=True)
class Plan:
    ranked: list[Estimate]  # feasible, best first
    rejected: list[tuple[Estimate, list[str]]]  # infeasible, with the constraints each breaks
    objective: str

    @property
    def best(self) -> Estimate:
        return self.ranked[0]


def plan(options: Sequence[Option], link: DeployLink, constraints: Constraints, rate: float | None = None,
         power: Power | None = None, objective: str | None = None) -> Plan:
    """Rank ``options`` over ``link``; raises naming the closest misses if nothing meets the constraints."""
    objective = objective or constraints.default_objective()
    if objective not in OBJECTIVES:
        raise SplitbenchError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    checked = [(e, constraints.violations(e)) for e in (estimate(o, link, rate, power) for o in options)]
    feasible = sorted((e for e, broken in checked if not broken), key=lambda e: _rank_key(e, objective))
    rejected = [(e, broken) for e, broken in checked if broken]
    if not feasible:
        closest = sorted(rejected, key=lambda ev: (len(ev[1]), _rank_key(ev[0], objective)))[:3]
        misses = "; ".join(f"{e.option.label} breaks {', '.join(v)} ({describe(e)})" for e, v in closest)
        raise SplitbenchError(f"no configuration meets the constraints over {link.label}; closest: {misses}")
    return Plan(feasible, rejected, objective)


def describe(e: Estimate) -> str:
    accuracy = "–" if e.option.metric is None else f"{100 * e.option.metric:.2f}%"
    return f"latency p50 {e.latency_ms:.1f} ms, device energy {e.device_j:.3f} J/image, accuracy {accuracy}"
