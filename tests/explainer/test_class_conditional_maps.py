"""``class_head``: FCAM's decoder map for the explained class (shared head + class residual)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from explainer_toy import SIZE, images, tiny
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fcam import FCAM
from fcam.explainer import FCAMConfig
from fcam.upscalers import ClassConditionalHead


def data(labels: torch.Tensor) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(len(labels), 3, SIZE, SIZE, generator=g)
    return DataLoader(TensorDataset(pixels, labels), batch_size=4)


@pytest.fixture(scope="module")
def fitted() -> FCAM:
    fc = FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), sigma_rgb=60.0)
    fc.fit(data(torch.arange(8) % 3), epochs=1, progress=False)
    return fc


def test_default_decoder_has_a_class_head_trained_only_on_seen_classes() -> None:
    fc = FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), sigma_rgb=60.0)
    assert fc.config.class_head is True
    head = fc.decoder.seg_head
    assert isinstance(head, ClassConditionalHead) and head.num_classes == 3
    fc.fit(data(torch.tensor([0, 2] * 4)), epochs=1, progress=False)
    assert head.weight[0].abs().sum() > 0 and head.weight[2].abs().sum() > 0
    # Class 1 never had a training image: its residual is still exactly zero (only weight
    # decay acts on it, and on zeros that is zero too).
    assert not head.weight[1].any() and not head.bias[1].any()


def test_map_follows_the_requested_class_even_without_the_cam(fitted: FCAM) -> None:
    x = images()
    with torch.no_grad():
        fitted.decoder.seg_head.bias[1] += torch.tensor([0.0, 2.0])  # class 1: more foreground
    try:
        fitted_cam = fitted.cam_fn
        fitted.cam_fn = None  # gamma = 0 needs the class, not the seed CAM
        try:
            zero = fitted.explain(x, [0, 0, 0], cam_exponent=0, cam_mix=0)
            one = fitted.explain(x, [1, 1, 1], cam_exponent=0, cam_mix=0)
            predicted = fitted.explain(x, cam_exponent=0, cam_mix=0)
        finally:
            fitted.cam_fn = fitted_cam
        assert (one > zero).all()
        pred = fitted.model(x).argmax(1)
        torch.testing.assert_close(predicted, fitted.explain(x, pred, cam_exponent=0, cam_mix=0))
        # gamma > 0: the class the CAM extractor resolved (argmax) is the one the head used.
        torch.testing.assert_close(fitted.explain(x), fitted.explain(x, pred))
    finally:
        with torch.no_grad():
            fitted.decoder.seg_head.bias[1] -= torch.tensor([0.0, 2.0])


def test_untrained_residuals_give_the_class_agnostic_map(fitted: FCAM) -> None:
    x = images()
    head = fitted.decoder.seg_head
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    try:
        maps = [fitted.explain(x, [c] * 3, cam_exponent=0, cam_mix=0) for c in range(3)]
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])
    assert torch.equal(maps[0], maps[1]) and torch.equal(maps[0], maps[2])


def test_a_custom_cam_callable_explains_the_prediction(fitted: FCAM) -> None:
    calls = []

    def cam(images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        calls.append(targets)
        return torch.rand(images.shape[0], 8, 8)

    fc = FCAM(fitted.model, "4", cam=cam, widths=(8, 4), sigma_rgb=60.0)
    fc.decoder.load_state_dict(fitted.decoder.state_dict())
    fc.fitted = True
    x = images()
    pred = fitted.model(x).argmax(1)
    torch.testing.assert_close(fc.explain(x, cam_exponent=0, cam_mix=0), fitted.explain(x, pred, cam_exponent=0, cam_mix=0))
    fc.explain(x)
    assert calls[-1] is None  # the callable picked its class; the head used the prediction


def test_save_load_and_old_checkpoints(tmp_path: Path, fitted: FCAM) -> None:
    x, y = images(), torch.tensor([2, 0, 1])
    fitted.save(tmp_path / "a.pt")
    loaded = FCAM.load(tmp_path / "a.pt", fitted.model)
    assert loaded.config.class_head is True
    torch.testing.assert_close(loaded.explain(x, y), fitted.explain(x, y))
    # A checkpoint written before the option existed had the class-agnostic head.
    old = FCAMConfig().to_dict()
    del old["class_head"]
    assert FCAMConfig.from_dict(old).class_head is False
    plain = FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), sigma_rgb=60.0, class_head=False)
    assert isinstance(plain.decoder.seg_head, nn.Conv2d)
    plain.fit(data(torch.arange(8) % 3), epochs=1, progress=False)
    plain.save(tmp_path / "b.pt")
    again = FCAM.load(tmp_path / "b.pt", plain.model)
    assert again.config.class_head is False
    torch.testing.assert_close(again.explain(x, y), plain.explain(x, y))


def test_bad_option_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="class_head"):
        FCAM(tiny(), "4", cam="gradcam", class_head="yes")
