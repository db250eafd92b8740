"""Reading the raw CUB-200-2011 download and converting it to the wsolevaluation layout.

Raw layout (all files space-separated, ids start at 1)::

    CUB_200_2011/
      images/NNN.Class_Name/<file>.jpg
      images.txt               <img_id> <path under images/>
      image_class_labels.txt   <img_id> <class_id 1..200>
      train_test_split.txt     <img_id> <1=train | 0=test>
      bounding_boxes.txt       <img_id> <x> <y> <width> <height>   (float pixels)
      classes.txt              <class_id> <NNN.Class_Name>

Conversion (wsolevaluation ``prepare_cub.sh``): ``image_id`` is the path under ``images/``,
label = ``class_id - 1``, box = ``(int(x), int(y), int(x + w), int(y + h))``, and the size
(width, height) is read from the image header.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from fcam.data.wsol_metadata import WSOLFormatError, WSOLMetadata
from fcam.data.wsol_writer import write_metadata

__all__ = ["convert_cub_raw", "read_cub_raw"]

_SPLIT_FLAG = {"train": "1", "test": "0"}


def _table(path: Path, width: int, layout: str) -> dict[str, list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"missing CUB file: {path}")
    rows: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            # images.txt / classes.txt: the last field is a path or a name, split once.
            parts = line.split(maxsplit=width - 1) if width == 2 else line.split()
            if len(parts) != width:
                raise WSOLFormatError(
                    f"{path}, line {number}: expected '{layout}', got {line.rstrip()!r}"
                )
            if parts[0] in rows:
                raise WSOLFormatError(f"{path}, line {number}: duplicate id {parts[0]!r}")
            rows[parts[0]] = [p.strip() for p in parts[1:]] + [str(number)]
    return rows


def read_cub_raw(
    cub_root: str | os.PathLike[str], split: str = "test", read_sizes: bool = True
) -> WSOLMetadata:
    """Parse a raw ``CUB_200_2011`` folder into the records of one split.

    Args:
        cub_root: the ``CUB_200_2011`` folder (holding ``images.txt``).
        split: ``"train"`` or ``"test"`` (``train_test_split.txt``; the wsolevaluation ``val``
            split is CUBV2, not part of this download).
        read_sizes: read every image header for ``(width, height)`` (needed to rescale boxes).

    Returns:
        :class:`WSOLMetadata` of kind ``"boxes"``, image ids in ``images.txt`` order.

    Raises:
        FileNotFoundError: a file or an image is missing.
        WSOLFormatError: malformed line (file and line named), unknown class id, or an image
            missing from one of the tables.
    """
    if split not in _SPLIT_FLAG:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(cub_root)
    images = _table(root / "images.txt", 2, "<img_id> <path>")
    labels = _table(root / "image_class_labels.txt", 2, "<img_id> <class_id>")
    splits = _table(root / "train_test_split.txt", 2, "<img_id> <is_train>")
    boxes = _table(root / "bounding_boxes.txt", 5, "<img_id> <x> <y> <width> <height>")
    classes = _table(root / "classes.txt", 2, "<class_id> <name>")
    tables = (
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", splits),
        ("bounding_boxes.txt", boxes),
    )
    meta = WSOLMetadata(image_ids=[], labels={}, kind="boxes")
    for img_id, (rel_path, _) in images.items():
        for name, table in tables:
            if img_id not in table:
                raise WSOLFormatError(f"{root / name}: no entry for img_id {img_id}")
        flag, line = splits[img_id]
        if flag not in ("0", "1"):
            raise WSOLFormatError(
                f"{root / 'train_test_split.txt'}, line {line}: flag must be 0 or 1, got {flag!r}"
            )
        if flag != _SPLIT_FLAG[split]:
            continue
        class_id, line = labels[img_id]
        if class_id not in classes:
            raise WSOLFormatError(
                f"{root / 'image_class_labels.txt'}, line {line}: unknown class id {class_id} "
                f"(not in classes.txt)"
            )
        *coords, line = boxes[img_id]
        try:
            x, y, w, h = (float(c) for c in coords)
        except ValueError:
            raise WSOLFormatError(
                f"{root / 'bounding_boxes.txt'}, line {line}: non-numeric box {coords}"
            ) from None
        if w < 0 or h < 0 or x < 0 or y < 0:
            raise WSOLFormatError(
                f"{root / 'bounding_boxes.txt'}, line {line}: negative box {coords}"
            )
        meta.image_ids.append(rel_path)
        meta.labels[rel_path] = int(class_id) - 1
        meta.boxes[rel_path] = [(int(x), int(y), int(x + w), int(y + h))]
        if read_sizes:
            path = root / "images" / rel_path
            if not path.is_file():
                raise FileNotFoundError(f"missing image file: {path} (images.txt id {img_id})")
            with Image.open(path) as image:
                meta.sizes[rel_path] = image.size
    if not meta.image_ids:
        raise WSOLFormatError(f"{root / 'train_test_split.txt'}: no image in split {split!r}")
    return meta


def convert_cub_raw(
    cub_root: str | os.PathLike[str], metadata_root: str | os.PathLike[str]
) -> dict[str, Path]:
    """Write ``metadata_root/{train,test}/`` in the wsolevaluation format from a raw CUB folder.

    Images stay where they are: use ``<cub_root>/images`` as the data root.

    Returns:
        ``{"train": folder, "test": folder}``.

    Example:
        >>> convert_cub_raw("CUB_200_2011", "metadata/CUB")  # doctest: +SKIP
        >>> CUBDataset("CUB_200_2011/images", "metadata/CUB/test")  # doctest: +SKIP
    """
    out = {}
    for split in _SPLIT_FLAG:
        out[split] = write_metadata(read_cub_raw(cub_root, split), Path(metadata_root) / split)
    return out
