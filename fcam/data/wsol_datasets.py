"""Datasets for the wsolevaluation layout: CUB (boxes), ILSVRC (several boxes), OpenImages30k
(instance + ignore masks), and a collate function for variable numbers of boxes.

Items follow the evaluation protocol (wsolevaluation ``data_loaders.py`` / ``evaluation.py``):

* the image is resized **directly** to ``size x size`` (no crop, aspect ratio not kept; PIL
  bilinear, as ``torchvision.transforms.Resize`` on PIL images), scaled to ``[0, 1]`` and
  ImageNet-normalised;
* GT boxes are rescaled from the ``image_sizes.txt`` size (width first) with ``resize_bbox``
  (``int`` truncation);
* GT masks: every instance mask is read as greyscale, resized with nearest neighbour and
  thresholded ``> 0.5``; the foreground is their union; ``ignore = (ignore mask > 0.5) & ~fg``.

Item fields (a ``dict``; batch them with :func:`wsol_collate`):

============  ========================  ==============================================
key           type / shape              meaning
============  ========================  ==============================================
``image``     float32 ``(3, S, S)``     normalised image
``raw``       uint8 ``(3, S, S)``       the resized image in [0, 255] (``return_raw=True``)
``label``     ``int``                   class id
``boxes``     int64 ``(M, 4)``          GT boxes in the ``S x S`` frame (box datasets)
``mask``      bool ``(S, S)``           union of instance masks (mask datasets)
``ignore``    bool ``(S, S)``           ignore region outside the foreground (mask datasets)
``image_id``  ``str``                   the metadata image_id
``index``     ``int``                   position in ``image_ids.txt``
============  ========================  ==============================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fcam.core.boxes import resize_bbox
from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.core.normalisation import normalise_raw
from fcam.core.validation import check_int, check_stats
from fcam.data.wsol_metadata import WSOLFormatError, WSOLMetadata, read_wsol_metadata

__all__ = [
    "CUBDataset",
    "ILSVRCDataset",
    "OpenImagesDataset",
    "WSOLDataset",
    "load_mask",
    "wsol_collate",
]

logger = logging.getLogger(__name__)


def load_mask(
    path: str | os.PathLike[str], size: int, expected_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """Read a mask PNG as greyscale, nearest-resize it to ``size x size`` and threshold ``> 0.5``.

    Works for 1-bit, greyscale, RGB and RGBA PNGs (OpenCV's greyscale conversion, as
    wsolevaluation's ``load_mask_image``).

    Args:
        path: mask file.
        size: output side.
        expected_hw: if given, the mask's ``(height, width)`` must equal it.

    Raises:
        FileNotFoundError: the file is missing.
        WSOLFormatError: the file cannot be decoded, or its size differs from ``expected_hw``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing mask file: {path}")
    # imdecode(fromfile) rather than imread: same decoder, but works with non-ASCII paths.
    mask = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise WSOLFormatError(f"cannot decode mask image {path}")
    if expected_hw is not None and mask.shape != tuple(expected_hw):
        raise WSOLFormatError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (w x h) but its image is "
            f"{expected_hw[1]}x{expected_hw[0]}"
        )
    resized = cv2.resize(np.float32(mask), (size, size), interpolation=cv2.INTER_NEAREST)
    return resized > 0.5


class WSOLDataset(Dataset):
    """A split in the wsolevaluation layout (see the module docstring for item fields).

    Args:
        data_root: image root (``image_id`` paths are relative to it).
        metadata: the split's metadata folder, or an already parsed :class:`WSOLMetadata`.
        kind: ``"boxes"``, ``"masks"`` or ``None`` (detect from ``localization.txt``).
        mask_root: root of mask paths (default ``data_root``).
        size: evaluation side ``S`` (224 in the protocol).
        num_classes: if given, labels must lie in ``[0, num_classes)``.
        return_raw: also return the resized uint8 image as ``raw``.
        mean, std: normalisation statistics (ImageNet's by default); one value each for a
            grey classifier, whose ``image`` is then the luma (``raw`` stays RGB).

    Example:
        A split written by :meth:`~fcam.data.SyntheticWSOL.write_wsol`, read back at 32 x 32:

        >>> from fcam.data import SyntheticWSOL
        >>> _ = SyntheticWSOL(2, size=64, split="test").write_wsol("syn", kind="boxes")
        >>> ds = WSOLDataset("syn/images", "syn/metadata/test", size=32)
        >>> item = ds[0]
        >>> ds.kind, item["image"].shape, item["boxes"].shape
        ('boxes', torch.Size([3, 32, 32]), torch.Size([1, 4]))

        CUB after :func:`~fcam.data.convert_cub_raw` (needs the download):

        >>> ds = CUBDataset("CUB_200_2011/images", "metadata/CUB/test")  # doctest: +SKIP
    """

    default_num_classes: ClassVar[int | None] = None
    default_kind: ClassVar[str | None] = None

    def __init__(
        self,
        data_root: str | os.PathLike[str],
        metadata: str | os.PathLike[str] | WSOLMetadata,
        *,
        kind: str | None = None,
        mask_root: str | os.PathLike[str] | None = None,
        size: int = 224,
        num_classes: int | None = None,
        return_raw: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        size = check_int(size, "size")
        # One value each: a grey classifier, whose input is the image's luma.
        grey = hasattr(mean, "__len__") and len(mean) == 1
        mean, std = check_stats(mean, std, channels=1 if grey else 3)
        kind = kind if kind is not None else self.default_kind
        num_classes = num_classes if num_classes is not None else self.default_num_classes
        self.data_root = Path(data_root)
        if not self.data_root.is_dir():
            raise FileNotFoundError(f"data_root not found: {self.data_root}")
        if isinstance(metadata, WSOLMetadata):
            if kind is not None and metadata.kind != kind:
                raise ValueError(f"metadata holds {metadata.kind} annotations, expected {kind}")
            _check_labels(metadata, num_classes)
            self.metadata = metadata
        else:
            self.metadata = read_wsol_metadata(metadata, kind=kind, num_classes=num_classes)
        self.kind = self.metadata.kind
        self.mask_root = Path(mask_root) if mask_root is not None else self.data_root
        self.size = size
        self.num_classes = num_classes
        self.return_raw = return_raw
        self._mean, self._std = mean, std

    @property
    def image_ids(self) -> list[str]:
        return self.metadata.image_ids

    def __len__(self) -> int:
        return len(self.metadata.image_ids)

    def _open(self, image_id: str) -> Image.Image:
        path = self.data_root / image_id
        if not path.is_file():
            raise FileNotFoundError(f"missing image file: {path} (image_id {image_id!r})")
        with Image.open(path) as image:
            return image.convert("RGB")

    def gt_boxes(self, image_id: str) -> torch.Tensor:
        """GT boxes of ``image_id`` rescaled to the ``size x size`` frame, int64 ``(M, 4)``."""
        original = self.metadata.sizes[image_id]
        boxes = [
            resize_bbox(b, original, (self.size, self.size)) for b in self.metadata.boxes[image_id]
        ]
        return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4)

    def gt_mask(
        self, image_id: str, image_hw: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(foreground, ignore)`` bool ``(S, S)`` masks of ``image_id``.

        ``image_hw`` (the image's ``(height, width)``) enables the mask size check.
        """
        fg = np.zeros((self.size, self.size), dtype=bool)
        for mask_path in self.metadata.mask_paths[image_id]:
            fg |= load_mask(self.mask_root / mask_path, self.size, image_hw)
        ignore_path = self.metadata.ignore_paths.get(image_id, "")
        if ignore_path:
            ignore = load_mask(self.mask_root / ignore_path, self.size, image_hw) & ~fg
        else:
            ignore = np.zeros_like(fg)
        return torch.from_numpy(fg), torch.from_numpy(ignore)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        image_id = self.metadata.image_ids[index]
        image = self._open(image_id)
        resized = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        raw = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        item: dict[str, Any] = {
            "image": normalise_raw(raw, self._mean, self._std),
            "label": self.metadata.labels[image_id],
            "image_id": image_id,
            "index": index,
        }
        if self.return_raw:
            item["raw"] = raw
        if self.kind == "boxes":
            item["boxes"] = self.gt_boxes(image_id)
        else:
            item["mask"], item["ignore"] = self.gt_mask(image_id, (image.height, image.width))
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, kind={self.kind!r}, size={self.size}, "
            f"root={str(self.data_root)!r})"
        )


def _check_labels(metadata: WSOLMetadata, num_classes: int | None) -> None:
    for image_id in metadata.image_ids:
        label = metadata.labels.get(image_id)
        if label is None:
            raise WSOLFormatError(f"no label for image_id {image_id!r}")
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise WSOLFormatError(
                f"unknown class id {label} for image_id {image_id!r} (num_classes={num_classes})"
            )


class CUBDataset(WSOLDataset):
    """CUB-200-2011 (``metadata/CUB/<split>``): one box per image, 200 classes.

    Use :meth:`from_raw` to read the raw ``CUB_200_2011`` download directly.
    """

    default_num_classes = 200
    default_kind = "boxes"

    @classmethod
    def from_raw(
        cls, cub_root: str | os.PathLike[str], split: str = "test", **kwargs: Any
    ) -> CUBDataset:
        """Build the dataset from the raw ``CUB_200_2011`` folder (see :func:`read_cub_raw`)."""
        from fcam.data.cub_raw import read_cub_raw

        root = Path(cub_root)
        return cls(root / "images", read_cub_raw(root, split), **kwargs)


class ILSVRCDataset(WSOLDataset):
    """ImageNet (``metadata/ILSVRC/<split>``): one or more boxes per image, 1,000 classes."""

    default_num_classes = 1000
    default_kind = "boxes"


class OpenImagesDataset(WSOLDataset):
    """OpenImages30k (``metadata/OpenImages/<split>``): instance and ignore masks, 100 classes.

    ``image_sizes.txt`` is empty for this dataset and is not needed.
    """

    default_num_classes = 100
    default_kind = "masks"


def wsol_collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate WSOL items: stacks tensors, keeps ``boxes`` as a list of ``(M_i, 4)`` tensors.

    ``labels``/``index`` become int64 tensors and ``image_id`` a list of strings. The result
    feeds :meth:`fcam.metrics.BoxEvaluator.update` directly (``boxes=batch["boxes"]``).

    Use it as ``DataLoader(dataset, batch_size=..., collate_fn=wsol_collate)``.

    Example:
        >>> items = [{"image": torch.zeros(3, 8, 8), "label": 1, "boxes": torch.zeros(2, 4)},
        ...          {"image": torch.zeros(3, 8, 8), "label": 0, "boxes": torch.zeros(1, 4)}]
        >>> batch = wsol_collate(items)
        >>> batch["image"].shape, batch["label"], [len(b) for b in batch["boxes"]]
        (torch.Size([2, 3, 8, 8]), tensor([1, 0]), [2, 1])
    """
    if not batch:
        raise ValueError("batch is empty")
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        if key == "boxes":
            out[key] = values
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (int, np.integer)) and not isinstance(values[0], bool):
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out
