"""Hand-worked cases of wsolevaluation's own test file (evaluation_test.py) for box geometry."""

from __future__ import annotations

import numpy as np
import pytest

from fcam.metrics import box_iou, boxes_at_thresholds, resize_bbox

TAUS = np.arange(0, 1, 0.2)
MULTIMODAL = np.array(
    [
        [0.4, 0.0, 0.2, 0.2, 0.2],
        [0.4, 0.4, 0.0, 0.4, 0.0],
        [0.0, 0.0, 0.0, 0.4, 0.0],
        [1.0, 0.6, 0.8, 0.2, 0.2],
    ]
)


def test_iou_degenerate_zero_boxes_are_one_pixel_boxes():
    ious = box_iou(np.zeros((3, 4), dtype=int), np.zeros((5, 4), dtype=int))
    assert ious.shape == (3, 5) and ious.dtype == np.float64
    assert (ious == 1.0).all()


def test_iou_eye_boxes():
    boxes = np.array([[1, 1, 3, 3], [4, 4, 5, 5]])
    assert (box_iou(boxes, boxes) == np.eye(2)).all()


def test_iou_realistic_value_8_over_27():
    # intersection x 3..4, y 2..5 -> 2*4 = 8; areas 5*5 = 25 and 2*5 = 10; union 27.
    iou = box_iou(np.array([[1, 2, 5, 6]]), np.array([[3, 1, 4, 5]]))
    assert iou[0, 0] == pytest.approx(8.0 / 27, abs=1e-12)


def test_iou_disjoint_is_zero_and_touching_counts_inclusively():
    assert box_iou(np.array([[0, 0, 1, 1]]), np.array([[3, 3, 4, 4]]))[0, 0] == 0.0
    # Sharing column x=2 inclusively: intersection 1 x 3 pixels, areas 9 and 9.
    assert box_iou(np.array([[0, 0, 2, 2]]), np.array([[2, 0, 4, 2]]))[0, 0] == pytest.approx(
        3 / 15
    )


def test_iou_rejects_wrong_convention():
    with pytest.raises(ValueError, match="x0<=x1"):
        box_iou(np.array([[1, 1, 0, 0]]), np.array([[1, 1, 2, 2]]))


def test_resize_bbox_case():
    assert resize_bbox((1, 2, 4, 3), (10, 20), (35, 10)) == (3, 1, 14, 1)


def test_resize_bbox_degenerate():
    assert resize_bbox((1, 2, 1, 2), (3, 3), (3, 3)) == (1, 2, 1, 2)


def test_resize_bbox_is_width_first_and_truncates():
    # CUB test image 0: 500 x 335 (w x h), box 60,27,385,331 -> 224 frame.
    assert resize_bbox((60, 27, 385, 331), (500, 335), (224, 224)) == (26, 18, 172, 221)


def test_boxes_degenerate_zero_map():
    boxes = boxes_at_thresholds(np.zeros((3, 3)), TAUS)
    assert [b[0].tolist() for b in boxes] == [[0, 0, 0, 0]] * 5


def test_boxes_unimodal():
    scoremap = np.array(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.4, 0.4, 0.4, 0.6],
            [0.0, 0.4, 1.0, 0.8, 0.6],
            [0.0, 0.4, 0.4, 0.4, 0.6],
        ]
    )
    boxes = boxes_at_thresholds(scoremap, TAUS)
    assert [b[0].tolist() for b in boxes] == [
        [1, 1, 4, 3],
        [1, 1, 4, 3],
        [2, 1, 4, 3],
        [2, 2, 4, 3],
        [2, 2, 3, 3],
    ]


def test_boxes_multimodal_largest_contour():
    boxes = boxes_at_thresholds(MULTIMODAL, TAUS)
    assert [b[0].tolist() for b in boxes] == [
        [0, 0, 4, 3],
        [0, 0, 2, 2],
        [0, 3, 3, 3],
        [2, 3, 3, 3],
        [0, 3, 1, 3],
    ]


def test_boxes_multimodal_all_contours_v2():
    boxes = boxes_at_thresholds(MULTIMODAL, [0.2], multi_contour=True)[0]
    # cut int(0.2 * 255) = 51 keeps the 0.4+ pixels: the top-left L, and the x=3 column which
    # touches the bottom row x=0..2 diagonally (8-connectivity) so they form one contour; each
    # box is (x, y, x + w, y + h) clipped to (W-1, H-1).
    assert sorted(map(tuple, boxes.tolist())) == [(0, 0, 2, 2), (0, 1, 4, 3)]


def test_strict_threshold_and_uint8_cut():
    # 0.5 quantises to 127; at tau = 0.5 the cut is int(0.5 * 255) = 127 and 127 > 127 is
    # false, so only the 1.0 pixel survives.
    scoremap = np.array([[0.5, 1.0, 0.0]])
    assert boxes_at_thresholds(scoremap, [0.5])[0].tolist() == [[1, 0, 2, 0]]
    assert boxes_at_thresholds(scoremap, [0.49])[0].tolist() == [[0, 0, 2, 0]]


def test_cut_is_relative_to_the_uint8_max():
    # max 0.5 -> uint8 127; tau 0.5 cuts at int(0.5 * 127) = 63, so 0.3 (76) survives.
    scoremap = np.array([[0.3, 0.5, 0.2, 0.0]])
    assert boxes_at_thresholds(scoremap, [0.5])[0].tolist() == [[0, 0, 2, 0]]
