"""PxAP: wsolevaluation's oracle cases, a literal np.histogram port, and exact AP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcam.metrics import MaskEvaluator, pxap


def reference_pxap(maps, masks, ignores, interval):
    """The protocol written out: np.histogram per image, pooled, right-Riemann sum."""
    taus = np.arange(0, 1, interval)
    edges = np.append(taus, [1.0, 2.0, 3.0])
    fg_hist = np.zeros(len(edges) - 1)
    bg_hist = np.zeros(len(edges) - 1)
    for scoremap, mask, ignore in zip(maps, masks, ignores, strict=True):
        ignore = ignore & ~mask
        fg_hist += np.histogram(scoremap[mask & ~ignore], bins=edges)[0]
        bg_hist += np.histogram(scoremap[~mask & ~ignore], bins=edges)[0]
    tp = fg_hist[::-1].cumsum()
    fp = bg_hist[::-1].cumsum()
    fn = fg_hist.sum() - tp
    keep = (tp + fp) != 0
    with np.errstate(invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return 100 * (precision[1:] * np.diff(recall))[keep[1:]].sum()


def exact_average_precision(scores, labels):
    """Step-wise AP over every distinct score (scikit-learn's average_precision_score)."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(labels)[distinct]
    fp = (distinct + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / labels.sum()
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def _random_case(seed, n=4, size=20):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    ignores = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        y, x = rng.integers(0, size - 6, 2)
        masks[i, y : y + rng.integers(3, 10), x : x + rng.integers(3, 10)] = True
        y, x = rng.integers(0, size - 6, 2)
        ignores[i, y : y + 6, x : x + 6] = True
    noise = rng.random((n, size, size))
    maps = np.clip(0.6 * masks + 0.7 * noise - 0.1, 0, 1)
    return maps, masks, ignores


# ----------------------------------------------------------------------------- oracle cases
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_map_gives_the_positive_fraction(value):
    masks = np.zeros((1, 50, 60), dtype=bool)
    masks[0, 10:30, 5:41] = True  # 720 positives
    ignore = np.zeros_like(masks)
    ignore[0, 0:10, :] = True  # 600 ignored, none on the foreground
    ignore[0, 10:12, 5:10] = True  # overlaps the foreground: not ignored
    positives, negatives = 720, 3000 - 720 - 600
    expected = 100.0 * positives / (positives + negatives)
    assert pxap(np.full(masks.shape, value), masks, ignore) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("ignore_score", [0.0, 1.0])
def test_perfect_map_gives_100_whatever_the_ignore_scores(ignore_score):
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[0, 2:6, 2:9] = True
    masks[1, 8:, :5] = True
    ignore = np.zeros_like(masks)
    ignore[:, 10:14, 10:14] = True
    maps = masks.astype(np.float64)
    maps[ignore] = ignore_score
    assert pxap(maps, masks, ignore, cam_curve_interval=0.01) == 100.0


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_all_foreground_gt_gives_100_for_a_constant_map(value):
    masks = np.ones((1, 8, 8), dtype=bool)
    assert pxap(np.full((1, 8, 8), value), masks) == 100.0


def test_no_foreground_raises():
    with pytest.raises(ValueError, match="foreground"):
        pxap(np.random.default_rng(0).random((2, 8, 8)), np.zeros((2, 8, 8), dtype=bool))


def test_everything_ignored_raises():
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    ev = MaskEvaluator()
    ev.update(np.zeros((1, 4, 4)), masks)
    ev.compute()  # one positive pixel is enough
    with pytest.raises(ValueError, match="foreground"):
        pxap(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool), np.ones((1, 4, 4), bool))


def test_nan_raises():
    with pytest.raises(ValueError, match="NaN"):
        pxap(np.full((1, 3, 3), np.nan), np.ones((1, 3, 3), dtype=bool))


def test_inverted_map_hand_worked():
    # Background scores 1, foreground 0. Top bin [1, 2): tp 0, fp 70 -> precision 0, recall
    # 0; bin [0, d): tp 30, fp 70 -> precision 0.3 over the whole recall step 0 -> 1: AP 30.
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, :3] = True
    assert pxap(1.0 - masks.astype(float), masks) == pytest.approx(30.0, abs=1e-12)
    # A third of the foreground (row 0) scored 1 with the background: the top bin has tp 10,
    # fp 70 (precision 1/8, recall 1/3), the bottom bin tp 30, fp 70 (precision 0.3, recall 1).
    maps = 1.0 - masks.astype(float)
    maps[0, 0] = 1.0
    assert pxap(maps, masks) == pytest.approx(100 * (1 / 3 * 10 / 80 + 2 / 3 * 0.3), abs=1e-9)


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("interval", [0.001, 0.01])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_literal_np_histogram_port(interval, seed):
    maps, masks, ignores = _random_case(seed)
    # Put scores exactly on bin edges (the float64 thresholds, 0 and 1): the binning must be
    # np.histogram's, half-open with float64 comparisons.
    taus = np.arange(0, 1, interval)
    rng = np.random.default_rng(seed)
    pick = rng.random(maps.shape) < 0.3
    maps[pick] = rng.choice(np.r_[taus, 1.0], size=int(pick.sum()))
    expected = reference_pxap(maps, masks, ignores, interval)
    assert pxap(maps, masks, ignores, cam_curve_interval=interval) == pytest.approx(
        expected, abs=1e-9
    )
    f32 = maps.astype(np.float32)
    expected32 = reference_pxap(f32, masks, ignores, interval)
    assert pxap(torch.from_numpy(f32), torch.from_numpy(masks), ignores, interval) == pytest.approx(
        expected32, abs=1e-9
    )


@pytest.mark.parametrize("seed", range(4))
def test_equals_exact_average_precision_on_the_bin_grid(seed):
    # With every score on a bin's left edge, binning loses nothing: PxAP is the exact AP of
    # the pooled non-ignored pixels.
    interval = 0.01
    maps, masks, ignores = _random_case(seed)
    grid = np.r_[np.arange(0, 1, interval), 1.0]
    maps = grid[np.rint(maps / interval).astype(int)]
    keep = ~(ignores & ~masks)
    exact = 100 * exact_average_precision(maps[keep], masks[keep].astype(np.int64))
    assert pxap(maps, masks, ignores, cam_curve_interval=interval) == pytest.approx(exact, abs=1e-9)
    assert 20.0 < exact < 99.0


def test_close_to_exact_average_precision_off_grid():
    maps, masks, ignores = _random_case(5)
    keep = ~(ignores & ~masks)
    exact = 100 * exact_average_precision(maps[keep], masks[keep].astype(np.int64))
    assert pxap(maps, masks, ignores, cam_curve_interval=0.001) == pytest.approx(exact, abs=0.5)


# ----------------------------------------------------------------------------- evaluator API
def test_pooled_over_the_split_not_averaged_per_image():
    maps, masks, ignores = _random_case(6, n=3)
    ev = MaskEvaluator(cam_curve_interval=0.01)
    for i in range(3):
        ev.update(maps[i], masks[i], ignores[i])
    pooled = ev.compute().value
    assert pooled == pytest.approx(reference_pxap(maps, masks, ignores, 0.01), abs=1e-9)
    per_image = np.mean(
        [pxap(maps[i : i + 1], masks[i : i + 1], ignores[i : i + 1], 0.01) for i in range(3)]
    )
    assert abs(pooled - per_image) > 1e-6


def test_curves_best_tau_reset_and_dict():
    maps, masks, ignores = _random_case(7)
    ev = MaskEvaluator(cam_curve_interval=0.01)
    ev.update(torch.from_numpy(maps), torch.from_numpy(masks), torch.from_numpy(ignores))
    r = ev.compute()
    assert r.precision.shape == r.recall.shape == r.thresholds.shape == (100,)
    assert r.recall[0] == 1.0 and (np.diff(r.recall) <= 0).all()
    score = np.nan_to_num(r.precision, nan=-np.inf) + r.recall
    assert r.best_tau == r.thresholds[int(np.argmax(score))]
    assert r.to_dict()["PxAP"] == r.value and r.settings == {"cam_curve_interval": 0.01}
    ev.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        ev.compute()


def test_bad_inputs():
    ev = MaskEvaluator()
    with pytest.raises(ValueError, match="masks has shape"):
        ev.update(np.zeros((1, 4, 4)), np.zeros((1, 4, 5), bool))
    with pytest.raises(ValueError, match="only 0 and 1"):
        ev.update(np.zeros((1, 4, 4)), np.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.update(np.full((1, 4, 4), -0.5), np.zeros((1, 4, 4), bool))
    with pytest.raises(TypeError, match="maps must be"):
        ev.update("maps", np.zeros((1, 4, 4), bool))


def test_device_matches_numpy(device: torch.device):
    maps, masks, ignores = _random_case(8)
    t = [torch.from_numpy(a) for a in (maps, masks, ignores)]
    assert pxap(*[x.to(device) for x in t]) == pxap(maps, masks, ignores)
