"""The device half of an exported run, without PyTorch: images → one splitbench bitstream per sample.

Imports numpy, onnxruntime, constriction and splitbench's torch-free modules only (the bitstream
container, the constriction coder, the bundle), so it runs where torch does not; ``tests/test_export.py``
runs it in a process in which importing torch fails. It does what ``LearnedPipeline.mobile`` does: each
image padded on its own to the bundle's multiple, images of one size through the network together, each
sample rounded around the medians and coded on its own, and wrapped in a container whose dims are the
image's (h, w) and whose backend is the coder that wrote it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from splitbench.compression.bitstream import pack
from splitbench.compression.constriction_coder import ConstrictionCoder
from splitbench.compression.uint8_code import Uint8Code
from splitbench.runtime.bundle import NETWORK, TABLES, BundleError, read_manifest


class DeviceCoder(Protocol):
    """A torch-free coder built from a bundle's tables: a latent batch → one string per sample."""

    backend: str

    def compress(self, y: np.ndarray) -> list[bytes]: ...


# Coder kinds (LatentCoder.export_tables) → their torch-free coder: the factorized prior codes with constriction,
# CR+BQ's 8-bit quantizer with the numpy code its torch coder also writes with.
CODERS: dict[str, Any] = {"factorized": ConstrictionCoder, "uint8": Uint8Code}

Images = np.ndarray | Sequence[np.ndarray]


class Device:
    """A loaded bundle: ``encode(images)`` gives the bitstreams the run's server decodes."""

    def __init__(self, bundle: Path, threads: int = 1) -> None:
        import onnxruntime

        self.folder = Path(bundle)
        self.manifest = read_manifest(self.folder)  # checks every file's hash first
        kind = self.manifest["coder"]["kind"]
        if kind not in CODERS:
            raise BundleError(f"{self.folder}: coder kind {kind!r} has no device coder here (known: "
                              f"{', '.join(CODERS)}); update splitbench on the device")
        with np.load(self.folder / TABLES, allow_pickle=False) as tables:
            self.coder: DeviceCoder = CODERS[kind].from_arrays({k: tables[k] for k in tables.files})
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.folder / NETWORK), options,
                                                    providers=["CPUExecutionProvider"])
        self.pad_multiple = int(self.manifest["input"]["pad_multiple"])

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def check_server(self, model: dict[str, Any], url: str) -> None:
        """Refuse, in one line, a server of another model than this bundle's (before anything is sent)."""
        if model.get("fingerprint") != self.fingerprint:
            raise BundleError(f"the server at {url} serves another model (fingerprint "
                              f"{str(model.get('fingerprint'))[:12]}…, this bundle's {self.fingerprint[:12]}…)")

    def describe(self) -> dict[str, Any]:
        return {"bundle": str(self.folder)}

    def latent(self, batch: np.ndarray) -> np.ndarray:
        """The network's latent y (N, C, h, w) for a batch of [0, 1] float32 RGB images (N, 3, H, W)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"images are float32 (N, 3, H, W) in [0, 1], got shape {batch.shape}")
        return self.session.run([self.manifest["network"]["output"]], {self.manifest["network"]["input"]: batch})[0]

    def encode(self, images: Images) -> list[bytes]:
        """One bitstream per image: a batch (N, 3, H, W), or a list of (3, h, w) images of any sizes."""
        out: dict[int, bytes] = {}
        for indices, size in _groups(images):
            batch = np.stack([self._padded(images[i]) for i in indices])
            strings = self.coder.compress(self.latent(batch))
            out.update((i, pack(size, [s], self.coder.backend)) for i, s in zip(indices, strings, strict=True))
        return [out[i] for i in range(len(out))]

    def encode_timed(self, image: np.ndarray) -> tuple[bytes, float, float]:
        """One (3, h, w) image's bitstream, and the seconds its network and its entropy coding took (what the
        device client reports per request)."""
        start = time.perf_counter()
        y = self.latent(self._padded(image)[None])
        coded = time.perf_counter()
        stream = pack(image.shape[-2:], self.coder.compress(y), self.coder.backend)
        return stream, coded - start, time.perf_counter() - coded

    def _padded(self, image: np.ndarray) -> np.ndarray:
        """One image zero-padded bottom/right to a multiple of the bundle's (as the torch pipeline pads it)."""
        h, w = image.shape[-2:]
        m = self.pad_multiple
        ph, pw = math.ceil(h / m) * m, math.ceil(w / m) * m
        image = np.asarray(image, np.float32)
        return image if (ph, pw) == (h, w) else np.pad(image, ((0, 0), (0, ph - h), (0, pw - w)))


def _groups(images: Images) -> list[tuple[list[int], tuple[int, int]]]:
    """The indices of the images of each size, and that (h, w): images of one size run through the network
    together."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(np.shape(image)), []).append(i)
    return [(indices, (int(shape[-2]), int(shape[-1]))) for shape, indices in groups.items()]
