"""The micro-batch each network of a pipeline runs fastest in, measured on an evaluation's first batches.

The first batch warms up (first calls allocate memory and build kernels for their shapes) at the whole batch;
each of the next batches runs every tunable network step (:attr:`splitbench.pipelines.networks.Networks.tunable`)
in one candidate micro-batch, from the whole batch down by factors of 4; then each step keeps the candidate that
took the least time per sample, for the rest of the evaluation. Those first batches are evaluated as all others
(the bytes do not depend on the micro-batch, the predictions only to float rounding), so choosing costs no extra
work, only the time the slower candidates take. One batch per candidate is a noisy measurement on a loaded
machine; the choice and what each candidate measured go into the record's runtime settings.
"""

from __future__ import annotations

from typing import Any

from splitbench.pipelines.networks import Networks

SHRINK = 4  # candidates: the batch, then a quarter of it, then a sixteenth
CANDIDATES = 3


def candidates(batch_size: int) -> list[int]:
    """Micro-batch sizes to try for batches of ``batch_size``: it, then smaller by factors of :data:`SHRINK`."""
    sizes = [batch_size // SHRINK**k for k in range(CANDIDATES)]
    return list(dict.fromkeys(s for s in sizes if s >= 1))


class MicroBatchTuner:
    """Sets ``networks``' micro-batches before each batch (:meth:`before`) and reads the steps' seconds after it
    (:meth:`after`); :meth:`describe` is what the record keeps."""

    def __init__(self, networks: Networks | None) -> None:
        self.networks = networks
        self.steps = networks.tunable if networks is not None else ()
        self.sizes: list[int] = []
        self.batches = 0
        self.measured: dict[str, dict[int, float]] = {step: {} for step in self.steps}  # step -> size -> s/sample
        self._trying: int | None = None

    def before(self, count: int) -> None:
        if not self.steps:
            return
        if self.batches == 0:
            self.sizes = candidates(count)
        trial = self.batches - 1  # batch 0 warms up
        self._trying = self.sizes[trial] if 0 <= trial < len(self.sizes) else None
        for step in self.steps:
            size = self._trying if self._trying is not None else self._chosen(step, count)
            self.networks.micro_batch[step] = size  # type: ignore[union-attr]

    def after(self, count: int, seconds: dict[str, float]) -> None:
        if self._trying is not None:
            for step in self.steps:
                self.measured[step][self._trying] = seconds[step] / count
        self.batches += 1

    def _chosen(self, step: str, count: int) -> int:
        """The fastest size measured for ``step`` (before any is measured: the whole batch)."""
        measured = self.measured[step]
        return min(measured, key=measured.__getitem__) if measured else max(self.sizes or [count])

    def finish(self) -> None:
        """Back to whole batches for the tuned steps (the pipeline may serve or be evaluated again)."""
        for step in self.steps:
            self.networks.micro_batch.pop(step, None)  # type: ignore[union-attr]

    def describe(self, batch_size: int) -> dict[str, Any]:
        """``micro_batch``: each network step's size (tuned or fixed); ``micro_batch_ms``: each tuned step's ms per
        sample at every size tried."""
        if self.networks is None:
            return {}
        sizes = {step: self._chosen(step, batch_size) for step in self.steps}
        out: dict[str, Any] = {"micro_batch": {**self.networks.micro_batch, **sizes}}
        if any(self.measured.values()):
            out["micro_batch_ms"] = {step: {str(k): round(1000 * v, 4) for k, v in m.items()}
                                     for step, m in self.measured.items()}
        return out
