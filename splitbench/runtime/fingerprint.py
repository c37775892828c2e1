"""The model fingerprint: one sha256 over everything device and server must agree on to share a bitstream.

That is the device's state (:meth:`~splitbench.pipelines.SplitPipeline.mobile_state`: the device network's
weights and buffers and the coder's tables, medians included), each array hashed with its name, dtype and
shape, in name order. Export writes it into the manifest; the server computes it from the run folder, so a
server can tell a bundle of its own model from another's (retrained, re-``update``d, other tables).
Torch-free: the device side may check it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def fingerprint(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 (hex) of named arrays: name, dtype, shape and little-endian bytes of each, sorted by name."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
