"""Runs trained with the package's own configs and shipped with it, so a suite can start from them.

The quickstart's teacher takes 7-8 minutes of a 2-core CPU to train; shipped, the quickstart spends its
minutes on the methods. Each shipped run is a run folder's ``model.safetensors`` (its config inside the
metadata, as ``splitbench train`` writes it) under ``splitbench/shipped/``, listed in ``MANIFEST.json``
with the file's SHA-256, the hash of the training settings it was trained with
(:attr:`~splitbench.runs.Run.training_hash`: evaluation settings may differ) and the command that trains it
again. A suite entry with ``shipped: true`` installs it into its run folder instead of training when the
point's training settings are the shipped ones; anything else (other settings, ``--retrain``) trains.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from splitbench.errors import CheckpointError
from splitbench.experiment import validate
from splitbench.hashing import sha256_file
from splitbench.runs import CONFIG, WEIGHTS, Run
from splitbench.training.checkpoint import atomic_write, weights_metadata

log = logging.getLogger("splitbench")
SHIPPED = Path(__file__).parent / "shipped"
MANIFEST = SHIPPED / "MANIFEST.json"


@dataclass(frozen=True)
class ShippedRun:
    name: str
    file: Path
    sha256: str
    training_hash: str
    command: str


def shipped_runs() -> dict[str, ShippedRun]:
    """Run name → what is shipped for it."""
    if not MANIFEST.is_file():
        return {}
    entries = json.loads(MANIFEST.read_text())
    return {name: ShippedRun(name, SHIPPED / e["file"], e["sha256"], e["training_hash"], e["command"])
            for name, e in entries.items()}


def install(run: Run) -> bool:
    """Install the shipped weights of ``run`` into its folder, hash-checked, if its training settings are the
    ones they were trained with; False (and nothing written) when nothing is shipped for these settings."""
    entry = shipped_runs().get(run.name)
    if entry is None or entry.training_hash != run.training_hash:
        return False
    if not entry.file.is_file() or sha256_file(entry.file) != entry.sha256:
        raise CheckpointError(f"the shipped weights {entry.file} are missing or corrupt (SHA-256 is not "
                              f"{entry.sha256}); reinstall splitbench, or train them again: {entry.command}")
    text = yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False)
    run.folder.mkdir(parents=True, exist_ok=True)
    atomic_write(run.folder / CONFIG, lambda p: p.write_text(text))
    atomic_write(run.weights, lambda p: shutil.copyfile(entry.file, p))
    log.info("%s: installed the shipped weights (%s; trained by: %s)", run.name, entry.file.name, entry.command)
    return True


def add(run_dir: Path, command: str) -> ShippedRun:
    """Ship a trained run: copy its weights into the package and record them in the manifest (for maintainers;
    ``command`` is what trains it again, for users who retrain)."""
    weights = Path(run_dir) / WEIGHTS
    run = Run(validate(weights_metadata(weights)["config"], str(weights)), Path(run_dir).parent)
    SHIPPED.mkdir(exist_ok=True)
    target = SHIPPED / f"{run.name}.safetensors"
    shutil.copyfile(weights, target)
    entries = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    entries[run.name] = {"file": target.name, "sha256": sha256_file(target), "training_hash": run.training_hash,
                         "command": command}
    MANIFEST.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return shipped_runs()[run.name]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Ship a trained run's weights with splitbench (maintainers).")
    parser.add_argument("run_dir", type=Path, help="a finished run folder (holding model.safetensors)")
    parser.add_argument("--command", required=True, help="the command that trains it again")
    args = parser.parse_args()
    entry = add(args.run_dir, args.command)
    print(f"shipped {entry.name}: {entry.file} ({entry.file.stat().st_size / 1e6:.2f} MB, sha256 {entry.sha256})")
