"""fit's learning-rate schedule: golden rates, the rates the optimiser really used, resume."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from explainer_toy import SIZE, tiny

from fcam import FCAM
from fcam.explainer.trainer import epoch_lr


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 2, 0])
    return [(torch.randn(4, 3, SIZE, SIZE, generator=g), labels) for _ in range(2)]


def make() -> FCAM:
    return FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), sigma_rgb=60.0)


def test_epoch_lr_golden_values() -> None:
    assert [epoch_lr(0.1, e, 4) for e in range(4)] == [0.1] * 4
    # 0.1 * (1 + cos(pi e / 4)) / 2 for e = 0..3, worked out by hand.
    expected = [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2]
    assert [epoch_lr(0.1, e, 4, "cosine") for e in range(4)] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="schedule"):
        epoch_lr(0.1, 0, 4, "step")


def test_fit_trains_each_epoch_at_its_scheduled_rate(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[float] = []
    fc = make()
    # on_epoch_start runs before the rate is set, so read it from the optimiser in the step.
    original = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.SGD.step = spy  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="fcam.explainer.trainer"):
            history = fc.fit(batches(), epochs=3, lr=0.04, progress=False, lr_schedule="cosine")
    finally:
        torch.optim.SGD.step = original  # type: ignore[method-assign]
    rates = [0.04, 0.04 * 0.75, 0.04 * 0.25]  # (1 + cos(pi e / 3)) / 2 = 1, 3/4, 1/4
    assert [h["lr"] for h in history] == pytest.approx(rates)
    assert seen == pytest.approx([r for r in rates for _ in range(2)])  # two steps per epoch
    epoch_lines = [r.getMessage() for r in caplog.records if "images, lr " in r.getMessage()]
    assert [line.split("lr ")[1].split(",")[0] for line in epoch_lines] == ["0.04", "0.03", "0.01"]


def test_cosine_equals_constant_in_the_first_epoch_only() -> None:
    runs = {}
    for schedule in ("constant", "cosine"):
        fc = make()
        fc.fit(batches(), epochs=1, progress=False, lr_schedule=schedule)
        one = {k: v.clone() for k, v in fc.decoder.state_dict().items()}
        fc = make()
        fc.fit(batches(), epochs=2, progress=False, lr_schedule=schedule)
        runs[schedule] = one, fc.decoder.state_dict()
    (one_a, two_a), (one_b, two_b) = runs["constant"], runs["cosine"]
    assert all(torch.equal(one_a[k], one_b[k]) for k in one_a)
    assert not all(torch.equal(two_a[k], two_b[k]) for k in two_a)


def test_resumed_cosine_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    full = make()
    full.fit(batches(), epochs=3, progress=False, lr_schedule="cosine")
    part = make()
    with pytest.raises(_Stop):  # interrupted before its last epoch
        part.fit(batches(), epochs=3, progress=False, lr_schedule="cosine", checkpoint_dir=tmp_path,
                 on_epoch_start=lambda e: _stop_at(e, 2))  # fmt: skip
    assert len(part.history) == 2
    resumed = make()
    resumed.fit(batches(), epochs=3, progress=False, lr_schedule="cosine", checkpoint_dir=tmp_path,
                resume=True)  # fmt: skip
    a, b = full.decoder.state_dict(), resumed.decoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in full.history]


class _Stop(Exception):
    pass


def _stop_at(epoch: int, stop: int) -> None:
    if epoch == stop:
        raise _Stop


def test_bad_schedule_names_the_argument() -> None:
    with pytest.raises(ValueError, match="lr_schedule"):
        make().fit(batches(), epochs=1, progress=False, lr_schedule="linear")
