"""fit(val_loader=...): PxAP selection, mask-free scores, foreground statistics, warnings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcam import FCAM
from fcam.explainer.selection import collapse_alert, collapse_warning, grid_search
from fcam.metrics import pxap

SIZE = 32


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    ).eval()  # fmt: skip


def squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bright squares on noise: images, labels, masks."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, SIZE, SIZE, generator=g) * 0.3
    masks = torch.zeros(n, SIZE, SIZE)
    for i in range(n):
        y, x = torch.randint(0, SIZE - 12, (2,), generator=g).tolist()
        masks[i, y : y + 12, x : x + 12] = 1
    images += 2 * masks[:, None]
    return images, torch.arange(n) % 3, masks


def make() -> FCAM:
    return FCAM(tiny(), "3", cam="cam", widths=(8, 4), sigma_rgb=60.0)


def test_val_pxap_selects_and_restores_the_best_epoch() -> None:
    x, y, _ = squares(8, 0)
    vx, vy, vm = squares(4, 1)
    fc = make()
    history = fc.fit([(x[:4], y[:4]), (x[4:], y[4:])], epochs=4, lr=0.05, progress=False,
                     val_loader=[(vx, vy, vm)])  # fmt: skip
    scores = [h["val_pxap"] for h in history]
    assert len(scores) == 4 and all(0 <= s <= 100 for s in scores)
    for h in history:
        assert {"fg_share", "fg_share_std", "cam_fg_share", "val_avg_drop"} <= set(h)
        assert 0 <= h["fg_share"] <= 1 and h["fg_share_std"] >= 0
    final = pxap(fc.explain(vx, vy), vm.bool(), cam_curve_interval=0.01)
    assert final == pytest.approx(max(scores), abs=1e-6)


class RandomValBatches:
    """A validation "dataset" that draws from every global RNG on each pass (like a synthetic
    or augmenting dataset does)."""

    def __init__(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.batch = batch

    def __iter__(self):
        import random

        import numpy as np

        torch.rand(7)
        random.random()
        np.random.rand()
        yield self.batch


def test_selecting_fit_follows_the_plain_fits_trajectory() -> None:
    # The seeds' sampling generator and a shuffling loader draw from the global torch RNG;
    # validation that also draws from it must not shift the training that follows.
    x, y, _ = squares(8, 0)
    vx, vy, vm = squares(4, 1)
    data = torch.utils.data.TensorDataset(x, y)

    def run(val: object) -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(3)
        loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
        fc = make()
        # select_by=None: the final decoder is the last epoch's in both runs.
        history = fc.fit(loader, epochs=3, lr=0.05, progress=False, val_loader=val, select_by=None)
        return [h["loss"] for h in history], fc.decoder.state_dict()

    plain_losses, plain_state = run(None)
    val_losses, val_state = run(RandomValBatches((vx, vy, vm)))
    assert val_losses == plain_losses
    assert all(torch.equal(plain_state[k], val_state[k]) for k in plain_state)


def test_val_dicts_without_selection_and_mask_free_score() -> None:
    x, y, _ = squares(4, 0)
    fc = make()
    history = fc.fit([(x, y)], epochs=2, progress=False, select_by=None,
                     val_loader=[{"image": x, "label": y}])  # fmt: skip
    assert all("val_pxap" not in h and h["val_avg_drop"] >= 0 for h in history)


@pytest.mark.parametrize(
    ("val", "error", "match"),
    [
        ([(torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0, 1]), torch.zeros(2, 8, 8))], ValueError,
         r"val_loader masks must be \(B, H, W\)"),
        ([(torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0, 1]), torch.full((2, SIZE, SIZE), 0.5))],
         ValueError, "val_loader masks must hold only 0 and 1"),
        ([(torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0, 1]))], ValueError,
         "val_loader yields no masks"),
        ([], ValueError, "val_loader is empty"),
        (["x"], TypeError, "val_loader must yield"),
        (5, TypeError, "val_loader must be iterable"),
    ],
)  # fmt: skip
def test_bad_val_loaders_name_it(val: object, error: type[Exception], match: str) -> None:
    x, y, _ = squares(2, 0)
    fc = make()
    with pytest.raises(error, match=match):
        fc.fit([(x, y)], epochs=1, progress=False, val_loader=val)
    assert not fc.fitted  # the failed first epoch was rolled back


def test_collapse_warnings() -> None:
    assert collapse_warning({"fg_share": 0.3, "cam_fg_share": 0.25}) is None
    assert "all-background" in collapse_warning({"fg_share": 0.001, "cam_fg_share": 0.2})
    assert "all-foreground" in collapse_warning({"fg_share": 0.99, "cam_fg_share": 0.2})
    assert "far larger" in collapse_warning({"fg_share": 0.7, "cam_fg_share": 0.1})


def test_collapse_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    x, y, _ = squares(4, 0)
    # A seed CAM that is high everywhere but one pixel: no usable foreground/background split.
    def everywhere(images: torch.Tensor, targets: object) -> torch.Tensor:
        cam = torch.ones(images.shape[0], 8, 8)
        cam[:, 0, 0] = 0
        return cam

    fc = FCAM(tiny(), "3", cam=everywhere, widths=(8, 4), sigma_rgb=60.0, size_weight=0.0)
    history = fc.fit([(x, y)] * 4, epochs=3, lr=0.1, progress=False)
    share = history[-1]["fg_share"]
    assert share < 0.01 or share > 0.95  # the maps collapse to one label ...
    assert ("all-background" if share < 0.01 else "all-foreground") in caplog.text  # ... loudly
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "collapsed" in r.getMessage()]
    assert len(warned) == 1 and warned[0].getMessage().startswith("epoch 3:")


def test_collapse_alert_warns_on_persistent_or_final_collapse_only() -> None:
    bad, good = {"fg_share": 0.0, "cam_fg_share": 0.3}, {"fg_share": 0.2, "cam_fg_share": 0.3}

    def warned(sequence: list[dict[str, float]], epochs: int) -> list[int]:
        return [e for e in range(1, len(sequence) + 1) if collapse_alert(sequence[:e], epochs)[0]]

    # A healthy run that starts all-background and recovers: nothing warned.
    assert warned([bad, bad, good, good, good], 5) == []
    # Three collapsed epochs in a row: warned once, on the third; then at the last epoch.
    assert warned([bad] * 6, 6) == [3, 6]
    assert warned([good, bad, bad, good, bad, bad, bad, good], 8) == [7]
    # The last epoch always speaks, even after a single collapsed epoch.
    assert warned([good, good, bad], 3) == [3]
    # The message is the per-epoch one; a healthy epoch has none.
    assert collapse_alert([good], 2) == (False, None)
    assert "all-background" in str(collapse_alert([bad], 1)[1])


def test_grid_search_keeps_the_best() -> None:
    x, y, m = squares(4, 0)
    best, rows = grid_search(
        tiny(), [(x, y)], [(x, y, m)], {"crf_weight": [0.0, 3e-8]},
        fcam_options={"target_layer": "3", "cam": "cam", "widths": (8, 4)},
        epochs=1, progress=False,
    )  # fmt: skip
    assert [r["crf_weight"] for r in rows] == [0.0, 3e-8]
    top = max(rows, key=lambda r: r["val_pxap"])
    assert best.config.crf_weight == top["crf_weight"]
    with pytest.raises(ValueError, match="grid"):
        grid_search(tiny(), [(x, y)], [(x, y, m)], {})
