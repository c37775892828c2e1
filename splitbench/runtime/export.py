"""``splitbench export RUN_DIR --out BUNDLE``: a trained run's device half as a bundle that runs without PyTorch.

The bundle (:mod:`~splitbench.runtime.bundle`) is written into a temporary folder next to ``BUNDLE`` and
renamed into place only when complete, so an error leaves nothing behind. What runs on the device comes
from the pipeline (:meth:`~splitbench.pipelines.SplitPipeline.device_export`) and its coder
(:meth:`~splitbench.compression.latent_coders.LatentCoder.export_tables`); each refuses, in one line,
what it cannot export (codecs, hyperpriors).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from splitbench import __version__
from splitbench.compression.bitstream import version_for
from splitbench.compression.constriction_coder import PRECISION
from splitbench.errors import SplitbenchError
from splitbench.experiment import Experiment
from splitbench.pipelines import DeviceExport
from splitbench.runs import Run
from splitbench.runtime.bundle import NETWORK, TABLES, write_manifest
from splitbench.runtime.device import CODERS
from splitbench.runtime.model import load_run_pipeline, pipeline_fingerprint
from splitbench.runtime.onnx_export import export_onnx


def export_run(run_dir: Path, out: Path) -> Path:
    """Export the trained run folder ``run_dir`` as a bundle at ``out`` (which must not exist); returns ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if out.exists():
        raise SplitbenchError(f"{out} exists; remove it or pass another --out")
    config, pipeline = load_run_pipeline(run_dir)
    try:
        part = pipeline.device_export()
        model_fingerprint = pipeline_fingerprint(pipeline)
    finally:
        pipeline.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        network = export_onnx(part.network, tmp / NETWORK, config.data.image_size, part.pad_multiple)
        np.savez(tmp / TABLES, **part.tables)
        write_manifest(tmp, manifest(config, Run(config, run_dir.parent).name, part, network, model_fingerprint))
        tmp.chmod(0o755)  # mkdtemp's folder is private; a bundle is meant to be copied and read
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def manifest(config: Experiment, run: str, part: DeviceExport, network: dict[str, Any],
             model_fingerprint: str) -> dict[str, Any]:
    """Everything a device needs to feed the network and code its output, and the run it came from."""
    backend = CODERS[part.coder].backend
    size = config.data.image_size
    return {
        "splitbench_version": __version__,
        "run": run, "method": config.method, "variant": config.variant(), "backbone": config.backbone.name,
        "task": config.task, "rate_param": config.rate_param(), "config_hash": config.hash(),
        "input": {"dtype": "float32", "layout": "NCHW", "channels": 3, "color": "RGB", "range": [0.0, 1.0],
                  "height": size, "width": size, "any_size": True,  # trained at height × width; any size runs
                  "pad_multiple": part.pad_multiple},
        "normalization": {"in_graph": True, **part.normalization},
        "network": {"file": NETWORK, **network},
        "coder": {"kind": part.coder, "tables": TABLES, "backend": backend, "precision": PRECISION},
        "bitstream": {"container_version": version_for(backend), "backend": backend, "dims": "image (h, w)",
                      "segments": 1},
        "fingerprint": model_fingerprint,
    }
