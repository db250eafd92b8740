"""An embedded synthetic WSOL dataset: textured shapes on cluttered procedural backgrounds.

Every image is generated deterministically from ``(seed, split, index)``, so two processes
that ask for the same item get the same pixels, with no download and no file on disk. Each
image holds exactly one object of one of :data:`CLASSES`; its mask is known exactly (the shape
is drawn without anti-aliasing) and its box is the bounding box of that mask.

What makes localisation non-trivial:

* the object's colour and texture follow class-specific statistics (a hue band and a pattern
  family per class), but the shape is what separates classes reliably;
* backgrounds are procedural textures (smooth noise fields, stripes, rings, gradients, blobs)
  in random colours, so the object does not pop out by colour alone;
* clutter and distractors: colour patches painted with the colours and textures of the object
  classes (same colours, wrong shape), partial shapes cut by a random half-plane, and lines;
* random scale, position, rotation and aspect ratio.

An interpolated 4×4 CAM from a stride-32 classifier therefore covers the object only roughly
(its blob bleeds onto the background and distractors), while a perfect map reaches PxAP 100.

Item fields (a ``dict``, collated into batches by the default ``DataLoader`` collate):

=========  =====================  ===================================================
key        type / shape           meaning
=========  =====================  ===================================================
``image``  float32 ``(3, H, W)``  RGB scaled to [0, 1] then ImageNet mean/std normalised
``raw``    uint8 ``(3, H, W)``    the same RGB image in [0, 255] (for CRF losses, overlays)
``label``  ``int``                class id in ``[0, num_classes)``
``mask``   bool ``(H, W)``        exact object mask
``box``    int64 ``(4,)``         ``x0, y0, x1, y1`` of the mask, inclusive pixel indices
``index``  ``int``                item index inside the split
=========  =====================  ===================================================

Example:
    >>> from fcam.data import SyntheticWSOL
    >>> ds = SyntheticWSOL(8, size=64, seed=0, split="test")
    >>> item = ds[0]
    >>> item["image"].shape, item["mask"].dtype, item["box"].tolist() == ds.box_of(item["mask"])
    (torch.Size([3, 64, 64]), torch.bool, True)
"""

from __future__ import annotations

import colorsys
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD  # re-exported
from fcam.core.normalisation import normalise_raw
from fcam.core.progress import progress_bar
from fcam.core.validation import check_int

if TYPE_CHECKING:
    from fcam.data.wsol_metadata import WSOLMetadata

__all__ = [
    "CLASSES",
    "GENERATOR_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SyntheticWSOL",
    "generate_sample",
]

logger = logging.getLogger(__name__)

# Bumped whenever the pixels for a given (seed, split, index) change; caches key on it.
GENERATOR_VERSION = 1
CLASSES: tuple[str, ...] = ("ellipse", "rectangle", "triangle", "star", "cross")

_SPLITS = {"train": 0, "val": 1, "test": 2}
# Per-class colour statistics: a hue centre (in [0, 1)) and the pattern family of the texture.
# Hues are spread around the wheel but their jitter overlaps neighbours, and the distractor
# patches reuse them, so colour is a hint rather than the answer.
_CLASS_HUE = (0.0, 0.62, 0.33, 0.13, 0.80)
_CLASS_PATTERN = ("spots", "stripes", "checker", "noise", "rings")
_HUE_JITTER = 0.07

_Pattern = Callable[[np.random.Generator, np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------- patterns
# Each pattern maps pixel grids (y, x in [0, 1]) to a weight field in [0, 1]; a texture is a
# blend of two colours by that field, which keeps everything vectorised.
def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(3, 9)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    return 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi))


def _checker(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    theta = rng.uniform(0, np.pi / 2)
    freq = rng.uniform(3, 8)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    return ((np.floor(u * freq) + np.floor(v * freq)) % 2).astype(np.float32)


def _spots(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    freq = rng.uniform(4, 9)
    field = np.sin(2 * np.pi * freq * xx + rng.uniform(0, 6.3)) * np.sin(
        2 * np.pi * freq * yy + rng.uniform(0, 6.3)
    )
    return (field > 0.3).astype(np.float32)


def _rings(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cy, cx = rng.uniform(0, 1, size=2)
    r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 10) * r)


def _noise(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    cells = int(rng.integers(3, 10))
    low = rng.random((cells, cells), dtype=np.float32)
    field = cv2.resize(low, (xx.shape[1], yy.shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0.0, 1.0)


def _gradient(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    theta = rng.uniform(0, 2 * np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    return (u - u.min()) / max(float(u.max() - u.min()), 1e-6)


def _blobs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    field = np.zeros_like(xx)
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0, 1, size=2)
        s = rng.uniform(0.05, 0.2)
        field = np.maximum(field, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    return field


_PATTERNS: dict[str, _Pattern] = {
    "stripes": _stripes,
    "checker": _checker,
    "spots": _spots,
    "rings": _rings,
    "noise": _noise,
    "gradient": _gradient,
    "blobs": _blobs,
}
_BACKGROUND_PATTERNS = ("noise", "stripes", "rings", "gradient", "blobs", "checker")


# ---------------------------------------------------------------------------------- colours
def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.9), rng.uniform(0.25, 0.95))


def _class_colours(rng: np.random.Generator, label: int) -> tuple[np.ndarray, np.ndarray]:
    hue = _CLASS_HUE[label] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
    sat = rng.uniform(0.55, 0.95)
    val = rng.uniform(0.6, 1.0)
    # Second colour: same hue, darker and a little less saturated, so the texture reads as a
    # pattern of the class colour rather than a second hue.
    return _hsv(hue, sat, val), _hsv(hue, sat * rng.uniform(0.5, 0.9), val * rng.uniform(0.35, 0.7))


def _blend(weight: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    w = weight[..., None]
    return c1 * (1.0 - w) + c2 * w


def _class_texture(
    rng: np.random.Generator, label: int, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    c1, c2 = _class_colours(rng, label)
    return _blend(_PATTERNS[_CLASS_PATTERN[label]](rng, yy, xx), c1, c2)


# ----------------------------------------------------------------------------------- shapes
def _polygon(label: int, radius: float, aspect: float) -> np.ndarray:
    """Vertices (K, 2) of a class shape centred at 0 with the given radius, before rotation."""
    if label == 0:  # ellipse, sampled densely so that a rotated polygon stays smooth
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return np.stack([np.cos(t), aspect * np.sin(t)], 1) * radius
    if label == 1:  # rectangle
        return np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]]) * radius
    if label == 2:  # triangle
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), np.sin(t) * (0.6 + 0.4 * aspect)], 1) * radius
    if label == 3:  # five-pointed star
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1) * radius
    if label == 4:  # plus-shaped cross; arm half-width a, arm length 1
        a = 0.2 + 0.15 * aspect
        pts = [
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
            (-a, -1),
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
        ]
        return np.array(pts, dtype=np.float64) * radius
    raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")


def _shape_mask(
    size: int, label: int, centre: np.ndarray, radius: float, angle: float, aspect: float
) -> np.ndarray:
    pts = _polygon(label, radius, aspect)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + centre
    mask = np.zeros((size, size), dtype=np.uint8)
    # No anti-aliasing (LINE_8) so the mask is exactly the set of painted pixels.
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _random_shape_params(
    rng: np.random.Generator, size: int, rmin: float, rmax: float
) -> tuple[np.ndarray, float, float, float]:
    radius = rng.uniform(rmin, rmax) * size
    margin = radius + 1
    centre = rng.uniform(margin, size - margin, size=2)
    return centre, radius, rng.uniform(0, 2 * np.pi), rng.uniform(0.55, 1.0)


# ------------------------------------------------------------------------------- generation
def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    names = rng.choice(_BACKGROUND_PATTERNS, size=2, replace=False)
    base = _blend(_PATTERNS[names[0]](rng, yy, xx), _random_colour(rng), _random_colour(rng))
    layer = _blend(_PATTERNS[names[1]](rng, yy, xx), _random_colour(rng), _random_colour(rng))
    alpha = rng.uniform(0.15, 0.5)
    return base * (1 - alpha) + layer * alpha


def _add_distractors(
    rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray, count: int
) -> None:
    size = img.shape[0]
    for _ in range(count):
        kind = rng.choice(3, p=(0.5, 0.3, 0.2))
        if kind == 0:
            # Colour patch: an irregular blob painted like an object class (colour + texture)
            # but without a class shape.
            cells = int(rng.integers(2, 5))
            low = rng.random((cells, cells), dtype=np.float32)
            blob = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
            cy, cx = rng.uniform(0.1, 0.9, size=2)
            s = rng.uniform(0.07, 0.18)
            envelope = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            region = blob * envelope > 0.35
            tex = _class_texture(rng, int(rng.integers(0, len(CLASSES))), yy, xx)
            img[region] = tex[region]
        elif kind == 1:
            # Partial shape: a small class shape cut by a random half-plane, in a random colour.
            centre, radius, angle, aspect = _random_shape_params(rng, size, 0.08, 0.16)
            shape = _shape_mask(
                size, int(rng.integers(0, len(CLASSES))), centre, radius, angle, aspect
            )
            phi = rng.uniform(0, 2 * np.pi)
            half = (xx * size - centre[0]) * np.cos(phi) + (yy * size - centre[1]) * np.sin(phi)
            region = shape & (half > rng.uniform(-0.3, 0.3) * radius)
            img[region] = _random_colour(rng)
        else:
            p0 = rng.integers(0, size, size=2)
            p1 = rng.integers(0, size, size=2)
            colour = tuple(float(c) for c in _random_colour(rng))
            thickness = int(rng.integers(1, max(2, size // 40) + 1))
            cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), colour, thickness)


def generate_sample(
    size: int,
    label: int,
    rng: np.random.Generator,
    *,
    background: Callable[[np.random.Generator, int], np.ndarray] | None = None,
    object_scale: tuple[float, float] = (0.17, 0.36),
    distractors: tuple[int, int] = (2, 5),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of class ``label``.

    Args:
        size: side of the square image in pixels (at least 32).
        label: class id in ``[0, len(CLASSES))``.
        rng: the generator that fixes every random choice.
        background: ``(rng, size) -> (size, size, 3)`` float RGB background; ``None`` draws
            the embedded procedural texture.
        object_scale: ``(min, max)`` object radius as a share of the image side.
        distractors: ``(min, max)`` number of distractors, inclusive.

    Returns:
        ``(image, mask)``: uint8 ``(size, size, 3)`` RGB image and bool ``(size, size)`` mask.
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    yy, xx = np.meshgrid(
        (np.arange(size, dtype=np.float32) + 0.5) / size,
        (np.arange(size, dtype=np.float32) + 0.5) / size,
        indexing="ij",
    )
    img = _background(rng, yy, xx) if background is None else background(rng, size)
    img = np.ascontiguousarray(img, dtype=np.float32)
    _add_distractors(rng, img, yy, xx, int(rng.integers(distractors[0], distractors[1] + 1)))
    centre, radius, angle, aspect = _random_shape_params(rng, size, *object_scale)
    mask = _shape_mask(size, label, centre, radius, angle, aspect)
    tex = _class_texture(rng, label, yy, xx)
    img[mask] = tex[mask]
    img += rng.normal(0.0, 6.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


class SyntheticWSOL(Dataset):
    """Deterministic synthetic WSOL dataset (see the module docstring for the item fields).

    Labels are balanced: item ``i`` has class ``i % num_classes``; the split name and ``seed``
    change every pixel, so ``split="train"`` and ``split="test"`` never share images.

    Args:
        n: number of images.
        size: image side in pixels (square images), at least 32.
        seed: base seed; item ``i`` is drawn from ``numpy.random.default_rng((seed, split, i))``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        cache: keep generated raw images and masks in memory (about ``4 * size**2`` bytes each).

    Example:
        >>> ds = SyntheticWSOL(10, size=64, seed=1)
        >>> [ds[i]["label"] for i in range(6)]
        [0, 1, 2, 3, 4, 0]
    """

    classes: tuple[str, ...] = CLASSES

    def __init__(
        self, n: int, size: int = 128, seed: int = 0, split: str = "train", cache: bool = True
    ) -> None:
        n, size, seed = check_int(n, "n"), check_int(size, "size", 32), check_int(seed, "seed", 0)
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.n, self.size, self.seed, self.split = n, size, seed, split
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.n

    def label_of(self, index: int) -> int:
        return index % self.num_classes

    def image_id(self, index: int) -> str:
        """Relative path of item ``index`` in the wsolevaluation layout."""
        return f"{self.split}/{self.classes[self.label_of(index)]}/{index:06d}.png"

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(uint8 H×W×3 image, bool H×W mask)`` of item ``index``."""
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        index %= self.n
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rng = np.random.default_rng((self.seed, _SPLITS[self.split], index))
        out = generate_sample(self.size, self.label_of(index), rng)
        if self._cache is not None:
            self._cache[index] = out
        return out

    @staticmethod
    def box_of(mask: torch.Tensor | np.ndarray) -> list[int]:
        """``[x0, y0, x1, y1]`` inclusive bounding box of a non-empty boolean mask."""
        m = np.asarray(mask, dtype=bool)
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            raise ValueError("mask is empty")
        return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, mask = self.sample(index)
        raw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return {
            "image": normalise_raw(raw, IMAGENET_MEAN, IMAGENET_STD),
            "raw": raw,
            "label": self.label_of(index),
            "mask": torch.from_numpy(mask.copy()),
            "box": torch.tensor(self.box_of(mask), dtype=torch.int64),
            "index": index % self.n,
        }

    def write_wsol(
        self, root: str | os.PathLike[str], kind: str = "masks", progress: bool = False
    ) -> WSOLMetadata:
        """Write the split in the wsolevaluation layout (read by :class:`~fcam.data.WSOLDataset`).

        Images go to ``root/images/<image_id>`` (PNG, lossless, so the pixels round-trip) and
        the metadata to ``root/metadata/<split>/``. ``kind="masks"`` writes OpenImages-style
        1-bit instance masks and empty ignore masks next to the images; ``kind="boxes"``
        writes CUB-style boxes and image sizes.

        Returns:
            The metadata written (:class:`~fcam.data.WSOLMetadata`).

        Example:
            >>> ds = SyntheticWSOL(5, size=64, split="test")
            >>> meta = ds.write_wsol("synthetic-wsol", kind="boxes")
            >>> meta.image_ids[0], meta.boxes[meta.image_ids[0]] == [tuple(ds[0]["box"].tolist())]
            ('test/ellipse/000000.png', True)
        """
        from fcam.data.wsol_writer import write_wsol_layout

        root = Path(root)

        def samples() -> Iterator[dict[str, Any]]:
            for i in progress_bar(range(self.n), enabled=progress, desc=f"write {self.split}"):
                item = self[i]
                gt = {"mask": item["mask"]} if kind == "masks" else {"box": item["box"]}
                yield {
                    "image_id": self.image_id(i),
                    "image": item["raw"],
                    "label": item["label"],
                    **gt,
                }

        return write_wsol_layout(
            samples(), root / "images", root / "metadata" / self.split, kind=kind
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, size={self.size}, seed={self.seed}, "
            f"split={self.split!r})"
        )
