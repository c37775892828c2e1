"""The device network as a checked ONNX file: dynamic batch, height and width, weights inside, checked against
PyTorch.

torch.onnx's dynamo exporter (torch.export + onnxscript) at opset 18. The file is checked with
``onnx.checker`` and run once with ONNX Runtime on a random batch of another batch size and image size
than the example it was traced with, so a graph that baked in a shape, or computes something else, fails
at export and not on the device.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from splitbench.errors import SplitbenchError

OPSET = 18
INPUT = "images"
OUTPUT = "latent"
TOLERANCE = 1e-4  # max |ONNX Runtime − PyTorch| relative to the latent's range: float rounding, not a bug


def export_onnx(network: nn.Module, path: Path, image_size: int, pad_multiple: int = 1) -> dict[str, Any]:
    """Write ``network`` ([0, 1] images (N, 3, H, W) → latent) to ``path``; returns what the manifest records."""
    import onnx

    network = network.eval()
    example = torch.rand(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    smallest = max(pad_multiple, 8)
    dims = {0: torch.export.Dim("batch", min=1, max=1 << 16),
            2: torch.export.Dim("height", min=smallest, max=1 << 15),
            3: torch.export.Dim("width", min=smallest, max=1 << 15)}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(network, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                              opset_version=OPSET, dynamo=True, dynamic_shapes=(dims,), external_data=False,
                              verbose=False)
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as error:  # the exporter raises many types; one line names the cause
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SplitbenchError(f"cannot export the device network to ONNX: {first}") from None
    side = image_size + pad_multiple  # another size than the traced one
    diff = check_against_torch(network, path, torch.rand(3, 3, side, side, generator=torch.Generator().manual_seed(1)))
    return {"opset": OPSET, "input": INPUT, "output": OUTPUT, "dynamic": ["batch", "height", "width"],
            "max_abs_diff_vs_torch": diff}


def check_against_torch(network: nn.Module, path: Path, images: torch.Tensor) -> float:
    """Max |ONNX Runtime − PyTorch| on ``images``; an export whose output is off or misshapen is an error."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: images.numpy()})[0]
    with torch.no_grad():
        want = network(images).numpy()
    if got.shape != want.shape:
        raise SplitbenchError(f"the ONNX device network gives shape {got.shape} where PyTorch gives {want.shape}")
    diff = float(np.abs(got - want).max())
    if not diff <= TOLERANCE * max(1.0, float(np.abs(want).max())):
        raise SplitbenchError(f"the ONNX device network differs from PyTorch by {diff:.3g}; it does not export "
                              f"faithfully")
    return diff
