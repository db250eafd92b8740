"""Reading the wsolevaluation metadata layout.

A split lives in one folder (``metadata/<Dataset>/<split>/``) holding four comma-separated files
without header, usually without a trailing newline:

=====================  ==========================================================
``image_ids.txt``      ``image_id`` per line; fixes the order and the set of images
``class_labels.txt``   ``image_id,label`` (labels start at 0)
``image_sizes.txt``    ``image_id,width,height`` (**width first**; empty for OpenImages)
``localization.txt``   boxes: ``image_id,x0,y0,x1,y1`` (one line per box), or masks:
                       ``image_id,mask_path,ignore_path`` (one line per instance mask, the
                       ignore path only on the image's first line, empty on the others)
=====================  ==========================================================

``image_id`` is a path relative to the image root; mask paths are relative to the mask root.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["METADATA_FILES", "WSOLFormatError", "WSOLMetadata", "read_wsol_metadata"]

logger = logging.getLogger(__name__)

METADATA_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")


class WSOLFormatError(ValueError):
    """A metadata or annotation file is malformed or inconsistent (the message names it)."""


@dataclass
class WSOLMetadata:
    """In-memory form of one split's metadata.

    Attributes:
        image_ids: images in evaluation order.
        labels: class label per image.
        sizes: original ``(width, height)`` per image (empty for OpenImages).
        boxes: GT boxes ``(x0, y0, x1, y1)`` in original pixels per image (``kind="boxes"``).
        mask_paths: instance-mask paths per image (``kind="masks"``).
        ignore_paths: ignore-mask path per image, ``""`` for none (``kind="masks"``).
        kind: ``"boxes"`` or ``"masks"``.
    """

    image_ids: list[str]
    labels: dict[str, int]
    kind: str
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    mask_paths: dict[str, list[str]] = field(default_factory=dict)
    ignore_paths: dict[str, str] = field(default_factory=dict)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-empty lines with their 1-based numbers; tolerates a trailing newline and CRLF."""
    if not path.is_file():
        raise FileNotFoundError(f"missing metadata file: {path}")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield number, line


def _fields(path: Path, number: int, line: str, count: int, layout: str) -> list[str]:
    parts = line.split(",")
    if len(parts) != count:
        raise WSOLFormatError(f"{path}, line {number}: expected '{layout}', got {line!r}")
    return parts


def _number(path: Path, number: int, text: str, what: str) -> float:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise WSOLFormatError(
                f"{path}, line {number}: {what} {text!r} is not a number"
            ) from None


def _read_ids(path: Path) -> list[str]:
    ids, seen = [], set()
    for number, line in _lines(path):
        if "," in line:
            raise WSOLFormatError(f"{path}, line {number}: expected 'image_id', got {line!r}")
        if line in seen:
            raise WSOLFormatError(f"{path}, line {number}: duplicate image_id {line!r}")
        seen.add(line)
        ids.append(line)
    if not ids:
        raise WSOLFormatError(f"{path} lists no image")
    return ids


def _read_labels(path: Path, num_classes: int | None) -> dict[str, int]:
    labels = {}
    for number, line in _lines(path):
        image_id, text = _fields(path, number, line, 2, "image_id,label")
        try:
            label = int(text)
        except ValueError:
            raise WSOLFormatError(
                f"{path}, line {number}: label {text!r} is not an integer"
            ) from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
            raise WSOLFormatError(
                f"{path}, line {number}: unknown class id {label} (expected {bound})"
            )
        labels[image_id] = label
    return labels


def _read_sizes(path: Path) -> dict[str, tuple[int, int]]:
    sizes = {}
    for number, line in _lines(path):
        image_id, w, h = _fields(path, number, line, 3, "image_id,width,height")
        width, height = (
            _number(path, number, v, name) for v, name in ((w, "width"), (h, "height"))
        )
        if width <= 0 or height <= 0:
            raise WSOLFormatError(
                f"{path}, line {number}: image size must be positive, got {line!r}"
            )
        sizes[image_id] = (int(width), int(height))
    return sizes


def _detect_kind(path: Path) -> str:
    for _, line in _lines(path):
        return "boxes" if line.count(",") == 4 else "masks"
    raise WSOLFormatError(f"{path} is empty: no box or mask annotation")


def _read_boxes(path: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    for number, line in _lines(path):
        image_id, *coords = _fields(path, number, line, 5, "image_id,x0,y0,x1,y1")
        x0, y0, x1, y1 = (_number(path, number, c, "coordinate") for c in coords)
        if x1 < x0 or y1 < y0 or min(x0, y0) < 0:
            raise WSOLFormatError(
                f"{path}, line {number}: box must be x0,y0,x1,y1 with 0<=x0<=x1, 0<=y0<=y1, "
                f"got {line!r}"
            )
        boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
    return boxes


def _read_masks(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    masks: dict[str, list[str]] = {}
    ignores: dict[str, str] = {}
    for number, line in _lines(path):
        image_id, mask_path, ignore_path = _fields(
            path, number, line, 3, "image_id,mask_path,ignore_path"
        )
        if not mask_path:
            raise WSOLFormatError(f"{path}, line {number}: empty mask path in {line!r}")
        if image_id in masks:
            if ignore_path:
                raise WSOLFormatError(
                    f"{path}, line {number}: the ignore path must appear only on the first line "
                    f"of {image_id!r}, later lines leave it empty"
                )
            masks[image_id].append(mask_path)
        else:
            masks[image_id] = [mask_path]
            ignores[image_id] = ignore_path
    return masks, ignores


def read_wsol_metadata(
    metadata_dir: str | os.PathLike[str],
    kind: str | None = None,
    num_classes: int | None = None,
) -> WSOLMetadata:
    """Parse one split's metadata folder.

    Args:
        metadata_dir: folder with the four ``.txt`` files.
        kind: ``"boxes"``, ``"masks"`` or ``None`` to detect it from ``localization.txt``.
        num_classes: if given, labels must lie in ``[0, num_classes)``.

    Returns:
        The parsed :class:`WSOLMetadata`.

    Raises:
        FileNotFoundError: a metadata file is missing (named in the message).
        WSOLFormatError: a malformed line (file and line number in the message), an unknown
            class id, or an image without label / size / annotation.

    Example:
        >>> from fcam.data import write_metadata
        >>> image_id = "001.Albatross/a.jpg"
        >>> meta = WSOLMetadata([image_id], {image_id: 0}, "boxes", sizes={image_id: (500, 335)},
        ...                     boxes={image_id: [(60, 27, 385, 331)]})
        >>> folder = write_metadata(meta, "metadata/CUB/test")
        >>> back = read_wsol_metadata(folder)
        >>> back == meta, back.sizes[image_id]  # sizes are (width, height)
        (True, (500, 335))
    """
    root = Path(metadata_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"metadata folder not found: {root}")
    ids_path, labels_path, sizes_path, loc_path = (root / name for name in METADATA_FILES)
    image_ids = _read_ids(ids_path)
    labels = _read_labels(labels_path, num_classes)
    sizes = _read_sizes(sizes_path)
    detected = _detect_kind(loc_path)
    if kind is None:
        kind = detected
    elif kind not in ("boxes", "masks"):
        raise ValueError(f"kind must be 'boxes', 'masks' or None, got {kind!r}")
    elif kind != detected:
        raise WSOLFormatError(f"{loc_path} holds {detected} annotations, expected {kind}")
    meta = WSOLMetadata(image_ids=image_ids, labels=labels, kind=kind, sizes=sizes)
    if kind == "boxes":
        meta.boxes = _read_boxes(loc_path)
        annotated: Mapping[str, object] = meta.boxes
    else:
        meta.mask_paths, meta.ignore_paths = _read_masks(loc_path)
        annotated = meta.mask_paths
    for image_id in image_ids:
        if image_id not in labels:
            raise WSOLFormatError(f"{labels_path}: no label for image_id {image_id!r}")
        if image_id not in annotated:
            raise WSOLFormatError(f"{loc_path}: no {kind} annotation for image_id {image_id!r}")
        if kind == "boxes" and image_id not in sizes:
            raise WSOLFormatError(f"{sizes_path}: no size for image_id {image_id!r}")
    logger.debug("read %d images (%s) from %s", len(image_ids), kind, root)
    return meta
