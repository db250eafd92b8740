"""with_features: named module outputs from the extractor's own clean forward."""

from __future__ import annotations

import pytest
import torch
from cams_toy import ToyNet
from torch import Tensor

from fcam import cams
from fcam.core import capture_features


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token: test_tscam.py
def test_features_come_from_the_clean_forward(name: str, toy: ToyNet, toy_input: Tensor) -> None:
    with capture_features(toy, ["relu", "features"]) as expected, torch.no_grad():
        toy(toy_input)
    calls: list[Tensor] = []
    toy.register_forward_pre_hook(lambda m, a: calls.append(a[0]))
    kwargs = {"seed": 0} if name in ("smoothgradcampp", "sscam") else {}
    with cams.create(name, toy, "features", **kwargs) as extractor:
        raw, feats = extractor.with_features(toy_input, [0], features=["relu", "features"])
        first_call = len(calls)
        alone = extractor(toy_input, [0])
    assert torch.equal(raw, alone)
    assert set(feats) == {"relu", "features"}
    for key, value in feats.items():
        assert torch.equal(value, expected[key]) and not value.requires_grad
    # The first forward of the call is on the clean images: no extra forward for features.
    assert torch.equal(calls[0], toy_input)
    assert len(calls) == 2 * first_call  # capturing features costs no extra forward


def test_unknown_feature_name_is_refused(toy: ToyNet, toy_input: Tensor) -> None:
    with cams.GradCAM(toy, "features") as extractor, pytest.raises(ValueError, match="nope"):
        extractor.with_features(toy_input, features=["nope"])
    assert not toy.features._forward_hooks and not toy._forward_hooks
