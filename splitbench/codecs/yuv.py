"""RGB ↔ Y'CbCr 4:2:0 for the video-codec intra paths (HEVC, VVC), done in numpy.

Why not swscale: its output depends on CPU-specific SIMD paths and flags, and a decoder in
another process (or on another machine) must reproduce the encoder's pixels exactly. This is
the full-range BT.601 matrix of JFIF and BPG's default (ITU-T H.273, MatrixCoefficients 5/6,
VideoFullRangeFlag 1), at any bit depth; chroma is the mean of each 2×2 block, i.e. sited at
the block centre, and is upsampled back with the matching 3:1 ("fancy", as libjpeg) filter.
"""

from __future__ import annotations

import numpy as np

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB


# Smallest picture side libx265 and libvvenc accept; smaller images are padded up to it.
MIN_SIDE = 16


def coded_size(height: int, width: int) -> tuple[int, int]:
    """The size actually coded for an image: even (4:2:0) and at least ``MIN_SIDE`` per side."""
    return max(height + height % 2, MIN_SIDE), max(width + width % 2, MIN_SIDE)


def pad_to_coded(image: np.ndarray) -> np.ndarray:
    """Replicate the last row/column up to :func:`coded_size`; the decoder crops back to the true size."""
    height, width = image.shape[:2]
    coded_h, coded_w = coded_size(height, width)
    if (coded_h, coded_w) == (height, width):
        return image
    return np.pad(image, ((0, coded_h - height), (0, coded_w - width), (0, 0)), mode="edge")


def rgb_to_yuv420(image: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB with even H, W → Y (H, W), Cb, Cr (H/2, W/2) as uint16 in [0, 2**bits − 1]."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"4:2:0 needs even dims, got {height}x{width}")
    rgb = image.astype(np.float64) / 255.0
    y = rgb @ np.array([_KR, _KG, _KB])
    cb = (rgb[..., 2] - y) / (2 * (1 - _KB))
    cr = (rgb[..., 0] - y) / (2 * (1 - _KR))

    def subsample(c: np.ndarray) -> np.ndarray:
        return c.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    peak, offset = (1 << bits) - 1, 1 << (bits - 1)
    planes = (y * peak, subsample(cb) * peak + offset, subsample(cr) * peak + offset)
    return tuple(np.clip(np.rint(p), 0, peak).astype(np.uint16) for p in planes)


def _upsample(c: np.ndarray) -> np.ndarray:
    """×2 in each axis with weights 3/4, 1/4 from the nearest two chroma samples (edges replicated)."""
    for axis in (0, 1):
        padded = np.concatenate([np.take(c, [0], axis), c, np.take(c, [-1], axis)], axis=axis)
        n = c.shape[axis]
        before = np.take(padded, range(0, n), axis)
        after = np.take(padded, range(2, n + 2), axis)
        even, odd = 0.75 * c + 0.25 * before, 0.75 * c + 0.25 * after
        c = np.stack([even, odd], axis=axis + 1).reshape(*c.shape[:axis], 2 * n, *c.shape[axis + 1 :])
    return c


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, bits: int = 8) -> np.ndarray:
    """Inverse of :func:`rgb_to_yuv420`: planes at ``bits`` → (H, W, 3) uint8 RGB."""
    peak, offset = (1 << bits) - 1, 1 << (bits - 1)
    luma = y.astype(np.float64) / peak
    pb = _upsample((cb.astype(np.float64) - offset) / peak)
    pr = _upsample((cr.astype(np.float64) - offset) / peak)
    red = luma + 2 * (1 - _KR) * pr
    blue = luma + 2 * (1 - _KB) * pb
    green = (luma - _KR * red - _KB * blue) / _KG
    rgb = np.stack([red, green, blue], axis=-1) * 255.0
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
