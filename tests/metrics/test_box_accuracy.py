"""MaxBoxAcc / MaxBoxAccV2: brute force over every threshold, invariances, evaluator API."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fcam.metrics import BoxEvaluator, maxboxacc


# ----------------------------------------------------------------------------- reference
def _reference_iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return 0.0 if union <= 0 else inter / union


def _reference_boxes(scoremap, tau, multi_contour):
    """One threshold, written out as the protocol states it."""
    height, width = scoremap.shape
    image = (scoremap * 255).astype(np.uint8)
    _, binary = cv2.threshold(image, int(tau * np.max(image)), 255, cv2.THRESH_BINARY)
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return [[0, 0, 0, 0]]
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return boxes


def reference_maxboxacc(maps, gt_boxes, version=2, interval=0.001, iou_thresholds=(30, 50, 70)):
    """Loop over every image and every threshold; returns (value, per-IoU maxima, curves)."""
    taus = list(np.arange(0, 1, interval))
    correct = {d: np.zeros(len(taus)) for d in iou_thresholds}
    for scoremap, gts in zip(maps, gt_boxes, strict=True):
        for t, tau in enumerate(taus):
            boxes = _reference_boxes(scoremap, tau, multi_contour=version == 2)
            best = max(_reference_iou(b, g) for b in boxes for g in gts)
            for d in iou_thresholds:
                if best >= d / 100:
                    correct[d][t] += 1
    curves = {d: correct[d] * 100.0 / len(maps) for d in iou_thresholds}
    per_iou = {d: curves[d].max() for d in iou_thresholds}
    value = per_iou[50] if version == 1 else float(np.average(list(per_iou.values())))
    return value, per_iou, curves


# ----------------------------------------------------------------------------- fixtures
def _random_maps(seed, n=6, size=32, dtype=np.float64):
    """Smooth multi-blob maps; some min-max normalised, some with max < 1 (probabilities)."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        noise = rng.random((size, size)).astype(np.float32)
        field = cv2.GaussianBlur(noise, (0, 0), sigmaX=rng.uniform(1.5, 4.0)).astype(np.float64)
        field = (field - field.min()) / (field.max() - field.min())
        field = np.clip(field - rng.uniform(0.2, 0.5), 0, None)  # separate blobs, zero ground
        field = field / field.max()
        if i % 3 == 1:
            field = field * rng.uniform(0.3, 0.9)  # an unnormalised probability map
        if i % 3 == 2:
            field = field**3  # peaky
        maps.append(field.astype(dtype))
    boxes = []
    for field in maps:
        # One GT box near the map's high region (jittered), plus 0-2 random boxes: scores
        # then spread over the whole [0, 100] range.
        ys, xs = np.nonzero(field > rng.uniform(0.4, 0.9) * field.max())
        jit = rng.integers(-4, 5, 4)
        near = [xs.min() + jit[0], ys.min() + jit[1], xs.max() + jit[2], ys.max() + jit[3]]
        near = np.clip(near, 0, size - 1)
        near[2], near[3] = max(near[0], near[2]), max(near[1], near[3])
        count = int(rng.integers(0, 3))
        x0 = rng.integers(0, size - 8, count)
        y0 = rng.integers(0, size - 8, count)
        x1 = np.minimum(x0 + rng.integers(2, 10, count), size - 1)
        y1 = np.minimum(y0 + rng.integers(2, 10, count), size - 1)
        boxes.append(np.concatenate([np.array([near]), np.stack([x0, y0, x1, y1], axis=1)]))
    return np.stack(maps), boxes


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_path_equals_brute_force_over_1000_thresholds(version, seed):
    maps, boxes = _random_maps(seed)
    expected, per_iou, curves = reference_maxboxacc(maps, boxes, version=version)
    ev = BoxEvaluator(version=version)
    ev.update(maps, boxes)
    result = ev.compute()
    assert result.value == pytest.approx(expected, abs=1e-6)
    for d, v in per_iou.items():
        assert result.max_box_acc[d] == pytest.approx(v, abs=1e-6)
        # Every point of BoxAcc(tau), not only the maxima, and the curves do vary with tau.
        np.testing.assert_allclose(result.curves[d], curves[d], rtol=0, atol=1e-9)
        assert len(np.unique(curves[d])) > 2
    assert maxboxacc(maps, boxes, version=version) == pytest.approx(expected, abs=1e-6)


def test_float32_maps_quantise_in_float32_like_the_protocol():
    maps, boxes = _random_maps(3, n=4, dtype=np.float32)
    expected, _, _ = reference_maxboxacc(maps, boxes, version=2, interval=0.01)
    assert maxboxacc(torch.from_numpy(maps), boxes, cam_curve_interval=0.01) == pytest.approx(
        expected, abs=1e-6
    )


def test_results_are_not_trivial():
    # Guards the brute-force comparison against comparing two constant outputs.
    maps, boxes = _random_maps(0)
    v1 = maxboxacc(maps, boxes, version=1, cam_curve_interval=0.01)
    v2 = maxboxacc(maps, boxes, version=2, cam_curve_interval=0.01)
    assert 0.0 < v1 < 100.0 and 0.0 < v2 < 100.0


def test_perfect_box_maps_score_100():
    maps = np.zeros((3, 20, 20))
    gts = [
        np.array([[2, 3, 8, 9]]),
        np.array([[10, 0, 19, 19]]),
        np.array([[0, 0, 4, 4], [12, 12, 16, 16]]),
    ]
    for m, g in zip(maps, gts, strict=True):
        x0, y0, x1, y1 = g[0]
        m[y0:y1, x0:x1] = 1.0  # boundingRect gives x + w = x1, exactly the GT box
    assert maxboxacc(maps, gts) == 100.0
    assert maxboxacc(maps, gts, version=1) == 100.0


def test_wrong_box_scores_zero_at_all_ious():
    maps = np.zeros((1, 20, 20))
    maps[0, 0:3, 0:3] = 1.0
    result_value = maxboxacc(maps, [np.array([[10, 10, 19, 19]])])
    assert result_value == 0.0


def test_v1_largest_contour_vs_v2_any_contour():
    # Large blob far from the GT, small blob on it: only v2 (all contours) can match.
    scoremap = np.zeros((1, 30, 30))
    scoremap[0, 0:12, 0:12] = 1.0
    scoremap[0, 20:24, 20:24] = 1.0
    gt = [np.array([[20, 20, 24, 24]])]
    assert maxboxacc(scoremap, gt, version=1) == 0.0
    ev = BoxEvaluator(version=2)
    ev.update(scoremap, gt)
    assert ev.compute().max_box_acc == {30: 100.0, 50: 100.0, 70: 100.0}


def test_multiple_gt_boxes_any_match_counts():
    scoremap = np.zeros((1, 30, 30))
    scoremap[0, 2:10, 2:10] = 1.0
    gts = [np.array([[20, 20, 29, 29], [2, 2, 10, 10]])]
    assert maxboxacc(scoremap, gts) == 100.0


# ----------------------------------------------------------------------------- invariances
def _quantised_maps(seed, step, top, n=5, size=24):
    """Maps whose uint8 levels are multiples of ``step``, with max level ``step * top``."""
    maps, boxes = _random_maps(seed, n=n, size=size)
    peak = maps.max(axis=(1, 2), keepdims=True)
    levels = np.floor(maps / peak * top) * step
    # +0.25 keeps int(255 * s) on the level despite float rounding, for s and s / step.
    return (levels + 0.25) / 255, boxes


# ``step * top`` is coprime to 10 (or tau * max only hits integers at exactly representable
# tau, as 0.5 * 254): no tau = j / 1000 puts tau * max within float error of an integer, where
# int(tau * m) and int(tau * m / k) could round on different sides.
@pytest.mark.parametrize(("step", "top"), [(2, 127), (3, 83), (7, 33), (9, 27)])
@pytest.mark.parametrize("version", [1, 2])
def test_invariant_to_scaling_when_quantisation_is_preserved(step, top, version):
    # The cut int(tau * max) is relative to the map's max. For uint8 levels that are multiples
    # of k, dividing the map by k divides every level and the max by k exactly, and
    # q > int(tau m)  <=>  q / k > int(tau m / k)  for q a multiple of k: every binary map, box,
    # curve and MaxBoxAcc is unchanged (e.g. unnormalised F-CAM probabilities).
    maps, boxes = _quantised_maps(7, step, top)
    quant = (maps * 255).astype(np.uint8)
    assert (quant % step == 0).all() and (quant.max(axis=(1, 2)) == step * top).all()
    assert ((maps / step * 255).astype(np.uint8) == quant // step).all()
    a, b = BoxEvaluator(version=version), BoxEvaluator(version=version)
    a.update(maps, boxes)
    b.update(maps / step, boxes)
    ra, rb = a.compute(), b.compute()
    assert 0 < ra.max_box_acc[30]
    assert ra.value == rb.value and ra.max_box_acc == rb.max_box_acc
    for d in ra.curves:
        np.testing.assert_array_equal(ra.curves[d], rb.curves[d])


def test_invariant_to_changes_within_a_quantisation_cell():
    maps, boxes = _random_maps(4, n=4)
    cells = np.floor(maps * 255)
    jitter = np.random.default_rng(0).uniform(0.05, 0.95, maps.shape)
    moved = np.minimum((cells + jitter) / 255, 1.0)
    assert ((moved * 255).astype(np.uint8) == (maps * 255).astype(np.uint8)).all()
    assert maxboxacc(maps, boxes) == maxboxacc(moved, boxes)


@pytest.mark.parametrize("version", [1, 2])
def test_per_image_oracle_invariant_to_strictly_monotone_level_maps(version):
    # For one image the max over tau ranges over every binary map {q > c}, c = 0..254, when
    # the max is 255 and the grid is fine enough (0.001 * 255 < 1). A strictly increasing map
    # of the uint8 levels fixing 0 and 255 (here a gamma curve on levels spaced by 17) only
    # relabels them, so the per-image MaxBoxAcc at every IoU is unchanged.
    levels = np.arange(0, 256, 17)
    gamma = np.round(255 * (levels / 255.0) ** 2).astype(int)
    assert (np.diff(gamma) > 0).all() and gamma[0] == 0 and gamma[-1] == 255
    lut = dict(zip(levels, gamma, strict=True))
    maps, boxes = _random_maps(11, n=4)
    for scoremap, gt in zip(maps, boxes, strict=True):
        q = levels[np.abs(scoremap[..., None] * 255 - levels).argmin(-1)]
        q[np.unravel_index(q.argmax(), q.shape)] = 255
        original = (q + 0.25) / 255
        remapped = (np.vectorize(lut.get)(q) + 0.25) / 255
        a, b = BoxEvaluator(version=version), BoxEvaluator(version=version)
        a.update(np.minimum(original, 1.0), [gt])
        b.update(np.minimum(remapped, 1.0), [gt])
        assert a.compute().max_box_acc == b.compute().max_box_acc


# ----------------------------------------------------------------------------- evaluator API
def test_batches_accumulate_like_one_call_and_reset():
    maps, boxes = _random_maps(5, n=6)
    whole = BoxEvaluator(cam_curve_interval=0.01)
    whole.update(maps, boxes)
    parts = BoxEvaluator(cam_curve_interval=0.01)
    parts.update(torch.from_numpy(maps[:2]), boxes[:2])
    parts.update(maps[2:], [torch.from_numpy(b) for b in boxes[2:]])
    a, b = whole.compute(), parts.compute()
    assert a.value == b.value and a.num_images == b.num_images == 6
    for d in a.curves:
        np.testing.assert_array_equal(a.curves[d], b.curves[d])
    parts.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        parts.compute()


def test_padded_box_tensor_equals_box_list():
    maps, boxes = _random_maps(6, n=4)
    padded = torch.full((4, 3, 4), -1, dtype=torch.int64)
    for i, b in enumerate(boxes):
        padded[i, : len(b)] = torch.from_numpy(b)
    assert maxboxacc(maps, padded, cam_curve_interval=0.01) == maxboxacc(
        maps, boxes, cam_curve_interval=0.01
    )


def test_one_box_per_image_forms():
    maps, boxes = _random_maps(10, n=3)
    first = np.stack([b[0] for b in boxes])  # (N, 4): one box per image
    expected = maxboxacc(maps, [b[:1] for b in boxes], cam_curve_interval=0.01)
    assert maxboxacc(maps, torch.from_numpy(first), cam_curve_interval=0.01) == expected
    assert maxboxacc(maps, [b[0] for b in boxes], cam_curve_interval=0.01) == expected
    assert maxboxacc(maps, [b[0].tolist() for b in boxes], cam_curve_interval=0.01) == expected
    # A single map with a 2-D array: all its rows are that image's boxes.
    single = maxboxacc(maps[:1], boxes[0], cam_curve_interval=0.01)
    assert single == maxboxacc(maps[:1], [boxes[0]], cam_curve_interval=0.01)


def test_curves_best_tau_and_settings():
    maps, boxes = _random_maps(8, n=4)
    ev = BoxEvaluator(version=2, cam_curve_interval=0.01)
    ev.update(maps, boxes)
    r = ev.compute()
    assert r.metric == "MaxBoxAccV2" and r.thresholds.shape == (100,)
    for d in (30, 50, 70):
        assert r.curves[d].shape == (100,)
        assert r.curves[d].max() == r.max_box_acc[d]
        assert r.best_tau[d] == r.thresholds[int(np.argmax(r.curves[d]))]
    assert r.value == pytest.approx(np.mean([r.max_box_acc[d] for d in (30, 50, 70)]))
    assert r.settings == {
        "version": 2,
        "cam_curve_interval": 0.01,
        "iou_thresholds": [30, 50, 70],
        "multi_contour": True,
    }
    assert r.gt_known_loc == r.max_box_acc
    assert r.top1_loc is None and r.to_dict()["MaxBoxAccV2"] == r.value


def test_top1_top5_localisation():
    # Four images, all perfectly localised. Image 0: true class is the arg-max; image 1: true
    # class ranked 3rd; image 2: ranked 7th; image 3: arg-max but its map misses the box.
    maps = np.zeros((4, 16, 16))
    gt = np.array([[2, 2, 8, 8]])
    for i in range(3):
        maps[i, 2:8, 2:8] = 1.0
    maps[3, 10:14, 10:14] = 1.0
    labels = torch.tensor([0, 1, 2, 3])
    logits = torch.zeros(4, 10)
    logits[0, 0] = 5
    logits[1, [5, 6, 1]] = torch.tensor([5.0, 4.0, 3.0])
    logits[2, [3, 4, 5, 6, 7, 8, 2]] = torch.tensor([9.0, 8, 7, 6, 5, 4, 3])
    logits[3, 3] = 5
    ev = BoxEvaluator(cam_curve_interval=0.01)
    ev.update(maps, [gt] * 4, labels=labels, logits=logits)
    r = ev.compute()
    assert r.max_box_acc[50] == 75.0  # GT-known: images 0, 1, 2
    assert r.top1_loc[50] == 25.0  # only image 0
    assert r.top5_loc[50] == 50.0  # images 0 and 1
    assert r.top1_curves[50].max() == 25.0


def test_top_k_max_over_tau_is_taken_separately():
    # Image 0 (true class predicted) matches only for tau < 0.2; images 1-2 (wrong class)
    # only for tau >= 0.2. Maps: 0.2 background (uint8 51) and a 1.0 object.
    low = np.full((10, 10), 0.2)
    low[0, 0] = 1.0  # tau < 0.2: all pixels, box (0,0,9,9); later one pixel
    high = np.full((10, 10), 0.2)
    high[2:6, 2:6] = 1.0  # tau < 0.2: box (0,0,9,9), IoU 0.25; later box (2,2,6,6), IoU 1
    maps = np.stack([low, high, high])
    gts = [np.array([[0, 0, 9, 9]]), np.array([[2, 2, 6, 6]]), np.array([[2, 2, 6, 6]])]
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ev = BoxEvaluator(iou_thresholds=(50,), version=1, cam_curve_interval=0.01)
    ev.update(maps, gts, labels=[0, 0, 0], logits=logits)
    r = ev.compute()
    taus = r.thresholds
    np.testing.assert_allclose(r.curves[50], np.where(taus < 0.2, 100 / 3, 200 / 3))
    np.testing.assert_allclose(r.top1_curves[50], np.where(taus < 0.2, 100 / 3, 0.0))
    assert r.max_box_acc[50] == pytest.approx(200 / 3) and r.best_tau[50] == pytest.approx(0.2)
    # The top-1 max is at tau < 0.2, where GT-known is not maximal.
    assert r.top1_loc[50] == pytest.approx(100 / 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"version": 3}, "version"),
        ({"version": 1, "iou_thresholds": (30, 70)}, "50"),
        ({"cam_curve_interval": 0.0}, "cam_curve_interval"),
        ({"iou_thresholds": (0,)}, "iou_thresholds"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BoxEvaluator(**kwargs)


def test_bad_inputs():
    ev = BoxEvaluator(cam_curve_interval=0.1)
    good = np.zeros((2, 8, 8))
    boxes = [np.array([[0, 0, 1, 1]])] * 2
    with pytest.raises(ValueError, match="NaN"):
        ev.update(np.full((2, 8, 8), np.nan), boxes)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.update(good + 2, boxes)
    with pytest.raises(TypeError, match="floating"):
        ev.update(good.astype(np.uint8), boxes)
    with pytest.raises(ValueError, match="holds 1 images"):
        ev.update(good, boxes[:1])
    with pytest.raises(ValueError, match="at least one GT box"):
        ev.update(good, [np.zeros((0, 4)), boxes[0]])
    with pytest.raises(ValueError, match="x0 <= x1"):
        ev.update(good, [np.array([[3, 0, 1, 1]]), boxes[0]])
    with pytest.raises(ValueError, match="together"):
        ev.update(good, boxes, labels=[0, 1])
    with pytest.raises(ValueError, match="shape"):
        ev.update(np.zeros((2, 2, 8, 8)), boxes)


def test_device_maps_match_numpy(device: torch.device):
    maps, boxes = _random_maps(9, n=4, dtype=np.float32)
    cpu = maxboxacc(maps, boxes, cam_curve_interval=0.01)
    gpu = maxboxacc(
        torch.from_numpy(maps).to(device),
        [torch.from_numpy(b).to(device) for b in boxes],
        cam_curve_interval=0.01,
    )
    assert cpu == gpu


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        ([np.array([[0, 0, 3, 3]]), np.array([[8, 2, 9, 3]])], r"boxes\[1\] lies outside the 8x8 map"),
        ([np.array([[0, 0, 3, 3]]), np.array([[2, 8, 3, 9]])], r"boxes\[1\] lies outside"),
        ([np.array([[0.0, 0.0, np.nan, 3.0]]), np.array([[0, 0, 1, 1]])], r"boxes\[0\] has non-finite"),
        (torch.tensor([[[0.0, 0.0, 2.0, 2.0]], [[float("inf"), 0.0, 1.0, 1.0]]]), r"boxes\[1\] has non-finite"),
    ],
)
def test_impossible_boxes_name_the_image(boxes: object, match: str) -> None:
    maps = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match=match):
        maxboxacc(maps, boxes)


def test_box_partly_outside_is_scored_as_the_protocol_does() -> None:
    # wsolevaluation does not clip GT boxes: a box reaching past the map is accepted and its
    # IoU uses the full box (16 / 289 here, a miss at every IoU threshold).
    maps = torch.zeros(1, 8, 8)
    maps[0, 4:, 4:] = 1
    assert maxboxacc(maps, [np.array([[4, 4, 20, 20]])]) == 0.0
    assert maxboxacc(maps, [np.array([[4, 4, 7, 7]])]) == pytest.approx(100.0)


@pytest.mark.parametrize("version", [1, 2])
def test_per_image_best_iou_equals_brute_force(version):
    """image_iou / image_tau: the best IoU of each image over the same threshold sweep."""
    maps, boxes = _random_maps(3)
    interval = 0.01
    ev = BoxEvaluator(version=version, cam_curve_interval=interval)
    ev.update(maps[:2], boxes[:2])
    ev.update(maps[2:], boxes[2:])  # accumulated in update order across batches
    result = ev.compute()
    taus = list(np.arange(0, 1, interval))
    for i, (scoremap, gts) in enumerate(zip(maps, boxes, strict=True)):
        per_tau = [max(_reference_iou(b, g) for b in _reference_boxes(scoremap, tau, version == 2)
                       for g in gts) for tau in taus]
        assert result.image_iou[i] == pytest.approx(max(per_tau), abs=1e-9)
        assert result.image_tau[i] == pytest.approx(taus[int(np.argmax(per_tau))], abs=1e-9)
    assert len(result.image_iou) == len(maps) and len(set(result.image_iou.round(6))) > 2
