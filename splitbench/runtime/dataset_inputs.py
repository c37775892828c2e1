"""A registered dataset's images as the device client's samples (e.g. the embedded ``shapes``).

This is the one part of the client that imports torch (the dataset registry yields tensors): data loading for
tests and demos. The device's encoding and the client's sending stay torch-free; ``--images FOLDER`` loads
real images without torch (:mod:`~splitbench.runtime.inputs`).
"""

from __future__ import annotations

import numpy as np

from splitbench.data import get_dataset
from splitbench.runtime.inputs import Sample


def dataset_samples(name: str, split: str, num_samples: int | None, image_size: int | None,
                    seed: int = 0, root: str | None = None) -> list[Sample]:
    """The first ``num_samples`` images of a classification split, as ``splitbench evaluate`` loads them."""
    data = get_dataset(name, split, task="classification", root=root, image_size=image_size,
                       num_samples=num_samples, seed=seed, train_transforms=False)
    samples = []
    for i in range(len(data)):
        image, label = data[i]
        samples.append(Sample(i, np.ascontiguousarray(image.numpy(), dtype=np.float32), int(label), f"{split}/{i}"))
    return samples
