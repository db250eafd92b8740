"""Writing datasets in the wsolevaluation layout (images, masks and metadata files).

The files are written exactly as wsolevaluation ships them: comma-separated, no header, no
trailing newline, sizes width first, instance masks as 1-bit PNGs, ignore masks as RGB PNGs
(0 or 255), and the ignore path only on an image's first ``localization.txt`` line. Every file
is written atomically with :func:`fcam.core.io.atomic_write_bytes` (temporary file, ``fsync``,
then ``os.replace``; the file mode follows the umask).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from fcam.core.io import atomic_write_bytes
from fcam.data.wsol_metadata import METADATA_FILES, WSOLMetadata

__all__ = ["write_metadata", "write_wsol_layout"]

logger = logging.getLogger(__name__)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_metadata(metadata: WSOLMetadata, metadata_dir: str | os.PathLike[str]) -> Path:
    """Write the four metadata files of one split (no trailing newline).

    For ``kind="masks"``, ``image_sizes.txt`` holds the sizes in ``metadata.sizes`` (empty, as
    in OpenImages, when there are none).

    Returns:
        The metadata folder.
    """
    root = Path(metadata_dir)
    ids = metadata.image_ids
    for image_id in ids:
        if "," in image_id or "\n" in image_id:
            raise ValueError(f"image_id must not contain ',' or a newline: {image_id!r}")
    ids_file, labels_file, sizes_file, loc_file = (root / name for name in METADATA_FILES)
    _write_lines(ids_file, ids)
    _write_lines(labels_file, (f"{i},{metadata.labels[i]}" for i in ids))
    _write_lines(
        sizes_file,
        (f"{i},{metadata.sizes[i][0]},{metadata.sizes[i][1]}" for i in ids if i in metadata.sizes),
    )
    if metadata.kind == "boxes":
        loc = (f"{i},{','.join(_fmt(v) for v in box)}" for i in ids for box in metadata.boxes[i])
    elif metadata.kind == "masks":
        loc = (
            f"{i},{mask},{metadata.ignore_paths.get(i, '') if k == 0 else ''}"
            for i in ids
            for k, mask in enumerate(metadata.mask_paths[i])
        )
    else:
        raise ValueError(f"metadata.kind must be 'boxes' or 'masks', got {metadata.kind!r}")
    _write_lines(loc_file, loc)
    return root


def _image_array(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.transpose(1, 2, 0)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"sample image must be uint8 (H, W, 3), (3, H, W) or a PIL image, got "
            f"{array.dtype} {array.shape}"
        )
    return array


def _encode(image: Image.Image, suffix: str, jpeg_quality: int) -> bytes:
    buffer = io.BytesIO()
    if suffix in (".jpg", ".jpeg"):
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    elif suffix == ".png":
        image.save(buffer, format="PNG")
    else:
        raise ValueError(f"image_id must end in .jpg, .jpeg or .png, got suffix {suffix!r}")
    return buffer.getvalue()


def _mask_array(mask: Any, shape: tuple[int, int], what: str) -> np.ndarray:
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.shape != shape:
        raise ValueError(f"{what} has shape {array.shape}, its image is {shape}")
    return array.astype(bool)


def _sample_masks(sample: Mapping[str, Any]) -> list[Any]:
    if "masks" in sample:
        return list(sample["masks"])
    if "mask" in sample:
        return [sample["mask"]]
    raise ValueError(f"sample {sample.get('image_id')!r} has no 'mask'/'masks' (kind='masks')")


def _sample_boxes(sample: Mapping[str, Any]) -> list[tuple[float, float, float, float]]:
    raw = sample.get("boxes", sample.get("box"))
    if raw is None:
        raise ValueError(f"sample {sample.get('image_id')!r} has no 'box'/'boxes' (kind='boxes')")
    array = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
    return [(float(x0), float(y0), float(x1), float(y1)) for x0, y0, x1, y1 in array.reshape(-1, 4)]


def write_wsol_layout(
    samples: Iterable[Mapping[str, Any]],
    data_root: str | os.PathLike[str],
    metadata_dir: str | os.PathLike[str],
    *,
    kind: str,
    mask_root: str | os.PathLike[str] | None = None,
    write_sizes: bool | None = None,
    jpeg_quality: int = 95,
) -> WSOLMetadata:
    """Write images, masks and the metadata of one split in the wsolevaluation layout.

    Args:
        samples: mappings with ``image_id`` (relative path ending in ``.png``/``.jpg``, e.g.
            ``"test/star/000003.png"``), ``image`` (uint8 ``(H, W, 3)`` array, uint8 ``(3, H, W)``
            tensor or PIL image), ``label`` (int), and, for ``kind="boxes"``, ``boxes`` (``(M,
            4)``) or ``box`` (``(4,)``) in image pixels; for ``kind="masks"``, ``masks`` (list of
            bool ``(H, W)``) or ``mask``, plus an optional bool ``ignore`` region.
        data_root: image root; images go to ``data_root / image_id``.
        metadata_dir: folder for the four metadata files.
        kind: ``"boxes"`` (CUB / ILSVRC style) or ``"masks"`` (OpenImages style).
        mask_root: root of mask paths (default: ``data_root``). Masks are written next to their
            image as ``<stem>_m<label>_<k>.png`` (1-bit) and ``<stem>_ignore.png`` (RGB).
        write_sizes: fill ``image_sizes.txt``; default ``True`` for boxes and ``False`` (empty
            file, as OpenImages) for masks.
        jpeg_quality: quality of ``.jpg`` images.

    Returns:
        The :class:`WSOLMetadata` written, as :func:`read_wsol_metadata` will read it back.

    Example:
        >>> import numpy as np
        >>> image = np.zeros((30, 40, 3), dtype=np.uint8)
        >>> mask = np.zeros((30, 40), dtype=bool); mask[5:20, 10:30] = True
        >>> samples = [{"image_id": "val/a/1.png", "image": image, "label": 0, "mask": mask}]
        >>> meta = write_wsol_layout(samples, "out", "out/meta/val", kind="masks")
        >>> meta.mask_paths["val/a/1.png"], meta.ignore_paths["val/a/1.png"]
        (['val/a/1_m0_00000000.png'], 'val/a/1_ignore.png')

        :meth:`fcam.data.SyntheticWSOL.write_wsol` writes a synthetic split this way.
    """
    if kind not in ("boxes", "masks"):
        raise ValueError(f"kind must be 'boxes' or 'masks', got {kind!r}")
    data_root = Path(data_root)
    mask_root = Path(mask_root) if mask_root is not None else data_root
    write_sizes = (kind == "boxes") if write_sizes is None else write_sizes
    meta = WSOLMetadata(image_ids=[], labels={}, kind=kind)
    for sample in samples:
        image_id = str(sample["image_id"])
        if image_id in meta.labels:
            raise ValueError(f"duplicate image_id {image_id!r}")
        rel = PurePosixPath(image_id)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"image_id must be a relative path inside data_root, got {image_id!r}")
        array = _image_array(sample["image"])
        height, width = array.shape[:2]
        atomic_write_bytes(
            data_root / rel, _encode(Image.fromarray(array), rel.suffix.lower(), jpeg_quality)
        )
        meta.image_ids.append(image_id)
        meta.labels[image_id] = int(sample["label"])
        if write_sizes:
            meta.sizes[image_id] = (width, height)
        if kind == "boxes":
            meta.boxes[image_id] = _sample_boxes(sample)
            continue
        stem = rel.with_suffix("")
        paths = []
        for k, mask in enumerate(_sample_masks(sample)):
            bits = _mask_array(mask, (height, width), f"mask {k} of {image_id!r}")
            path = f"{stem}_m{meta.labels[image_id]}_{k:08x}.png"
            atomic_write_bytes(
                mask_root / path, _encode(Image.fromarray(bits).convert("1"), ".png", 0)
            )
            paths.append(path)
        if not paths:
            raise ValueError(f"sample {image_id!r} has no instance mask")
        ignore = sample.get("ignore")
        bits = (
            np.zeros((height, width), bool)
            if ignore is None
            else _mask_array(ignore, (height, width), f"ignore of {image_id!r}")
        )
        rgb = np.repeat((bits.astype(np.uint8) * 255)[..., None], 3, axis=2)
        ignore_path = f"{stem}_ignore.png"
        atomic_write_bytes(mask_root / ignore_path, _encode(Image.fromarray(rgb), ".png", 0))
        meta.mask_paths[image_id] = paths
        meta.ignore_paths[image_id] = ignore_path
    if not meta.image_ids:
        raise ValueError("samples is empty")
    write_metadata(meta, metadata_dir)
    logger.info("wrote %d images (%s) under %s", len(meta.image_ids), kind, data_root)
    return meta
