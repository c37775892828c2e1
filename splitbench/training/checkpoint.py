"""Checkpoint I/O: atomic writes (temp file + rename), safe reads (``weights_only``/safetensors),
strict loading with a message that lists what did not match."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from splitbench.errors import CheckpointError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same folder and rename, so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from None


def save_weights(model: nn.Module, path: Path, metadata: dict[str, Any] | None = None) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read weights {path}: {error}") from None


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable list of missing/unexpected/mis-shaped keys.

    A model that can read older layouts of its own state dict says so with an ``upgrade_state(state)``
    method (splitbench's :class:`~splitbench.models.network.SplitNetwork` does); its result is loaded."""
    upgrade = getattr(model, "upgrade_state", None)
    if upgrade is not None:
        state = upgrade(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if state[k].shape != own[k].shape and state[k].numel() and own[k].numel()]
    # Entropy-coder tables are resized on load, so their shapes are allowed to differ.
    shapes = [s for s in shapes if "_quantized_cdf" not in s and "_offset" not in s and "_cdf_length" not in s]
    if missing or unexpected or shapes:
        def brief(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"missing {brief(missing)}" if missing else "",
                 f"unexpected {brief(unexpected)}" if unexpected else "",
                 f"shape mismatch {brief(shapes)}" if shapes else ""]
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(p for p in parts if p))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{source} does not match the model: {error}") from None


def load_weights(model: nn.Module, path: Path) -> None:
    load_state_strict(model, read_weights(path), str(path))


def weights_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
