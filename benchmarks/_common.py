"""Shared by the benchmark scripts: find a trained Entropic Student and its evaluation data."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)


def find_student_runs(out: Path) -> list[Path]:
    runs = sorted(p.parent for p in out.glob("entropic_student-*/model.safetensors"))
    if not runs:
        sys.exit(f"no trained Entropic Student under {out}; run `make quickstart` first (or pass --out)")
    return runs


def load_run(run: Path):
    """(config, pipeline, validation images) of a trained run folder."""
    import torch

    from splitbench.data import get_dataset
    from splitbench.experiment import validate
    from splitbench.runs import build_pipeline
    from splitbench.training.checkpoint import weights_metadata

    config = validate(weights_metadata(run / "model.safetensors")["config"])
    pipeline = build_pipeline(config, run.parent, torch.device("cpu"))
    d = config.data
    data = get_dataset(d.dataset, "val", image_size=d.image_size, num_samples=d.val_samples, seed=d.seed,
                       train_transforms=False)
    return config, pipeline, data
