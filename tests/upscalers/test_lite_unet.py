"""Light U-Net decoder (``"unet-lite"``, the default): shapes, gaps, golden block, prior init,
gradients, cost vs UNetDecoder, float64."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from fcam import FCAM
from fcam.upscalers import (
    DEFAULT_WIDTHS,
    FOREGROUND_PRIOR,
    LITE_WIDTHS,
    FeatureLevel,
    LiteDecoderBlock,
    LiteUNetDecoder,
    Pyramid,
    UNetDecoder,
    available,
    build_upscaler,
    capture_features,
    default_widths,
    discover_pyramid,
)

# A resnet50-like pyramid (head layer4 at stride 32, skips layer3 ... relu).
R50 = Pyramid(
    FeatureLevel("layer4", 2048, 5),
    (
        FeatureLevel("layer3", 1024, 4),
        FeatureLevel("layer2", 512, 3),
        FeatureLevel("layer1", 256, 2),
        FeatureLevel("relu", 64, 1),
    ),
)


def _inputs(pyr: Pyramid, n: int, size: tuple[int, int], dtype: torch.dtype = torch.float32):
    """Head and skips with the spatial sizes a padded conv net gives for ``size``."""

    def side(s: int, level: int) -> int:
        for _ in range(level):
            s = (s + 1) // 2
        return s

    g = torch.Generator().manual_seed(0)

    def feat(ch: int, level: int) -> torch.Tensor:
        return torch.randn(
            n, ch, side(size[0], level), side(size[1], level), generator=g, dtype=dtype
        )

    head = feat(pyr.head.channels, pyr.head.level)
    skips = [feat(s.channels, s.level) if s is not None else None for s in pyr.skips]
    return head, skips


def _macs(dec: nn.Module, head: torch.Tensor, skips: list, size: tuple[int, int]) -> int:
    total = 0

    def hook(m: nn.Conv2d, _i: object, out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out[0].numel() * (m.in_channels // m.groups) * k

    handles = [m.register_forward_hook(hook) for m in dec.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        dec(head, skips, size)
    for h in handles:
        h.remove()
    return total


def _trained_head(dec: nn.Module, seed: int = 0) -> nn.Module:
    """Random segmentation-head weights, as after training (the prior init zeroes them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dec.seg_head.weight.copy_(torch.randn(dec.seg_head.weight.shape, generator=g) * 0.3)
    return dec


def test_registered_and_default() -> None:
    assert "unet-lite" in available()
    assert "unet" in available()
    pyr = Pyramid(FeatureLevel("h", 6, 2), (FeatureLevel("s", 3, 1),))
    assert isinstance(build_upscaler("unet-lite", pyr, (4, 4)), LiteUNetDecoder)
    assert type(build_upscaler("unet", pyr, (4, 4))) is UNetDecoder
    assert default_widths("unet-lite") == LITE_WIDTHS == (128, 64, 32, 16, 8)
    assert default_widths("unet") == DEFAULT_WIDTHS
    with pytest.raises(ValueError, match="upscaler must be one of"):
        default_widths("unet-huge")
    fc = FCAM(tvm.resnet18(weights=None, num_classes=3), "layer4", cam="cam")
    assert isinstance(fc.decoder, LiteUNetDecoder)
    assert fc.config.upscaler == "unet-lite" and fc.config.widths == LITE_WIDTHS
    fc = FCAM(tvm.resnet18(weights=None, num_classes=3), "layer4", cam="cam", upscaler="unet")
    assert type(fc.decoder) is UNetDecoder and fc.config.widths == DEFAULT_WIDTHS


@pytest.mark.parametrize("size", [(33, 47), (31, 31), (64, 64), (17, 90)])
def test_output_shape_at_odd_sizes(size: tuple[int, int]) -> None:
    pyr = Pyramid(FeatureLevel("h", 12, 3), (FeatureLevel("s2", 8, 2), FeatureLevel("s1", 4, 1)))
    dec = _trained_head(LiteUNetDecoder(pyr, widths=(8, 6, 4))).eval()
    head, skips = _inputs(pyr, 2, size)
    out = dec(head, skips, size)
    assert out.shape == (2, 2, *size)
    assert torch.isfinite(out).all()


def test_real_resnet_odd_size() -> None:
    model = tvm.resnet18(weights=None).eval()
    pyr = discover_pyramid(model, "layer4")
    dec = LiteUNetDecoder(pyr).eval()
    assert [b.conv2[1].num_features for b in dec.blocks] == list(LITE_WIDTHS)
    size = (161, 203)
    with torch.no_grad(), capture_features(model, pyr.names) as feats:
        model(torch.randn(1, 3, *size))
        out = dec(feats[pyr.head.name], [feats[s.name] if s else None for s in pyr.skips], size)
    assert out.shape == (1, 2, *size)


def test_gaps_in_the_pyramid() -> None:
    # ConvNeXt-like: no stride-2 feature; plus a gap in the middle.
    pyr = Pyramid(FeatureLevel("h", 16, 4), (FeatureLevel("s3", 8, 3), None, None))
    dec = LiteUNetDecoder(pyr, widths=(8, 8, 4, 4)).eval()
    assert dec.blocks[0].lateral is not None
    assert all(b.lateral is None for b in dec.blocks[1:])
    assert [b.conv1[0].in_channels for b in dec.blocks] == [16, 8, 4, 4]
    head, skips = _inputs(pyr, 1, (45, 37))
    assert skips[1] is None and skips[2] is None
    assert dec(head, skips, (45, 37)).shape == (1, 2, 45, 37)
    # a shorter skip list is padded with None
    assert dec(head, skips[:1], (45, 37)).shape == (1, 2, 45, 37)


def test_widths_repeat_and_truncate() -> None:
    pyr = Pyramid(
        FeatureLevel("h", 16, 4), (FeatureLevel("a", 8, 3), FeatureLevel("b", 4, 2), None)
    )
    assert [b.conv2[1].num_features for b in LiteUNetDecoder(pyr, widths=(8, 4)).blocks] == [8, 4, 4, 4]
    two = Pyramid(FeatureLevel("h", 16, 2), (FeatureLevel("a", 8, 1),))
    assert len(LiteUNetDecoder(two, widths=(8, 4, 2)).blocks) == 2
    with pytest.raises(ValueError, match="widths"):
        LiteUNetDecoder(two, widths=())
    with pytest.raises(ValueError, match="widths"):
        LiteUNetDecoder(two, widths=(8, 0))


def test_block_reduces_before_upsampling_and_concatenates() -> None:
    blk = LiteDecoderBlock(8, 4, 6).eval()
    seen: dict[str, tuple[int, ...]] = {}
    blk.reduce.register_forward_hook(lambda _m, i, _o: seen.__setitem__("reduce", tuple(i[0].shape)))
    blk.conv1.register_forward_hook(lambda _m, i, _o: seen.__setitem__("conv1", tuple(i[0].shape)))
    blk(torch.randn(1, 8, 3, 3), torch.randn(1, 4, 6, 6))
    assert seen["reduce"] == (1, 8, 3, 3)  # the 1×1 reduction runs at the low resolution
    assert seen["conv1"] == (1, 12, 6, 6)  # [up(R_x x), R_s s]: 6 + 6 channels
    same = LiteDecoderBlock(6, 0, 6)
    assert isinstance(same.reduce, nn.Identity)
    assert same.lateral is None


def test_block_golden_values() -> None:
    """Centre-tap 3×3 kernels, eval BN at its initial statistics (a factor c = 1/sqrt(1 + eps)):
    y = c·relu(c·relu(up(c·relu(2 x0 - x1)) + ½ c·relu(3 s))), by hand."""
    blk = LiteDecoderBlock(2, 1, 1).eval()
    with torch.no_grad():
        blk.reduce[0].weight.copy_(torch.tensor([2.0, -1.0]).view(1, 2, 1, 1))
        blk.lateral[0].weight.fill_(3.0)
        blk.conv1[0].weight.zero_()
        blk.conv1[0].weight[0, :, 1, 1] = torch.tensor([1.0, 0.5])
        blk.conv2[0].weight.zero_()
        blk.conv2[0].weight[0, 0, 1, 1] = 1.0
    c = 1.0 / (1.0 + blk.conv1[1].eps) ** 0.5
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]]).view(1, 1, 2, 2)
    x = torch.cat([x, torch.ones_like(x)], dim=1)  # channel 1 is subtracted by the reduction
    s = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4) / 8 - 1
    reduced = c * torch.relu(2 * x[:, :1] - x[:, 1:])
    up = reduced.repeat_interleave(2, -1).repeat_interleave(2, -2)
    lateral = c * torch.relu(3 * s)
    expected = c * torch.relu(c * torch.relu(up + 0.5 * lateral))
    torch.testing.assert_close(blk(x, s), expected)


def test_untrained_map_is_the_foreground_prior() -> None:
    """The segmentation head starts at zero weights: every pixel gets FOREGROUND_PRIOR, whatever
    the features; its bias is the prior's logit."""
    dec = LiteUNetDecoder(R50).eval()
    assert torch.equal(dec.seg_head.weight, torch.zeros_like(dec.seg_head.weight))
    assert dec.seg_head.bias[0] == 0
    assert dec.seg_head.bias[1].item() == pytest.approx(math.log(FOREGROUND_PRIOR / (1 - FOREGROUND_PRIOR)))
    pyr = Pyramid(FeatureLevel("h", 12, 3), (FeatureLevel("s2", 8, 2), FeatureLevel("s1", 4, 1)))
    head, skips = _inputs(pyr, 2, (21, 19))
    probs = LiteUNetDecoder(pyr, widths=(8, 6, 4)).eval()(head, skips, (21, 19)).softmax(1)
    torch.testing.assert_close(probs[:, 1], torch.full((2, 21, 19), FOREGROUND_PRIOR))


def test_first_step_trains_the_head_then_every_parameter() -> None:
    pyr = Pyramid(FeatureLevel("h", 12, 3), (FeatureLevel("s2", 8, 2), FeatureLevel("s1", 4, 1)))
    torch.manual_seed(0)
    dec = LiteUNetDecoder(pyr, widths=(8, 8, 4)).train()
    head, skips = _inputs(pyr, 2, (21, 19))
    target = (torch.rand(2, 21, 19, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    opt = torch.optim.SGD(dec.parameters(), lr=0.1)

    def step() -> dict[str, torch.Tensor | None]:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(dec(head, skips, (21, 19)), target).backward()
        grads = {n: p.grad for n, p in dec.named_parameters()}
        opt.step()
        return grads

    first = step()
    assert first["seg_head.weight"].abs().sum() > 0 and first["seg_head.bias"].abs().sum() > 0
    # zero head weights: nothing below the head gets a gradient on the very first step
    assert all(g is None or g.abs().sum() == 0 for n, g in first.items() if not n.startswith("seg_head"))
    second = step()
    for name, g in second.items():
        assert g is not None and g.abs().sum() > 0, name


def test_cheaper_than_unet_for_resnet50_pyramid() -> None:
    lite = LiteUNetDecoder(R50).eval()
    unet = UNetDecoder(R50).eval()
    n_lite = sum(p.numel() for p in lite.parameters())
    n_unet = sum(p.numel() for p in unet.parameters())
    assert n_lite < n_unet / 5
    head, skips = _inputs(R50, 1, (224, 224))
    macs_lite, macs_unet = (
        _macs(lite, head, skips, (224, 224)),
        _macs(unet, head, skips, (224, 224)),
    )
    assert macs_unet > 4.0e9  # the published decoder: about one resnet50 forward
    assert macs_lite < 0.15 * macs_unet
    assert macs_lite < 0.55e9


def test_init_conventions() -> None:
    dec = LiteUNetDecoder(R50)
    for m in dec.blocks.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
    # the published decoder keeps F-CAM's xavier head with zero bias
    unet = UNetDecoder(R50)
    assert torch.equal(unet.seg_head.bias, torch.zeros(2)) and unet.seg_head.weight.abs().sum() > 0
    torch.manual_seed(3)
    a = LiteUNetDecoder(R50).state_dict()
    torch.manual_seed(3)
    b = LiteUNetDecoder(R50).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_float64() -> None:
    pyr = Pyramid(FeatureLevel("h", 6, 2), (FeatureLevel("s", 3, 1),))
    dec = _trained_head(LiteUNetDecoder(pyr, widths=(4, 4))).double().eval()
    head, skips = _inputs(pyr, 2, (9, 11), torch.float64)
    out = dec(head, skips, (9, 11))
    assert out.dtype == torch.float64 and out.shape == (2, 2, 9, 11)
    # a float32 skip is cast to the decoder tensor's dtype
    out2 = dec(head, [skips[0].float()], (9, 11))
    assert out2.dtype == torch.float64
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)


def test_gradcheck() -> None:
    pyr = Pyramid(FeatureLevel("h", 4, 2), (FeatureLevel("s", 3, 1),))
    torch.manual_seed(0)
    dec = _trained_head(LiteUNetDecoder(pyr, widths=(3, 2))).double().eval()
    for m in dec.modules():  # non-trivial eval statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    head = torch.randn(1, 4, 2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    skip = torch.randn(1, 3, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)

    def fn(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return dec(h, [s], (5, 9))

    assert torch.autograd.gradcheck(fn, (head, skip), eps=1e-6, atol=1e-5)


def test_float32_matches_float64() -> None:
    pyr = Pyramid(FeatureLevel("h", 6, 2), (FeatureLevel("s", 3, 1),))
    torch.manual_seed(0)
    dec = _trained_head(LiteUNetDecoder(pyr, widths=(4, 4))).eval()
    head, skips = _inputs(pyr, 2, (9, 11))
    out32 = dec(head, skips, (9, 11))
    out64 = dec.double()(head.double(), [s.double() for s in skips], (9, 11))
    torch.testing.assert_close(out32.double(), out64, atol=1e-4, rtol=1e-4)
