"""``shapes``: an embedded, procedurally generated dataset for classification, detection and segmentation.

Why it exists: tests and smoke runs need labelled images without downloads, for every task at
once, and hard enough that "learned" means something. Each image holds 1-3 objects from 10
shape classes, randomly coloured, sized, placed and rotated, drawn with anti-aliased edges over
a textured background (gradients, stripes, checkerboards, smooth noise), so colour thresholding
does not solve it.

Every sample is a pure function of ``(seed, split, index)``: it is drawn from its own RNG, so
random access, any ``DataLoader`` worker count and any order give identical images, and the
splits use disjoint RNG streams. Generation is vectorised numpy (each object is rasterised only
inside its bounding window) and runs at about 2000 images/s at 96x96 on one core, far above
training speed, so nothing is cached.

Labels: the class label is the class of the object with the largest visible area (it is made
at least 1.3x the visible area of every other class); boxes are the visible extents of each
object; the semantic mask is 0 for background and ``class + 1`` for objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from splitbench.data.base import DatasetRequest, DatasetSpec, register_dataset

CLASSES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "half_disc",
    "ellipse",
    "crescent",
    "l_shape",
)
SPLITS = ("train", "val", "test")
TASKS = ("classification", "detection", "segmentation", "multitask")  # the targets a sample carries
DEFAULT_SIZES = {"train": 5000, "val": 1000, "test": 1000}
DEFAULT_IMAGE_SIZE = 96
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
_STREAM = 0x5B1E  # salt: keeps these RNG streams apart from any other use of the same seed

# Layout constants (areas as fractions of the image).
_LARGEST_AREA = (0.10, 0.35)  # largest object, nominal
_OTHER_RATIO = (0.20, 0.65)  # other objects' area relative to the largest (<= 1/1.5)
_MIN_MARGIN = 1.3  # visible area of the label class vs. any other class
_OBJECT_COUNTS, _OBJECT_COUNT_CDF = (1, 2, 3), (0.3, 0.7)


# --- Shapes as approximate signed distances (units of the object's radius; < 0 inside) ------------
# Every shape fits in the unit disc, so an object of radius s is rasterised in a (2s+2)^2 window.


def _norm(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(x * x + y * y)  # np.hypot is ~3x slower on float32


def _box(x: np.ndarray, y: np.ndarray, hx: float, hy: float) -> np.ndarray:
    return np.maximum(np.abs(x) - hx, np.abs(y) - hy)


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _norm(u, v) - 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return _box(u, v, 0.7, 0.7)


_TRIANGLE_NORMALS = [(math.cos(a), math.sin(a)) for a in (math.pi * (0.5 + 2 * k / 3) for k in range(3))]


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    (c0, s0), (c1, s1), (c2, s2) = _TRIANGLE_NORMALS
    return np.maximum(np.maximum(u * c0 + v * s0, u * c1 + v * s1), u * c2 + v * s2) - 0.5


_STAR_POINTS, _STAR_INNER = 5, 0.45
_STAR_SECTOR = 2 * math.pi / _STAR_POINTS
_sx, _sy = _STAR_INNER * math.cos(_STAR_SECTOR / 2) - 1.0, _STAR_INNER * math.sin(_STAR_SECTOR / 2)
_STAR_NORMAL = (_sy / math.hypot(_sx, _sy), -_sx / math.hypot(_sx, _sy))  # outward normal of tip->notch edge


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Fold the angle into half a sector: tip at angle 0, notch at half a sector; then one edge.
    phi = np.arctan2(v, u) * np.float32(1 / _STAR_SECTOR)
    phi -= np.floor(phi)  # position within the sector, in [0, 1) (ndarray % is slow)
    a = np.minimum(phi, 1 - phi) * np.float32(_STAR_SECTOR)
    rho = _norm(u, v)
    return _STAR_NORMAL[0] * (rho * np.cos(a) - 1.0) + _STAR_NORMAL[1] * rho * np.sin(a)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95))


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(_norm(u, v) - 0.72) - 0.28


def _half_disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    w = v + 0.3
    return np.maximum(_norm(u, w) - 0.9, -w)


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    a, b = 1.0, 0.5
    q = _norm(u / a, v / b)
    grad = _norm(u / (a * a), v / (b * b)) / np.maximum(q, 1e-6)
    return (q - 1.0) / np.maximum(grad, 1e-6)


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(_norm(u, v) - 1.0, 0.78 - _norm(u - 0.42, v))


def _l_shape(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(_box(u + 0.45, v, 0.25, 0.7), _box(u, v - 0.45, 0.7, 0.25))


_SHAPE_FNS = (_circle, _square, _triangle, _star, _cross, _ring, _half_disc, _ellipse, _crescent, _l_shape)
assert len(_SHAPE_FNS) == len(CLASSES)


@lru_cache(maxsize=1)
def _unit_areas() -> np.ndarray:
    """Area of each shape at radius 1, so objects can be sized by area (measured once, on a grid)."""
    n = 512
    t = (np.arange(n, dtype=np.float64) + 0.5) / n * 2.0 - 1.0
    u, v = np.meshgrid(t, t)
    return np.array([(fn(u, v) < 0).mean() * 4.0 for fn in _SHAPE_FNS])


# --- Backgrounds -----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _coords(size: int) -> np.ndarray:
    """Pixel-centre coordinates along one axis, normalised to [0, 1] so textures look alike at any size."""
    return (np.arange(size, dtype=np.float32) + 0.5) / size


@lru_cache(maxsize=32)
def _upsample_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells) linear-interpolation matrix: a cells^2 noise grid becomes smooth noise by two matmuls."""
    pos = np.clip((np.arange(size) + 0.5) / size * (cells - 1), 0, cells - 1)
    lo = np.minimum(pos.astype(int), cells - 2)
    frac = pos - lo
    m = np.zeros((size, cells), dtype=np.float32)
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    """One texture as an (H, W) map in [0, 1]: gradient, stripes, checkerboard or smooth noise.

    Rotated patterns are built from 1-D terms combined by one broadcast (angle-sum identities),
    which keeps the per-image cost to a handful of full-size array operations.
    """
    t = _coords(size)
    kind, angle, r1, r2, r3 = rng.random(5).tolist()  # scalar draws in one call: they dominate otherwise
    kind = int(kind * 4)
    c, s = math.cos(2 * math.pi * angle), math.sin(2 * math.pi * angle)
    if kind == 0:  # linear gradient along the angle, spanning [0, 1] over the image
        lo, span = min(0, c) + min(0, s), abs(c) + abs(s)
        x, y = t * np.float32(c / span) - np.float32(lo / span), t * np.float32(s / span)
        return x[None, :] + y[:, None]
    if kind == 1:  # stripes at a random angle, frequency and sharpness: sin(a(x) + b(y))
        freq, phase, k = 2 * math.pi * (2 + 7 * r1), 2 * math.pi * r2, np.float32(0.5 + 1.5 * r3)
        a, b = t * np.float32(freq * c) + np.float32(phase), t * np.float32(freq * s)
        wave = (np.sin(a) * k)[None, :] * np.cos(b)[:, None]
        wave += (np.cos(a) * k)[None, :] * np.sin(b)[:, None]
        wave += 0.5
        return np.minimum(np.maximum(wave, 0, out=wave), 1, out=wave)
    if kind == 2:  # rotated checkerboard: parity of floor(x') + floor(y')
        cells = 3 + 7 * r1
        tc, ts = t * np.float32(c * cells), t * np.float32(s * cells)
        half = np.floor(tc[None, :] + ts[:, None])
        half += np.floor(tc[:, None] - ts[None, :])
        half *= 0.5
        return (half - np.floor(half)) * 2  # parity, without the slow ndarray %
    cells = 3 + int(6 * r1)  # smooth value noise
    m = _upsample_matrix(size, cells)
    return m @ rng.random((cells, cells), dtype=np.float32) @ m.T


def _two_tone(rng: np.random.Generator, size: int, spread: float, weight: float = 1.0) -> np.ndarray:
    """``weight`` x a texture between two random colours, as (3, H, W)."""
    c1, d = rng.random((2, 3), dtype=np.float32)
    c2 = np.minimum(np.maximum(c1 + (d - 0.5) * np.float32(2 * spread), 0), 1)
    pattern = _pattern(rng, size)
    out = np.multiply.outer((c2 - c1) * np.float32(weight), pattern)
    out += (c1 * np.float32(weight))[:, None, None]
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(3, H, W) float32 in [0, 1]: one two-colour texture, half the time a second blended over it."""
    second, w = rng.random(2).tolist()
    if second < 0.5:
        return _two_tone(rng, size, 0.55)
    w = 0.25 + 0.35 * w
    img = _two_tone(rng, size, 0.55, 1 - w)
    img += _two_tone(rng, size, 0.5, w)
    return img


# --- Objects and layout ----------------------------------------------------------------------------


@dataclass
class _Object:
    cls: int
    window: tuple[slice, slice]
    alpha: np.ndarray  # (h, w) anti-aliased coverage
    inside: np.ndarray  # (h, w) bool, coverage > 0.5: what the masks and boxes see
    paint: np.ndarray  # (3, h, w) shaded colour


def _pick_colour(cand: list[list[float]], under: list[float], others: list[list[float]]) -> list[float]:
    """Of candidate colours, the first that stands out from the background under the object and
    from earlier objects (else the one that stands out most). Plain Python: 8 x 3 numbers."""
    best, best_score = cand[0], -1.0
    for rgb in cand:
        score = min(
            sum((a - b) ** 2 for a, b in zip(rgb, ref, strict=True)) * (1.0 if i == 0 else 2.25)
            for i, ref in enumerate([under, *others])
        )
        if score > 0.45**2:
            return rgb
        if score > best_score:
            best, best_score = rgb, score
    return best


def _rasterise(
    rng: np.random.Generator,
    cls: int,
    radius: float,
    cx: float,
    cy: float,
    bg: np.ndarray,
    colours: list[list[float]],
) -> _Object:
    """Rasterise one object in its window: coverage, hard mask and paint (not yet composited)."""
    size = bg.shape[-1]
    r0, r1 = max(0, int(cy - radius - 1)), min(size, int(math.ceil(cy + radius + 1)))
    c0, c1 = max(0, int(cx - radius - 1)), min(size, int(math.ceil(cx + radius + 1)))
    scale = np.float32(1 / radius)
    dx = (np.arange(c0, c1, dtype=np.float32) + np.float32(0.5 - cx)) * scale
    dy = (np.arange(r0, r1, dtype=np.float32) + np.float32(0.5 - cy)) * scale
    draws = rng.random(27, dtype=np.float32)  # one call: angle, shading (2), 8 candidate colours
    angle = float(draws[0]) * 2 * math.pi
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * c)[None, :] + (dy * s)[:, None]  # object frame: rotate the offsets
    v = (dy * c)[:, None] - (dx * s)[None, :]
    dist = _SHAPE_FNS[cls](u, v)
    dist *= np.float32(radius)  # ~signed distance in pixels
    alpha = np.subtract(np.float32(0.5), dist)
    np.minimum(np.maximum(alpha, 0, out=alpha), 1, out=alpha)
    under = bg[:, r0:r1:3, c0:c1:3]
    under = (under.sum(axis=(1, 2)) / (under.size // 3)).tolist()
    colour = _pick_colour(draws[3:].reshape(8, 3).tolist(), under, colours)
    colours.append(colour)
    # Gentle linear shading, 1 - k (1.5 + g.(u, v)) with |g| = 1: in [1 - 3k, 1] wherever alpha > 0
    # (|(u, v)| < 1.5 there), so paint stays in [0, 1]. Written as a(x) + b(y): one broadcast.
    k, g = 0.12 * float(draws[1]), 2 * math.pi * float(draws[2])
    gx, gy = k * math.cos(g), k * math.sin(g)
    shade = (dx * np.float32(-(gx * c - gy * s)) + np.float32(1 - 1.5 * k))[None, :] + (
        dy * np.float32(-(gx * s + gy * c))
    )[:, None]
    paint = np.multiply.outer(np.array(colour, dtype=np.float32), shade)
    return _Object(cls, (slice(r0, r1), slice(c0, c1)), alpha, dist < 0, paint)


def _layout(rng: np.random.Generator, size: int) -> list[tuple[int, float, float, float]]:
    """(class, radius, cx, cy) per object; the first is the largest, fully inside the image."""
    draws = rng.random(13).tolist()  # count, then (class, area, cx, cy) per object
    n = _OBJECT_COUNTS[sum(draws[0] >= p for p in _OBJECT_COUNT_CDF)]
    objs = [draws[1 + 4 * k : 5 + 4 * k] for k in range(n)]
    classes = [int(o[0] * len(CLASSES)) for o in objs]
    unit = _unit_areas()
    max_radius = 0.48 * size
    out = []
    for k, (cls, (_, area, x, y)) in enumerate(zip(classes, objs, strict=True)):
        if k == 0:
            fraction = _LARGEST_AREA[0] + (_LARGEST_AREA[1] - _LARGEST_AREA[0]) * area
            radius = min(math.sqrt(fraction * size * size / unit[cls]), max_radius)
            area0 = unit[cls] * radius * radius
            lo, hi = radius + 1, size - radius - 1
        else:
            # Same-class companions share the budget, so no other class can rival the label's area.
            ratio = (_OTHER_RATIO[0] + (_OTHER_RATIO[1] - _OTHER_RATIO[0]) * area) / classes[1:].count(cls)
            radius = min(math.sqrt(ratio * area0 / unit[cls]), max_radius)
            lo, hi = 0.4 * radius, size - 0.4 * radius
        if hi <= lo:
            lo = hi = size / 2
        out.append((cls, radius, lo + (hi - lo) * x, lo + (hi - lo) * y))
    return out


def _instance_map(objects: list[_Object], order: list[int], size: int) -> np.ndarray:
    """(H, W) uint8: 0 = background, k + 1 where object k is the visible one."""
    inst = np.zeros((size, size), dtype=np.uint8)
    for k in order:
        inst[objects[k].window][objects[k].inside] = k + 1
    return inst


def _clear_winner(objects: list[_Object], inst: np.ndarray) -> bool:
    """Whether object 0 shows >= 1.3x the area of every other object, and its class >= 1.3x the
    area of every other class (so the label reads the same from instances or the semantic mask)."""
    visible = np.bincount(inst.ravel(), minlength=len(objects) + 1)[1:].tolist()
    per_class: dict[int, int] = {}
    for ob, area in zip(objects, visible, strict=True):
        per_class[ob.cls] = per_class.get(ob.cls, 0) + area
    mine = per_class.pop(objects[0].cls)
    rivals = visible[1:] + list(per_class.values())
    return visible[0] >= _MIN_MARGIN * max(rivals) and mine >= _MIN_MARGIN * max(rivals)


@dataclass
class ShapesSample:
    """One generated sample with every annotation (the task forms are views of this)."""

    image: torch.Tensor  # (3, H, W) float32 in [0, 1]
    label: int  # class of the largest visible object
    boxes: torch.Tensor  # (N, 4) float32 xyxy in pixels, visible extent (x2/y2 exclusive)
    labels: torch.Tensor  # (N,) int64 in 0..9
    mask: torch.Tensor  # (H, W) int64, 0 = background, class + 1
    instances: torch.Tensor  # (H, W) int64, 0 = background, 1..N in the order of boxes


def generate(seed: int, split: str, index: int, image_size: int = DEFAULT_IMAGE_SIZE) -> ShapesSample:
    """Generate sample ``index`` of ``split``; a pure function of its arguments."""
    if split not in _SPLIT_IDS:
        raise ValueError(f"shapes has no split {split!r}; allowed: {', '.join(SPLITS)}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([_STREAM, seed, _SPLIT_IDS[split], index])
    bg = _background(rng, image_size)
    colours: list[list[float]] = []
    objects = [_rasterise(rng, cls, r, cx, cy, bg, colours) for cls, r, cx, cy in _layout(rng, image_size)]
    order = [int(k) for k in rng.permutation(len(objects))]
    inst = _instance_map(objects, order, image_size)
    if len(objects) > 1 and not _clear_winner(objects, inst):
        # Occlusion ate the largest object: draw it on top instead (fully inside, >= 1.5x the rest).
        order = [k for k in order if k != 0] + [0]
        inst = _instance_map(objects, order, image_size)

    img = bg  # paint in place, back to front; every step is a convex mix, so img stays in [0, 1]
    for k in order:
        ob = objects[k]
        region = img[:, ob.window[0], ob.window[1]]
        delta = ob.paint - region
        delta *= ob.alpha
        region += delta
    # Quantise to 8-bit levels: the image is exactly representable as uint8, as codecs need it.
    img *= 255
    np.rint(img, out=img)
    img /= 255  # division, not * (1/255): bit-identical to ToTensor on the uint8 image

    boxes, labels = [], []
    ids = np.zeros(len(objects) + 1, dtype=np.int64)  # object -> 1-based box index (0 if occluded)
    lut = np.zeros(len(objects) + 1, dtype=np.int64)  # object -> class + 1
    for k, ob in enumerate(objects):
        mine = inst[ob.window] == k + 1
        rows, cols = np.flatnonzero(mine.any(1)), np.flatnonzero(mine.any(0))
        if rows.size == 0:
            continue  # fully occluded
        r0, c0 = ob.window[0].start, ob.window[1].start
        boxes.append((c0 + cols[0], r0 + rows[0], c0 + cols[-1] + 1, r0 + rows[-1] + 1))
        labels.append(ob.cls)
        ids[k + 1], lut[k + 1] = len(boxes), ob.cls + 1
    all_visible = len(boxes) == len(objects)
    return ShapesSample(
        image=torch.from_numpy(img),
        label=objects[0].cls,
        boxes=torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
        labels=torch.from_numpy(np.array(labels, dtype=np.int64)),
        mask=torch.from_numpy(np.take(lut, inst)),
        instances=torch.from_numpy(inst.astype(np.int64) if all_visible else np.take(ids, inst)),
    )


def hflip(sample: ShapesSample) -> ShapesSample:
    """Mirror a sample left-right, boxes and masks included."""
    width = sample.image.shape[-1]
    boxes = sample.boxes[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor(
        [width, 0.0, width, 0.0]
    )
    return ShapesSample(
        image=sample.image.flip(-1),
        label=sample.label,
        boxes=boxes,
        labels=sample.labels,
        mask=sample.mask.flip(-1),
        instances=sample.instances.flip(-1),
    )


class ShapesDataset(Dataset):
    """The ``shapes`` dataset; ``task`` picks the form ``__getitem__`` returns.

    ``classification`` → ``(image, label)``; ``detection`` → ``(image, {"boxes", "labels"})`` with box
    labels ``class + 1`` (0 is background, as in torchvision's detectors and in the mask);
    ``segmentation`` → ``(image, mask)``; ``multitask`` → ``(image, {"label", "boxes", "labels",
    "mask"})``. With ``train_transforms`` a random horizontal flip is applied, drawn from torch's
    global RNG like torchvision transforms (reproducible under ``torch.manual_seed``; the
    ``DataLoader`` seeds its workers from it). :meth:`sample` gives the unaugmented full record.
    """

    classes = CLASSES
    num_classes = len(CLASSES)

    def __init__(
        self,
        split: str = "train",
        *,
        task: str = "classification",
        image_size: int | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        train_transforms: bool | None = None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"shapes has no split {split!r}; allowed: {', '.join(SPLITS)}")
        if task not in TASKS:
            raise ValueError(f"shapes does not support task {task!r}; allowed: {', '.join(TASKS)}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.split, self.task, self.seed = split, task, seed
        self.image_size = DEFAULT_IMAGE_SIZE if image_size is None else int(image_size)
        if self.image_size < 16:
            raise ValueError(f"shapes needs image_size >= 16, got {self.image_size}")
        self.num_samples = DEFAULT_SIZES[split] if num_samples is None else int(num_samples)
        self.train_transforms = split == "train" if train_transforms is None else train_transforms

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, index: int) -> ShapesSample:
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return generate(self.seed, self.split, index, self.image_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        s = self.sample(index)
        if self.train_transforms and torch.rand(()) < 0.5:
            s = hflip(s)
        if self.task == "classification":
            return s.image, s.label
        if self.task == "detection":  # box labels are class + 1: 0 is the detectors' background, as in the mask
            return s.image, {"boxes": s.boxes, "labels": s.labels + 1}
        if self.task == "segmentation":
            return s.image, s.mask
        return s.image, {"label": s.label, "boxes": s.boxes, "labels": s.labels + 1, "mask": s.mask}

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(split={self.split!r}, task={self.task!r}, n={self.num_samples}, "
            f"image_size={self.image_size}, seed={self.seed}, train_transforms={self.train_transforms})"
        )


def _build(r: DatasetRequest) -> ShapesDataset:
    return ShapesDataset(r.split, task=r.task, image_size=r.image_size, num_samples=r.num_samples, seed=r.seed,
                         train_transforms=r.train_transforms)


register_dataset(
    "shapes",
    DatasetSpec(build=_build, splits=SPLITS, classes=len(CLASSES), tasks=TASKS,
                task_classes=(("detection", len(CLASSES) + 1), ("segmentation", len(CLASSES) + 1))),
    help="embedded procedural shapes (10 classes; classification, detection, segmentation, multitask)",
)
