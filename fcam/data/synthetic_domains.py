"""Domain variants of the embedded synthetic WSOL set, for robustness benchmarks.

:class:`SyntheticDomainWSOL` draws the same five shape classes as :class:`~fcam.data.SyntheticWSOL`
(same class colours and textures, same item fields) but lets a benchmark change the domain:

* ``background``: ``"texture"`` (the embedded procedural textures, the runtime default, no
  dependency) or ``"photo"`` (random crops of scikit-image's sample photographs: a man in a
  coat, an astronaut, a motorcycle, coffee, a cat, grass, gravel, bricks, a tissue slide, ...;
  needs scikit-image and is meant for benchmarks and tests only);
* ``object_scale``: range of the object's radius as a share of the image side (the embedded
  set uses ``(0.17, 0.36)``; ``(0.08, 0.16)`` gives small objects);
* ``size``: image side, 32 to 512 (benchmarks use 64 to 224);
* ``distractors``: range of the number of distractors (class-coloured patches, cut shapes,
  lines); ``(0, 0)`` for none.

Every image is a deterministic function of ``(seed, split, index)`` and the domain options.

Example:
    >>> ds = SyntheticDomainWSOL(4, size=64, background="texture", object_scale=(0.1, 0.2))
    >>> item = ds[0]
    >>> item["image"].shape, int(item["mask"].sum()) > 0
    (torch.Size([3, 64, 64]), True)
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np

from fcam.core.validation import check_int
from fcam.data.synthetic import SyntheticWSOL, generate_sample

__all__ = ["BACKGROUNDS", "PHOTO_NAMES", "SyntheticDomainWSOL", "generate_domain_sample"]

#: Background kinds of :class:`SyntheticDomainWSOL`.
BACKGROUNDS = ("texture", "photo")
#: scikit-image sample photographs used by ``background="photo"``.
PHOTO_NAMES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "stereo_motorcycle", "grass",
    "gravel", "brick", "immunohistochemistry", "hubble_deep_field", "coins", "moon", "cell",
    "clock", "colorwheel",
)


@functools.cache
def _photo(name: str) -> np.ndarray:
    """float32 (H, W, 3) RGB in [0, 255] of a scikit-image sample, at most 512 px a side."""
    try:
        from skimage import data as skdata
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError('background="photo" needs scikit-image: pip install scikit-image') from exc
    image = getattr(skdata, name)()
    if isinstance(image, tuple):
        image = image[0]
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3].astype(np.float32)
    scale = 512 / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image


def _photo_background(rng: np.random.Generator, size: int) -> np.ndarray:
    photo = _photo(PHOTO_NAMES[int(rng.integers(0, len(PHOTO_NAMES)))])
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.4, 1.0))
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - side + 1))
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp)


def generate_domain_sample(
    size: int,
    label: int,
    rng: np.random.Generator,
    background: str = "texture",
    object_scale: tuple[float, float] = (0.17, 0.36),
    distractors: tuple[int, int] = (2, 5),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of class ``label`` in a domain (see the module docstring).

    Returns:
        ``(image, mask)``: uint8 ``(size, size, 3)`` RGB and bool ``(size, size)`` mask.
    """
    photo = None if background == "texture" else _photo_background
    return generate_sample(
        size, label, rng, background=photo, object_scale=object_scale, distractors=distractors
    )


class SyntheticDomainWSOL(SyntheticWSOL):
    """:class:`~fcam.data.SyntheticWSOL` with domain options (same item fields).

    Args:
        n: number of images.
        size: image side in pixels (32 to 512).
        seed: base seed.
        split: ``"train"``, ``"val"`` or ``"test"``.
        background: ``"texture"`` or ``"photo"`` (scikit-image photographs).
        object_scale: ``(min, max)`` object radius as a share of the side, within (0, 0.45].
        distractors: ``(min, max)`` number of distractors per image.
        cache: keep generated images in memory.

    Example:
        >>> ds = SyntheticDomainWSOL(3, size=48, distractors=(0, 0))
        >>> ds[1]["label"], ds.domain["background"]
        (1, 'texture')
    """

    def __init__(
        self,
        n: int,
        size: int = 128,
        seed: int = 0,
        split: str = "train",
        background: str = "texture",
        object_scale: tuple[float, float] = (0.17, 0.36),
        distractors: tuple[int, int] = (2, 5),
        cache: bool = True,
    ) -> None:
        super().__init__(n, size=size, seed=seed, split=split, cache=cache)
        check_int(size, "size", 32)
        if size > 512:
            raise ValueError(f"size must be at most 512, got {size}")
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {list(BACKGROUNDS)}, got {background!r}")
        lo, hi = (float(v) for v in object_scale)
        if not 0 < lo <= hi <= 0.45:
            raise ValueError(f"object_scale must satisfy 0 < min <= max <= 0.45, got {object_scale!r}")
        dlo, dhi = (int(v) for v in distractors)
        if not 0 <= dlo <= dhi:
            raise ValueError(f"distractors must satisfy 0 <= min <= max, got {distractors!r}")
        self.background, self.object_scale, self.distractors = background, (lo, hi), (dlo, dhi)

    @property
    def domain(self) -> dict[str, Any]:
        """The domain options (JSON-serialisable)."""
        return {"size": self.size, "background": self.background,
                "object_scale": list(self.object_scale), "distractors": list(self.distractors)}

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} items")
        index %= self.n
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        split = ("train", "val", "test").index(self.split)
        rng = np.random.default_rng((self.seed, split, index, 7))
        out = generate_domain_sample(self.size, self.label_of(index), rng, self.background,
                                     self.object_scale, self.distractors)
        if self._cache is not None:
            self._cache[index] = out
        return out

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={self.n}, size={self.size}, seed={self.seed}, "
                f"split={self.split!r}, background={self.background!r}, "
                f"object_scale={self.object_scale}, distractors={self.distractors})")
