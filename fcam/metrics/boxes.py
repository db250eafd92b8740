"""Box geometry of the WSOL protocol: inclusive IoU, GT box rescaling, boxes from score maps.

Everything here reproduces wsolevaluation's ``evaluation.py`` bit for bit:

* boxes are ``(x0, y0, x1, y1)`` pixel indices with *inclusive* ends, so a box covers
  ``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels and ``(0, 0, 0, 0)`` is a one-pixel box;
* a score map is quantised to uint8 as ``int(255 * s)`` (truncation), binarised with a *strict*
  ``>`` against ``int(tau * max(uint8 map))``, and boxed with ``cv2.findContours`` (RETR_TREE,
  CHAIN_APPROX_SIMPLE) and ``cv2.boundingRect`` as ``(x, y, x + w, y + h)`` clipped to
  ``(W - 1, H - 1)``; no contour gives the box ``(0, 0, 0, 0)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from fcam.core.boxes import resize_bbox

__all__ = [
    "best_iou_per_threshold",
    "box_iou",
    "boxes_at_thresholds",
    "contour_boxes",
    "resize_bbox",
]


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    r"""Pairwise IoU with wsolevaluation's inclusive ``+1`` pixel convention.

    .. math::
        \mathrm{IoU}(a, b) = \frac{|a \cap b|}{|a| + |b| - |a \cap b|},\quad
        |a| = (x_1 - x_0 + 1)(y_1 - y_0 + 1)

    A non-positive union gives IoU 0.

    Args:
        boxes_a: ``(A, 4)`` boxes ``x0, y0, x1, y1``.
        boxes_b: ``(B, 4)`` boxes.

    Returns:
        ``(A, B)`` float64 array.

    Example:
        >>> float(box_iou(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))[0, 0]) * 27
        8.0
    """
    a = _check_boxes(boxes_a, "boxes_a")[:, None, :]
    b = _check_boxes(boxes_b, "boxes_b")[None, :, :]
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    degenerate = union <= 0
    iou = inter / np.where(degenerate, 1, union)
    iou[degenerate] = 0.0
    return iou.astype(np.float64)


def _check_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (M, 4), got {boxes.shape}")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError(f"{name} must follow the x0, y0, x1, y1 convention with x0<=x1, y0<=y1")
    return boxes


def contour_boxes(binary: np.ndarray, multi_contour: bool) -> np.ndarray:
    """Boxes of the contours of a binary uint8 image, as the protocol draws them.

    Args:
        binary: ``(H, W)`` uint8 image, foreground non-zero.
        multi_contour: all contours (MaxBoxAccV2) or only the largest by ``cv2.contourArea``
            (MaxBoxAcc v1; ties go to the first contour, like Python's ``max``).

    Returns:
        ``(K, 4)`` int64 boxes, ``[[0, 0, 0, 0]]`` when there is no contour.
    """
    height, width = binary.shape
    # [-2] is the contour list under OpenCV 3 (3 return values) and 4+ (2 return values).
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64)
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    rects = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64).reshape(-1, 4)
    boxes = rects.copy()
    boxes[:, 2] = np.minimum(rects[:, 0] + rects[:, 2], width - 1)
    boxes[:, 3] = np.minimum(rects[:, 1] + rects[:, 3], height - 1)
    return boxes


def _quantise(scoremap: np.ndarray) -> np.ndarray:
    # Multiplication in the map's own dtype, then truncation, as `(s * 255).astype(np.uint8)`.
    return (scoremap * scoremap.dtype.type(255)).astype(np.uint8)


def _threshold_cuts(thresholds: np.ndarray, max_value: int) -> np.ndarray:
    # int(tau * max) with tau float64 and max an integer: the exact cut cv2.threshold applies.
    return np.array([int(tau * max_value) for tau in thresholds], dtype=np.int64)


def _distinct_binaries(
    quantised: np.ndarray, thresholds: np.ndarray
) -> tuple[list[int], np.ndarray]:
    """Group thresholds whose binarised map is identical.

    ``q > c`` only changes when ``c`` crosses a value present in ``q``, so thresholds whose cut
    lies in the same gap between consecutive distinct values of ``q`` yield the same binary map
    and the same boxes. Returns one representative cut per group and each threshold's group.
    """
    cuts = _threshold_cuts(thresholds, int(quantised.max()))
    values = np.unique(quantised)
    rank = np.searchsorted(values, cuts, side="right")
    _, first, inverse = np.unique(rank, return_index=True, return_inverse=True)
    return [int(cuts[i]) for i in first], inverse.reshape(-1)


def _binarise(quantised: np.ndarray, cut: int) -> np.ndarray:
    _, binary = cv2.threshold(quantised, cut, 255, cv2.THRESH_BINARY)
    return binary


def boxes_at_thresholds(
    scoremap: np.ndarray, thresholds: Iterable[float], multi_contour: bool = False
) -> list[np.ndarray]:
    """Estimated boxes at each CAM threshold (wsolevaluation ``compute_bboxes_from_scoremaps``).

    Args:
        scoremap: ``(H, W)`` float32/float64 map in ``[0, 1]``.
        thresholds: CAM thresholds ``tau`` in ``[0, 1)``.
        multi_contour: keep every contour's box (v2) or only the largest contour's (v1).

    Returns:
        One ``(K, 4)`` int64 array per threshold.

    Example:
        >>> s = np.zeros((3, 3)); s[1, 1] = 1.0
        >>> boxes_at_thresholds(s, [0.5])[0].tolist()
        [[1, 1, 2, 2]]
    """
    quantised = _quantise(np.asarray(scoremap))
    thresholds = np.asarray(list(thresholds), dtype=np.float64)
    cuts, group = _distinct_binaries(quantised, thresholds)
    boxes = [contour_boxes(_binarise(quantised, cut), multi_contour) for cut in cuts]
    return [boxes[g] for g in group]


def best_iou_per_threshold(
    quantised: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray, multi_contour: bool
) -> np.ndarray:
    """For one uint8 map, the best IoU over (estimated box, GT box) pairs at every threshold.

    Contours are extracted once per distinct binary map (at most 256), not once per threshold;
    the result is identical to looping over all thresholds.

    Args:
        quantised: ``(H, W)`` uint8 map (``int(255 * s)``).
        gt_boxes: ``(M, 4)`` GT boxes in the map's frame, ``M >= 1``.
        thresholds: ``(T,)`` float64 CAM thresholds.
        multi_contour: v2 (all contours) or v1 (largest contour).

    Returns:
        ``(T,)`` float64 best IoU per threshold.
    """
    cuts, group = _distinct_binaries(quantised, thresholds)
    per_cut = [contour_boxes(_binarise(quantised, cut), multi_contour) for cut in cuts]
    # One IoU call for every box of every cut, then the max within each cut's run of rows.
    starts = np.cumsum([0] + [len(b) for b in per_cut[:-1]])
    ious = box_iou(np.concatenate(per_cut), gt_boxes).max(axis=1)
    return np.maximum.reduceat(ious, starts)[group]
