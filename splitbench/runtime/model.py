"""A run folder as the exporter and the server see it: its config, its split pipeline, its model fingerprint.

Both sides call :func:`run_fingerprint` (or :func:`pipeline_fingerprint` on a loaded pipeline), so the
fingerprint in a bundle's manifest and the one a server computes from the run folder are the same function
of the same state.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from splitbench.errors import SplitbenchError
from splitbench.experiment import Experiment, validate
from splitbench.pipelines import SplitPipeline
from splitbench.runs import CONFIG, WEIGHTS, Run
from splitbench.runtime.fingerprint import fingerprint
from splitbench.training.checkpoint import weights_metadata


def run_config(run_dir: Path) -> Experiment:
    """The config a run folder was trained with (its weights' metadata, else its config.yaml)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SplitbenchError(f"no run folder at {run_dir}; pass a trained run's folder (OUT/<run name>)")
    if (run_dir / WEIGHTS).is_file():
        return validate(weights_metadata(run_dir / WEIGHTS)["config"], str(run_dir / WEIGHTS))
    if (run_dir / CONFIG).is_file():
        return validate(yaml.safe_load((run_dir / CONFIG).read_text()) or {}, str(run_dir / CONFIG))
    raise SplitbenchError(f"{run_dir} is not a run folder (no {WEIGHTS} or {CONFIG}); pass a trained run's folder")


def load_run_pipeline(run_dir: Path, device: torch.device | str = "cpu") -> tuple[Experiment, SplitPipeline]:
    """A trained run folder's config and split pipeline (its weights loaded); a folder with nothing trained,
    or not trained yet, is a one-line SplitbenchError. A composed run's folder (``multitask``, written when it is
    evaluated) holds only its config: its pipeline joins the trained runs next to it."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    method = config.method_spec
    if method.composed:  # joins trained runs of the same --out (their weights are checked as they load)
        return config, Run(config, run_dir.parent).pipeline(torch.device(device))
    if not method.needs_training(config):
        raise SplitbenchError(f"{run_dir}: method {config.method!r} trains nothing, so there is nothing to export: "
                              f"codecs need no export (the device runs the codec itself)")
    if not (run_dir / WEIGHTS).is_file():
        raise SplitbenchError(f"{run_dir} is not trained (no {WEIGHTS}); finish training it first "
                              f"(splitbench train ... --out {run_dir.parent} --resume)")
    pipeline = Run(config, run_dir.parent).pipeline(torch.device(device), checkpoint=run_dir / WEIGHTS)
    return config, pipeline


def pipeline_fingerprint(pipeline: SplitPipeline) -> str:
    """The model fingerprint of a loaded pipeline: its device state (device weights and coder tables)."""
    return fingerprint({k: v.detach().cpu().numpy() for k, v in pipeline.mobile_state().items()})


def run_fingerprint(run_dir: Path) -> str:
    """The model fingerprint of a run folder (what a bundle exported from it records)."""
    _, pipeline = load_run_pipeline(run_dir)
    try:
        return pipeline_fingerprint(pipeline)
    finally:
        pipeline.close()
