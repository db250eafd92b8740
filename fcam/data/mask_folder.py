"""A folder of photographs and a folder of figure/ground masks, paired by file stem.

The layout any user with annotated photographs has (e.g. the Weizmann Horse database)::

    root/rgb/horse001.jpg            root/figure_ground/horse001.jpg
    root/rgb/horse003.png            root/figure_ground/horse003.png

Each photograph is first resized to its mask's size (annotation tools and re-encodings often
leave them a few pixels apart), then both are resized to ``size x size`` as in the WSOL
protocol (:mod:`fcam.data.wsol_datasets`): the photograph bilinearly, the thresholded mask with
nearest neighbour.

Item fields (a ``dict``; the default ``DataLoader`` collation batches them):

============  ========================  ==============================================
key           type / shape              meaning
============  ========================  ==============================================
``image``     float32 ``(3, S, S)``     normalised photograph
``raw``       uint8 ``(3, S, S)``       the resized photograph in [0, 255]
``mask``      bool ``(S, S)``           ``mask > threshold`` (1 = object)
``box``       int64 ``(4,)``            ``x0, y0, x1, y1`` of the mask, inclusive
``label``     ``int``                   the fixed ``label`` (absent when ``label=None``)
``name``      ``str``                   the file stem
============  ========================  ==============================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.core.normalisation import normalise_raw
from fcam.core.validation import check_int, check_stats

__all__ = ["MASK_EXTENSIONS", "MaskFolder"]

#: File extensions paired by :class:`MaskFolder` (case-insensitive).
MASK_EXTENSIONS = (".jpg", ".jpeg", ".png")

#: Largest relative difference of a photograph's aspect ratio from its mask's that is taken as
#: the same frame rescaled (the Weizmann photographs differ by under 1 %); more is a mismatch.
MAX_SIZE_MISMATCH = 0.05


def _files_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"{what} folder not found: {folder}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in MASK_EXTENSIONS:
            continue
        if path.stem in files:
            raise ValueError(f"{what} folder holds two files for {path.stem!r}: {files[path.stem]} and {path}")
        files[path.stem] = path
    return files


def _read(path: Path, mode: str | None) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode is not None else image.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a readable image file: {path} ({exc})") from None


class MaskFolder(Dataset):
    """Photographs in ``root/images`` paired by stem with masks in ``root/masks``.

    Args:
        root: the folder holding both sub-folders.
        images: sub-folder (or absolute path) of the photographs.
        masks: sub-folder (or absolute path) of the masks: greyscale, or colour images whose
            channels agree after thresholding (white or black per pixel); ``> threshold`` is
            the object.
        size: output side ``S``.
        mean, std: normalisation statistics of the classifier (ImageNet's by default); one
            value each for a grey classifier, whose ``image`` is then the luma.
        label: the class every item is labelled with (e.g. 339 for horses in ImageNet);
            ``None`` leaves items without ``label`` (the prediction picks the class).
        threshold: mask grey levels above it are the object (127 for 8-bit masks; JPEG noise
            stays on its side).

    Raises:
        ValueError: naming the file: an image without a mask or a mask without an image, an
            unreadable file, a mask that is not single-valued per pixel after thresholding, a
            photograph whose shape (aspect ratio) differs from its mask's by more than 5 %, a mask without
            object pixels; naming the folder: a missing or empty folder.

    Example:
        >>> import numpy as np
        >>> from PIL import Image
        >>> for sub in ("rgb", "figure_ground"):
        ...     os.makedirs(f"photos/{sub}", exist_ok=True)
        >>> Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save("photos/rgb/a.jpg")
        >>> mask = np.zeros((40, 60), np.uint8); mask[10:30, 20:40] = 255
        >>> Image.fromarray(mask).save("photos/figure_ground/a.png")
        >>> ds = MaskFolder("photos", size=32, label=339)
        >>> item = ds[0]
        >>> item["name"], item["label"], item["image"].shape, item["box"].tolist()
        ('a', 339, torch.Size([3, 32, 32]), [11, 8, 21, 23])
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        images: str | os.PathLike[str] = "rgb",
        masks: str | os.PathLike[str] = "figure_ground",
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        label: int | None = None,
        threshold: int = 127,
    ) -> None:
        self.size = check_int(size, "size")
        grey = hasattr(mean, "__len__") and len(mean) == 1
        self._mean, self._std = check_stats(mean, std, channels=1 if grey else 3)
        if label is not None and (isinstance(label, bool) or not isinstance(label, (int, np.integer))
                                  or label < 0):
            raise ValueError(f"label must be a non-negative class index or None, got {label!r}")
        self.label = None if label is None else int(label)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 255:
            raise ValueError(f"threshold must be a grey level in [0, 255), got {threshold!r}")
        self.threshold = threshold
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root folder not found: {self.root}")
        self.image_dir, self.mask_dir = self.root / images, self.root / masks
        photos = _files_by_stem(self.image_dir, "images")
        masks_ = _files_by_stem(self.mask_dir, "masks")
        if not photos and not masks_:
            raise ValueError(
                f"no images ({'/'.join(MASK_EXTENSIONS)}) in {self.image_dir} nor masks in {self.mask_dir}"
            )
        unpaired = [f"image {p} has no mask in {self.mask_dir}" for s, p in photos.items() if s not in masks_]
        unpaired += [f"mask {p} has no image in {self.image_dir}" for s, p in masks_.items() if s not in photos]
        if unpaired:
            more = f" (and {len(unpaired) - 3} more)" if len(unpaired) > 3 else ""
            raise ValueError("; ".join(unpaired[:3]) + more)
        self.names = sorted(photos)
        self.pairs = [(photos[n], masks_[n]) for n in self.names]

    def __len__(self) -> int:
        return len(self.pairs)

    def label_of(self, index: int) -> int:
        """The item's label without reading its files (:func:`fcam.wsol.few_shot_indices`)."""
        if self.label is None:
            raise ValueError("this MaskFolder has no label (label=None)")
        return self.label

    def read_mask(self, index: int) -> np.ndarray:
        """The thresholded mask at its own size, bool ``(H, W)``.

        Raises:
            ValueError: an unreadable file, or channels that disagree after thresholding.
        """
        path = self.pairs[index][1]
        mask = _read(path, None)
        if mask.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "HSV", "LAB"):
            mask = mask.convert("RGB" if mask.mode not in ("LA", "PA") else "L")
        array = np.asarray(mask)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[..., 0]
        binary = array > self.threshold
        if binary.ndim == 3:
            if not (binary.all(axis=2) | ~binary.any(axis=2)).all():
                disagree = int((binary.any(axis=2) & ~binary.all(axis=2)).sum())
                raise ValueError(
                    f"mask {path} is not single-valued per pixel: its colour channels disagree "
                    f"after thresholding at {self.threshold} on {disagree} pixels (save masks as "
                    "greyscale, white = object)"
                )
            binary = binary[..., 0]
        if not binary.any():
            raise ValueError(f"mask {path} has no object pixel above {self.threshold}")
        return binary

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        image_path, mask_path = self.pairs[index]
        binary = self.read_mask(index)
        photo = _read(image_path, "RGB")
        height, width = binary.shape
        # A photograph may be a scaled copy of the annotated one (the Weizmann photographs are
        # up to 4x their masks): compare shapes, i.e. the aspect ratios.
        mismatch = abs((photo.width / photo.height) / (width / height) - 1.0)
        if mismatch > MAX_SIZE_MISMATCH:
            raise ValueError(
                f"image {image_path} is {photo.width}x{photo.height} (w x h) but its mask "
                f"{mask_path} is {width}x{height}: aspect ratios {mismatch:.0%} apart (more "
                f"than {MAX_SIZE_MISMATCH:.0%}), so they do not show the same frame"
            )
        # To the mask's size first, so that the two line up; then to the evaluation frame.
        photo = photo.resize((width, height), Image.Resampling.BILINEAR)
        photo = photo.resize((self.size, self.size), Image.Resampling.BILINEAR)
        raw = torch.from_numpy(np.array(photo, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        small = cv2.resize(binary.astype(np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        mask = torch.from_numpy(small.astype(bool))
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if ys.numel() == 0:  # a sliver of object lost to the nearest-neighbour resize
            ys, xs = _nearest_object_pixel(binary, self.size)
            mask[ys, xs] = True
        item: dict[str, Any] = {
            "image": normalise_raw(raw, self._mean, self._std),
            "raw": raw,
            "mask": mask,
            "box": torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).to(torch.int64),
            "name": self.names[index],
        }
        if self.label is not None:
            item["label"] = self.label
        return item

    def __repr__(self) -> str:
        return (
            f"MaskFolder(n={len(self)}, size={self.size}, label={self.label}, "
            f"images={str(self.image_dir)!r}, masks={str(self.mask_dir)!r})"
        )


def _nearest_object_pixel(binary: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = np.nonzero(binary)
    y = min(int(ys.mean() * size / binary.shape[0]), size - 1)
    x = min(int(xs.mean() * size / binary.shape[1]), size - 1)
    return torch.tensor([y]), torch.tensor([x])
