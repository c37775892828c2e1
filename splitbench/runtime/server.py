"""The server half of an exported run (torch, in-process): refuses a bundle of another model, decodes its streams.

Decoding is the run's own ``LearnedPipeline.decode`` → ``server_forward``, which reads each stream with the
entropy coder recorded in it, so streams from the torch-free device (constriction) and from
``splitbench evaluate`` (CompressAI) decode side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from splitbench.errors import SplitbenchError
from splitbench.runtime.bundle import read_manifest
from splitbench.runtime.model import load_run_pipeline, pipeline_fingerprint


class Server:
    """A trained run folder's server side, with the model fingerprint its device bundles must carry."""

    def __init__(self, run_dir: Path, device: torch.device | str = "cpu") -> None:
        self.config, self.pipeline = load_run_pipeline(run_dir, device)
        self.fingerprint = pipeline_fingerprint(self.pipeline)

    def check_bundle(self, bundle: Path) -> dict[str, Any]:
        """A bundle's manifest, if the bundle is intact and was exported from this model; else a one-line error."""
        manifest = read_manifest(bundle)
        theirs = str(manifest.get("fingerprint"))
        if theirs != self.fingerprint:
            raise SplitbenchError(f"bundle {bundle} is of another model (fingerprint {theirs[:12]}…, this server's "
                                  f"{self.fingerprint[:12]}…); export it from this run")
        return manifest

    def decode(self, payloads: list[bytes]) -> list[Any]:
        """Each stream's decoded latent (the pipeline's groups by image size and coder)."""
        return self.pipeline.decode(payloads)

    def predict(self, payloads: list[bytes]) -> Any:
        """Predictions for one bitstream per sample, in order."""
        return self.pipeline.server(payloads)
