"""fit hands the batch's RGB image to the seed sampler when ``colour_bins`` is set."""

from __future__ import annotations

import pytest
import torch
from explainer_toy import SIZE, tiny

import fcam.explainer.trainer as trainer_module
from fcam import FCAM


@pytest.mark.parametrize("bins", [0, 8])
def test_fit_samples_seeds_against_the_batch_raw_image(monkeypatch: pytest.MonkeyPatch, bins: int) -> None:
    calls = []
    real = trainer_module.sample_seeds

    def recording(cams: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append(kwargs)
        return real(cams, **kwargs)

    monkeypatch.setattr(trainer_module, "sample_seeds", recording)
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    batch = {"image": torch.randn(2, 3, SIZE, SIZE, generator=g), "raw": raw,
             "label": torch.tensor([0, 1])}
    fc = FCAM(tiny(), "4", widths=(8, 4), colour_bins=bins)
    history = fc.fit([batch], epochs=1, progress=False)
    assert len(calls) == 1 and calls[0]["colour_bins"] == bins
    assert torch.equal(calls[0]["images"], raw.float())
    assert torch.isfinite(torch.tensor(history[0]["loss"]))
