"""``cam_mix`` and ``cam_exponent``: explain's map (1 - a) p_fg cam_c ** gamma + a cam_c,
class-specific when either is positive.

The decoder here has F-CAM's class-agnostic head (``class_head=False``) so that the seed CAM
is the only class-specific part; the class-conditional head has its own tests
(``tests/explainer/test_class_conditional_maps.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from explainer_toy import SIZE, images, tiny
from torch.utils.data import DataLoader, TensorDataset

from fcam import FCAM
from fcam.cams import GradCAM, cam_to_size
from fcam.explainer.selection import validate
from fcam.metrics import pxap


@pytest.fixture(scope="module")
def fitted() -> FCAM:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(8, 3, SIZE, SIZE, generator=g), torch.arange(8) % 3)
    fc = FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), sigma_rgb=60.0, class_head=False)
    fc.fit(DataLoader(data, batch_size=4), epochs=1, progress=False)
    return fc


def test_defaults_mix_two_percent_cam_and_zero_zero_needs_no_cam(fitted: FCAM) -> None:
    from fcam.explainer import DEFAULT_CAM_EXPONENT, DEFAULT_CAM_MIX

    assert fitted.config.cam_exponent == DEFAULT_CAM_EXPONENT == 0.0
    assert fitted.config.cam_mix == DEFAULT_CAM_MIX == 0.02
    x = images()
    fitted_cam = fitted.cam_fn
    fitted.cam_fn = None  # explain must not touch the seed CAM at alpha = gamma = 0
    try:
        plain = fitted.explain(x, cam_exponent=0, cam_mix=0)
        assert torch.equal(fitted.explain(x, targets=[2, 2, 2], cam_exponent=0, cam_mix=0), plain)
    finally:
        fitted.cam_fn = fitted_cam
    cam = cam_to_size(GradCAM(fitted.model, "4")(x, torch.tensor([2, 2, 2])), (SIZE, SIZE))
    torch.testing.assert_close(fitted.explain(x, targets=[2, 2, 2]), 0.98 * plain + 0.02 * cam)


def test_mix_with_cam_golden_values() -> None:
    from fcam.explainer import mix_with_cam

    prob = torch.tensor([[[1.0, 0.5], [0.0, 0.25]], [[0.8, 0.2], [0.4, 0.6]]])
    cam = torch.tensor([[[0.5, 1.0], [0.25, 0.0]], [[0.3, 0.3], [0.3, 0.3]]])
    got = mix_with_cam(prob, cam, gamma=1.0, mix=0.2)
    # Image 0 by hand: 0.8 * p * cam + 0.2 * cam; image 1's CAM is constant: p unchanged.
    expected = torch.tensor([[[0.5, 0.6], [0.05, 0.0]], [[0.8, 0.2], [0.4, 0.6]]])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(mix_with_cam(prob, cam, gamma=0.0, mix=0.0), prob)
    torch.testing.assert_close(mix_with_cam(prob, cam, gamma=0.0, mix=1.0)[0], cam[0])


@pytest.mark.parametrize(("gamma", "mix"), [
    (0.25, 0.0), (0.5, 0.0), (1.0, 0.0), (2.0, 0.0), (0.0, 0.02), (0.0, 0.5), (0.5, 0.1), (2.0, 1.0),
])
def test_map_mixes_probability_and_independent_gradcam(fitted: FCAM, gamma: float, mix: float) -> None:
    x, y = images(), torch.tensor([0, 1, 2])
    prob = fitted.explain(x, cam_exponent=0, cam_mix=0)
    # The seed CAM recomputed by a separate extractor on the same layer.
    cam = cam_to_size(GradCAM(fitted.model, "4")(x, y), (SIZE, SIZE))
    got, returned_cam = fitted.explain(x, y, return_cam=True, cam_exponent=gamma, cam_mix=mix)
    torch.testing.assert_close(returned_cam, cam)
    torch.testing.assert_close(got, (1 - mix) * prob * cam.pow(gamma) + mix * cam)
    assert got.min() >= 0 and got.max() <= 1


def test_positive_gamma_is_class_specific_and_works_under_no_grad(fitted: FCAM) -> None:
    x = images()
    with torch.no_grad():
        a = fitted.explain(x, [0, 0, 0], cam_exponent=0.5)
        b = fitted.explain(x, [1, 1, 1], cam_exponent=0.5)
        default = fitted.explain(x, cam_exponent=0.5)  # the prediction's class
    assert not torch.allclose(a, b)
    predicted = fitted.model(x).argmax(1)
    torch.testing.assert_close(default, fitted.explain(x, predicted, cam_exponent=0.5))
    assert all(p.grad is None for p in fitted.model.parameters())


def test_config_value_drives_explain_and_survives_save_load(tmp_path: Path, fitted: FCAM) -> None:
    x, y = images(), torch.tensor([2, 0, 1])
    fitted.save(tmp_path / "a.pt")
    loaded = FCAM.load(tmp_path / "a.pt", fitted.model).config
    assert (loaded.cam_exponent, loaded.cam_mix) == (0.0, 0.02)
    weighted = FCAM.load(tmp_path / "a.pt", fitted.model, cam_exponent=0.5, cam_mix=0.3)
    assert (weighted.config.cam_exponent, weighted.config.cam_mix) == (0.5, 0.3)
    torch.testing.assert_close(weighted.explain(x, y),
                               fitted.explain(x, y, cam_exponent=0.5, cam_mix=0.3))
    weighted.save(tmp_path / "b.pt")
    again = FCAM.load(tmp_path / "b.pt", fitted.model)
    assert (again.config.cam_exponent, again.config.cam_mix) == (0.5, 0.3)
    torch.testing.assert_close(again.explain(x, y), weighted.explain(x, y))


def test_checkpoint_config_without_the_key_explains_with_the_decoder_alone() -> None:
    from fcam.explainer import FCAMConfig

    old = FCAMConfig(cam_exponent=0.25).to_dict()
    del old["cam_mix"]  # written before cam_mix existed: p_fg * cam ** 0.25, as it explained then
    assert (FCAMConfig.from_dict(old).cam_exponent, FCAMConfig.from_dict(old).cam_mix) == (0.25, 0.0)
    del old["cam_exponent"]
    assert FCAMConfig.from_dict(old).cam_exponent == 0.0


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_bad_exponent_is_refused_by_name(fitted: FCAM, bad: float) -> None:
    with pytest.raises(ValueError, match="cam_exponent"):
        fitted.explain(images(), cam_exponent=bad)
    with pytest.raises(ValueError, match="cam_exponent"):
        FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), cam_exponent=bad)
    with pytest.raises(ValueError, match="cam_exponent must be a finite number, got '1'"):
        fitted.explain(images(), cam_exponent="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_mix_is_refused_by_name(fitted: FCAM, bad: float) -> None:
    with pytest.raises(ValueError, match="cam_mix"):
        fitted.explain(images(), cam_mix=bad)
    with pytest.raises(ValueError, match="cam_mix"):
        FCAM(tiny(), "4", cam="gradcam", widths=(8, 4), cam_mix=bad)


def test_without_a_seed_cam_positive_gamma_names_the_way_out(fitted: FCAM) -> None:
    fitted_cam = fitted.cam_fn
    fitted.cam_fn = None
    try:
        for options in ({"cam_exponent": 0.5, "cam_mix": 0.0}, {}):
            with pytest.raises(ValueError, match="cam_mix=0, cam_exponent=0"):
                fitted.explain(images(), **options)
    finally:
        fitted.cam_fn = fitted_cam


def test_validation_scores_the_labelled_class(fitted: FCAM) -> None:
    x = images()
    y = torch.tensor([1, 2, 0])
    masks = torch.zeros(3, SIZE, SIZE, dtype=torch.long)
    masks[:, 8:20, 10:24] = 1
    original = fitted.config
    fitted.config = original.replace(cam_exponent=1.0, cam_mix=0.0)
    try:
        scores = validate(fitted, [(x, y, masks)], need_masks=True)
        expected = pxap(fitted.explain(x, y), masks, cam_curve_interval=0.01)
        by_prediction = pxap(fitted.explain(x), masks, cam_curve_interval=0.01)
    finally:
        fitted.config = original
    assert expected != pytest.approx(by_prediction)  # the test can tell the two apart
    assert scores["val_pxap"] == pytest.approx(expected)


def test_inference_mode_needs_gamma_zero_and_says_so(fitted: FCAM) -> None:
    x = images()
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="inference_mode.*cam_mix=0 and cam_exponent=0"):
            fitted.explain(x)
        plain = fitted.explain(x, cam_exponent=0, cam_mix=0)
    torch.testing.assert_close(plain, fitted.explain(x, cam_exponent=0, cam_mix=0))


def test_a_constant_cam_leaves_that_images_map_alone(fitted: FCAM) -> None:
    x = images()
    prob = fitted.explain(x, cam_exponent=0, cam_mix=0)
    seed_cam = fitted.cam_fn

    def half_flat(imgs: torch.Tensor, targets: object) -> torch.Tensor:
        cam = torch.rand(imgs.shape[0], 8, 8, generator=torch.Generator().manual_seed(0))
        cam[0] = 0.0  # "the weighted sum is negative everywhere": no ranking at all
        return cam

    fitted.cam_fn = half_flat
    try:
        got, cam = fitted.explain(x, return_cam=True, cam_exponent=0.5, cam_mix=0.1)
    finally:
        fitted.cam_fn = seed_cam
    torch.testing.assert_close(got[0], prob[0])  # not erased to zero
    torch.testing.assert_close(got[1:], 0.9 * prob[1:] * cam[1:].sqrt() + 0.1 * cam[1:])
