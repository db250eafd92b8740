"""Box rescaling, shared by the datasets (boxes at the loader's size) and the metrics."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["resize_bbox"]


def resize_bbox(
    box: Sequence[float], image_size: Sequence[float], resize_size: Sequence[float]
) -> tuple[int, int, int, int]:
    """Rescale a box from an image of size ``(w, h)`` to ``(w', h')``, truncating with ``int``.

    Args:
        box: ``(x0, y0, x1, y1)``.
        image_size: original ``(width, height)`` (width first, as in ``image_sizes.txt``).
        resize_size: target ``(width, height)``.

    Returns:
        ``(int(x0 * w'/w), int(y0 * h'/h), int(x1 * w'/w), int(y1 * h'/h))``.

    Example:
        >>> resize_bbox((1, 2, 4, 3), (10, 20), (35, 10))
        (3, 1, 14, 1)
    """
    x0, y0, x1, y1 = map(float, box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box must follow x0, y0, x1, y1 with x0<=x1 and y0<=y1, got {box}")
    width, height = map(float, image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {image_size}")
    new_width, new_height = map(float, resize_size)
    return (
        int(x0 * new_width / width),
        int(y0 * new_height / height),
        int(x1 * new_width / width),
        int(y1 * new_height / height),
    )
