"""The server half of an exported run (torch, in-process): refuses a bundle of another model, decodes its streams,
and answers a batch of streams with one JSON-ready answer per stream.

Decoding is the run's own ``LearnedPipeline.decode`` → ``server_forward``, which reads each stream with the
entropy coder recorded in it, so streams from the torch-free device (constriction) and from
``splitbench evaluate`` (CompressAI) decode side by side. The HTTP server (:mod:`~splitbench.runtime.app`)
holds one :class:`Server` and calls :meth:`Server.check` per request and :meth:`Server.answer` per batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from splitbench.compression.bitstream import BitstreamError, version_for
from splitbench.errors import SplitbenchError
from splitbench.runtime.bundle import read_manifest
from splitbench.runtime.model import load_run_pipeline, pipeline_fingerprint


@dataclass
class BatchAnswer:
    """One batch's answers (a dict per stream, or the :class:`BitstreamError` that stream alone raised) and the
    seconds the batch spent in entropy decoding and in the server network."""

    answers: list[dict[str, Any] | BitstreamError]
    decode_s: float = 0.0
    network_s: float = 0.0
    sizes: list[int] = field(default_factory=list)  # the batch size each answer was computed in


class ServedModel:
    """What every served model shares: one answer per payload, computed as a batch, with a payload only its
    decoder refuses failing alone. Subclasses set ``pipeline``, ``fingerprint`` and ``top_k`` and say how a
    payload is checked and decoded (a :class:`BitstreamError` is the client's fault)."""

    pipeline: Any
    fingerprint: str
    top_k: int

    def decode(self, payloads: list[bytes]) -> Any:
        """The server network's input for these payloads, decoded together."""
        return self.pipeline.decode(payloads)

    def answer(self, payloads: list[bytes]) -> BatchAnswer:
        """One answer per stream, computed together. A stream that passes ``check`` but that the decoder
        refuses fails alone: the batch is then answered stream by stream."""
        start = time.perf_counter()
        try:
            decoded = self.decode(payloads)
        except BitstreamError as error:
            if len(payloads) == 1:
                return BatchAnswer([error], time.perf_counter() - start, 0.0, [1])
            parts = [self.answer([p]) for p in payloads]
            return BatchAnswer([a for p in parts for a in p.answers], sum(p.decode_s for p in parts),
                               sum(p.network_s for p in parts), [1] * len(payloads))
        decoded_at = time.perf_counter()
        output = self.pipeline.server_forward(decoded)
        answers = self.pipeline.network.answers(output, self.top_k)
        return BatchAnswer(list(answers), decoded_at - start, time.perf_counter() - decoded_at,
                           [len(payloads)] * len(payloads))


class Server(ServedModel):
    """A trained run folder's server side, with the model fingerprint its device bundles must carry."""

    def __init__(self, run_dir: Path, device: torch.device | str = "cpu", top_k: int = 5) -> None:
        self.run_dir = Path(run_dir)
        self.config, self.pipeline = load_run_pipeline(run_dir, device)
        self.pipeline.device_export()  # a run without a device half to serve says why, in one line, now
        self.fingerprint = pipeline_fingerprint(self.pipeline)
        self.top_k = top_k

    def check_bundle(self, bundle: Path) -> dict[str, Any]:
        """A bundle's manifest, if the bundle is intact and was exported from this model; else a one-line error."""
        manifest = read_manifest(bundle)
        theirs = str(manifest.get("fingerprint"))
        if theirs != self.fingerprint:
            raise SplitbenchError(f"bundle {bundle} is of another model (fingerprint {theirs[:12]}…, this server's "
                                  f"{self.fingerprint[:12]}…); export it from this run")
        return manifest

    def predict(self, payloads: list[bytes]) -> Any:
        """Predictions for one bitstream per sample, in order."""
        return self.pipeline.server(payloads)

    def check(self, payload: bytes, max_bytes: int) -> None:
        """Refuse, with the parser's one-line :class:`BitstreamError`, a stream this model cannot decode (bad
        container, CRC, backend, segments, an image size it cannot take), before it joins a batch."""
        self.pipeline.parse(payload, max_bytes)

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` reports: the run, its fingerprint, its tasks and classes, the streams it reads."""
        c = self.config
        backends = list(self.pipeline.coder.backends)
        return {"run": c.run_name(), "method": c.method, "variant": c.variant(), "backbone": c.backbone.name,
                "task": c.task, "tasks": list(self.pipeline.network.heads), "fingerprint": self.fingerprint,
                "classes": class_names(self.config),
                "bitstream": {"container_versions": sorted({version_for(b) for b in backends}), "backends": backends,
                              "dims": "image (h, w)", "segments": self.pipeline.coder.num_segments},
                "top_k": self.top_k}


def class_names(config: Any) -> list[str] | None:
    """The dataset's class names where it has them (``shapes``, image folders), else None (a count is in the
    head's answer)."""
    from splitbench.data import get_dataset

    d = config.data
    try:
        data = get_dataset(d.dataset, config.eval.split, task=config.task_spec.classes_task(), root=d.root,
                           image_size=d.image_size, num_samples=1, seed=d.seed, train_transforms=False)
    except (SplitbenchError, OSError):
        return None
    names = getattr(data, "classes", None)
    return [str(n) for n in names] if names is not None else None
