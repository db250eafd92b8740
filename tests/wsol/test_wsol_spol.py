"""SPOL: the Gaussian-prior pseudo mask against NumPy, the MFF-Nets, both stages, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from fcam.wsol import MFFHead, SPOLModel, build, make_optimizer, spol_pseudo_mask, train, train_step
from fcam.wsol.training import MethodOptions

SIZE = (32, 32)


def _blob(h, w, cy, cx, sy, sx, rho):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = (y - cy) / sy, (x - cx) / sx
    return np.exp(-(dx**2 - 2 * rho * dx * dy + dy**2) / (2 * (1 - rho**2)))


def _reference(cam, low, high, shrink, regions):
    """Direct NumPy: weighted moments of each region's mid band and the max of the Gaussians."""
    cam = cam / cam.max()
    band = np.where((cam >= low) & (cam <= high), cam, 0.0)
    y, x = np.mgrid[0:cam.shape[0], 0:cam.shape[1]].astype(np.float64)
    out = np.zeros_like(cam)
    for region in regions:
        w = band * region
        w = w / w.sum()
        mx, my = (w * x).sum(), (w * y).sum()
        sx, sy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
        sxy = (w * (x - mx) * (y - my)).sum()
        rho = sxy / np.sqrt(sx * sy)
        vx, vy = sx / shrink, sy / shrink
        dx, dy = x - mx, y - my
        q = dx**2 / vx - 2 * rho * dx * dy / np.sqrt(vx * vy) + dy**2 / vy
        out = np.maximum(out, np.exp(-q / (2 * (1 - rho**2))))
    return out


@pytest.mark.parametrize("low, high, shrink", [(0.1, 0.5, 10.0), (0.2, 0.8, 3.0)])
def test_pseudo_mask_two_blobs_against_numpy(low, high, shrink):
    h, w = 40, 64
    left = _blob(h, w, 18.0, 15.0, 6.0, 4.0, 0.5)          # correlated: rho != 0 matters
    right = 0.8 * _blob(h, w, 22.0, 46.0, 4.0, 7.0, -0.3)
    cam = np.maximum(left, right)
    cam[2:4, 60:62] = 0.3                                   # a 4-pixel speck: contour area < 20
    regions = [np.arange(w)[None, :] < 31, (np.arange(w)[None, :] >= 31) & (np.arange(h)[:, None] > 5)]
    assert (left[:, 31:] < low).all() and (right[:, :31] < low / 0.8).all()  # blobs apart
    expected = _reference(cam, low, high, shrink, regions)
    got = spol_pseudo_mask(torch.from_numpy(3.0 * cam)[None, None].float(), low, high, shrink)
    assert got.shape == (1, 1, h, w) and got.dtype == torch.float32
    np.testing.assert_allclose(got[0, 0].double().numpy(), expected, atol=2e-5)
    assert got[0, 0, 3, 61] < 0.01  # the speck makes no Gaussian of its own


def test_pseudo_mask_batch_and_empty_maps():
    cam = torch.zeros(3, 24, 24)
    cam[0, 4:20, 4:20] = 0.3
    cam[0, 12, 12] = 1.0  # the peak: the square is the mid band, centred on 11.5
    cam[1] = 1.0  # no mid band
    out = spol_pseudo_mask(cam)
    assert out.shape == (3, 24, 24)
    assert (out[0, 11:13, 11:13] > 0.8).all() and out[0, 0, 0] < 1e-6
    assert (out[1:] == 0).all()
    torch.testing.assert_close(spol_pseudo_mask(cam * 7.0), out)  # scale-free: divided by the max


@pytest.mark.parametrize(
    "kwargs, word",
    [({"low": -0.1}, "low"), ({"high": 1.5}, "high"), ({"low": 0.6, "high": 0.5}, "low"),
     ({"shrink": 0.0}, "shrink")],
)
def test_pseudo_mask_bad_input(kwargs, word):
    with pytest.raises(ValueError, match=word):
        spol_pseudo_mask(torch.rand(1, 8, 8), **kwargs)
    with pytest.raises(ValueError, match="cam"):
        spol_pseudo_mask(torch.rand(8, 8))
    with pytest.raises(ValueError, match="cam"):
        spol_pseudo_mask(torch.full((1, 8, 8), float("nan")))


def test_mff_head_is_a_product_of_the_reduced_stages():
    torch.manual_seed(0)
    head = MFFHead((2, 3, 4), out=2, width=5).eval()
    stages = [torch.rand(2, 2, 8, 8), torch.rand(2, 3, 4, 4), torch.rand(2, 4, 2, 2)]
    v = torch.stack([a(o.mean(dim=(-2, -1), keepdim=True)) for a, o in zip(head.attention, stages)]).prod(0)
    reduced = [r(torch.sigmoid(e(v)) * o) for r, e, o in zip(head.reduce, head.expand, stages)]
    fused = reduced[0]
    for f in reduced[1:]:
        fused = fused * torch.nn.functional.interpolate(f, size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(head(stages)["map"], torch.relu(head.classifier(fused)))
    torch.testing.assert_close(head(stages)["map_deep"], torch.relu(head.classifier(reduced[-1])))


_STAGES = {"resnet18": ["layer2", "layer3", "layer4"],
           "vgg11_bn": ["features.20", "features.27", "features"],
           "mobilenet_v2": ["features.6", "features.13", "features"]}


@pytest.mark.parametrize("arch", list(_STAGES))
def test_build_on_torchvision(arch):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    built = build(net, "spol", 3, input_size=(64, 64), spol_width=8)
    assert isinstance(built, SPOLModel) and built.layers == _STAGES[arch]
    assert built.target_layer == f"backbone.{_STAGES[arch][-1]}"
    images = torch.rand(2, 3, 64, 64)
    built.eval()
    assert built(images).shape == (2, 3)
    cams = built.cams(images)
    assert cams.shape == (2, 8, 8) and ((cams > 0) & (cams < 1)).all()
    torch.testing.assert_close(built.cams(images, [0, 2]), cams)  # class-agnostic
    assert built.class_cams(images, [0, 2]).shape == (2, 8, 8)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    # the segmentation net starts again from the classifier's own weights
    assert all(torch.equal(a, b) for a, b in zip(built.seg_backbone.parameters(), net.parameters()))


def _batch():
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, *SIZE, generator=gen)
    images[:, :, 8:24, 8:24] += 2.0
    return images, torch.tensor([0, 1, 2, 0])


def _losses(built, stage, steps=6):
    images, labels = _batch()
    built.train()
    built.stage = stage
    opt = make_optimizer(built, lr=0.01)
    return [train_step(built, images, labels, "spol", opt, options=MethodOptions())[0] for _ in range(steps)]


def test_each_stage_learns_on_a_repeated_batch():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    built = build(net, "spol", 3, feature_layer="layer3", input_size=SIZE, spol_width=16, spol_dropout=0.0)
    cam_net = [p.detach().clone() for p in built.backbone.parameters()]
    seg_net = [p.detach().clone() for p in built.seg_backbone.parameters()]
    first = _losses(built, "cam")
    assert first[-1] < first[0] and all(np.isfinite(first))
    assert all(torch.equal(a, b) for a, b in zip(seg_net, built.seg_backbone.parameters()))
    cam_net = [p.detach().clone() for p in built.backbone.parameters()]
    second = _losses(built, "seg")
    assert second[-1] < second[0] and all(np.isfinite(second))
    assert all(torch.equal(a, b) for a, b in zip(cam_net, built.backbone.parameters()))  # frozen
    maps = built.cams(_batch()[0])
    assert torch.isfinite(maps).all()


def test_segmentation_target_is_the_pseudo_mask():
    """Stage 2's loss is the valid-weighted BCE against (CAM > .25) or (Gaus > .25)."""
    torch.manual_seed(0)
    built = build(torchvision.models.resnet18(weights=None), "spol", 3, feature_layer="layer3",
                  input_size=SIZE, spol_width=8)
    images, labels = _batch()
    built.stage = "seg"
    built.eval()  # the segmentation net without dropout, so both sides agree
    loss, logits = built.training_loss(images, labels, MethodOptions())
    cam = built.class_cams(images, labels)[:, None]
    cam = torch.nn.functional.interpolate(cam, size=SIZE, mode="bilinear", align_corners=False)
    cam = cam / cam.flatten(1).amax(1).view(-1, 1, 1, 1).clamp_min(1e-12)
    fg = (cam > 0.25) | (spol_pseudo_mask(cam) > 0.25)
    valid = fg | (cam < 0.01)
    seg = torch.nn.functional.interpolate(built.seg_logits(images), size=SIZE, mode="bilinear",
                                          align_corners=False)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(seg, fg.float(), reduction="none")
    torch.testing.assert_close(loss, (bce * valid).mean())
    torch.testing.assert_close(logits, built(images))


def test_train_runs_both_stages():
    torch.manual_seed(0)
    built = build(torchvision.models.resnet18(weights=None), "spol", 3, feature_layer="layer3",
                  input_size=SIZE, spol_width=8)
    images, labels = _batch()
    history = train(built, [(images, labels)] * 2, "spol", epochs=2, lr=0.01, progress=False,
                    spol_seg_epochs=1, max_steps=1)
    assert [h["stage"] for h in history] == [1.0, 2.0]  # max_steps counts per stage
    assert [h["steps"] for h in history] == [1.0, 1.0] and built.stage == "seg"


@pytest.mark.parametrize(
    "kwargs, word",
    [({"spol_low": 1.5}, "spol_low"), ({"spol_high": -0.2}, "spol_high"),
     ({"spol_foreground": 2.0}, "spol_foreground"), ({"spol_shrink": -1.0}, "spol_shrink"),
     ({"spol_seg_epochs": 0}, "spol_seg_epochs")],
)
def test_train_bad_options(kwargs, word):
    built = build(torchvision.models.resnet18(weights=None), "spol", 3, feature_layer="layer2",
                  input_size=SIZE, spol_width=8)
    with pytest.raises(ValueError, match=word):
        train(built, [_batch()], "spol", progress=False, **kwargs)


def test_bad_input():
    net = torchvision.models.resnet18(weights=None)
    with pytest.raises(ValueError, match="spol_dropout"):
        build(net, "spol", 3, input_size=SIZE, spol_dropout=1.5)
    with pytest.raises(ValueError, match="spol_width"):
        build(net, "spol", 3, input_size=SIZE, spol_width=0)
    with pytest.raises(TypeError, match="spol_width"):
        build(net, "cam", 3, input_size=SIZE, spol_width=8)
    built = build(net, "spol", 3, feature_layer="layer2", input_size=SIZE, spol_width=8)
    with pytest.raises(ValueError, match="images"):
        built.cams(torch.rand(3, *SIZE))
    with pytest.raises(ValueError, match="targets"):
        built.cams(torch.rand(1, 3, *SIZE), [7])
    with pytest.raises(ValueError, match="2 images"):
        train(built, [(torch.rand(1, 3, *SIZE), torch.tensor([0]))], "spol", progress=False)
    with pytest.raises(ValueError, match="method"):
        train(build(net, "cam", 3, input_size=SIZE), [_batch()], "spol", progress=False)
