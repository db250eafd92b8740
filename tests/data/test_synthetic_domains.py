"""Domain options of the synthetic WSOL generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcam.data.synthetic_domains import SyntheticDomainWSOL


def test_items_and_determinism():
    ds = SyntheticDomainWSOL(6, size=48, background="texture", seed=3, split="test")
    item = ds[2]
    assert item["image"].shape == (3, 48, 48) and item["raw"].dtype == torch.uint8
    assert item["label"] == 2 and item["mask"].any()
    assert item["box"].tolist() == ds.box_of(item["mask"])
    again = SyntheticDomainWSOL(6, size=48, background="texture", seed=3, split="test", cache=False)
    assert torch.equal(again[2]["raw"], item["raw"])
    other = SyntheticDomainWSOL(6, size=48, background="texture", seed=3, split="train")
    assert not torch.equal(other[2]["raw"], item["raw"])


def test_photo_background_differs_from_texture():
    pytest.importorskip("skimage")
    photo = SyntheticDomainWSOL(3, size=64, background="photo", distractors=(0, 0))
    texture = SyntheticDomainWSOL(3, size=64, background="texture", distractors=(0, 0))
    assert not torch.equal(photo[0]["raw"], texture[0]["raw"])
    assert photo.domain["background"] == "photo"


def test_object_scale_controls_the_object_area():
    small = SyntheticDomainWSOL(20, size=64, object_scale=(0.08, 0.1))
    large = SyntheticDomainWSOL(20, size=64, object_scale=(0.35, 0.4))
    area = lambda ds: np.mean([ds.sample(i)[1].mean() for i in range(len(ds))])
    assert area(small) < 0.05
    assert area(large) > 0.2


@pytest.mark.parametrize("size", [64, 224])
def test_sizes(size):
    ds = SyntheticDomainWSOL(2, size=size)
    assert ds[0]["mask"].shape == (size, size)


@pytest.mark.parametrize("kwargs", [
    {"background": "noise"}, {"object_scale": (0.3, 0.2)}, {"object_scale": (0.1, 0.5)},
    {"distractors": (3, 1)}, {"size": 600},
])
def test_bad_options(kwargs):
    with pytest.raises(ValueError):
        SyntheticDomainWSOL(2, **kwargs)
