"""Natural test photographs for codec tests and benchmarks, from the images bundled in scikit-image.

They ship inside the wheel (no download), which keeps tests and benchmarks offline.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def sample_photo(name: str, size: int = 224) -> np.ndarray:
    """``skimage.data.<name>()``, centre-cropped to a square and resized to ``size``² (Lanczos), RGB uint8."""
    try:
        from skimage import data
    except ImportError as error:
        raise ImportError("sample photos need scikit-image: pip install scikit-image") from error
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(image[top : top + side, left : left + side, :3])
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))


def sample_photos(size: int = 224, names: tuple[str, ...] = PHOTOS) -> list[np.ndarray]:
    return [sample_photo(name, size) for name in names]


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images (inf when identical)."""
    mse = np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
