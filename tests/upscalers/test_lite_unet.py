"""Light U-Net decoder (``"unet-lite"``): shapes, gaps, gradients, cost vs UNetDecoder, float64."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from fcam.upscalers import (
    DEFAULT_WIDTHS,
    FeatureLevel,
    LiteDecoderBlock,
    LiteUNetDecoder,
    Pyramid,
    UNetDecoder,
    available,
    build_upscaler,
    capture_features,
    discover_pyramid,
)
from fcam.upscalers.lite_unet import SEPARABLE_MIN_WIDTH

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


def test_registered() -> None:
    assert "unet-lite" in available()
    assert "unet" in available()
    pyr = Pyramid(FeatureLevel("h", 6, 2), (FeatureLevel("s", 3, 1),))
    assert isinstance(build_upscaler("unet-lite", pyr, (4, 4)), LiteUNetDecoder)
    assert isinstance(build_upscaler("unet", pyr, (4, 4)), UNetDecoder)


@pytest.mark.parametrize("size", [(33, 47), (31, 31), (64, 64), (17, 90)])
def test_output_shape_at_odd_sizes(size: tuple[int, int]) -> None:
    pyr = Pyramid(FeatureLevel("h", 12, 3), (FeatureLevel("s2", 8, 2), FeatureLevel("s1", 4, 1)))
    dec = LiteUNetDecoder(pyr, widths=(8, 6, 4)).eval()
    head, skips = _inputs(pyr, 2, size)
    out = dec(head, skips, size)
    assert out.shape == (2, 2, *size)
    assert torch.isfinite(out).all()


def test_real_resnet_odd_size() -> None:
    model = tvm.resnet18(weights=None).eval()
    pyr = discover_pyramid(model, "layer4")
    dec = LiteUNetDecoder(pyr, widths=(8, 8, 4, 4, 4)).eval()
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
    head, skips = _inputs(pyr, 1, (45, 37))
    assert skips[1] is None and skips[2] is None
    assert dec(head, skips, (45, 37)).shape == (1, 2, 45, 37)
    # a shorter skip list is padded with None
    assert dec(head, skips[:1], (45, 37)).shape == (1, 2, 45, 37)


def test_widths_repeat_and_truncate() -> None:
    pyr = Pyramid(
        FeatureLevel("h", 16, 4), (FeatureLevel("a", 8, 3), FeatureLevel("b", 4, 2), None)
    )
    assert [b.conv[-2].num_features for b in LiteUNetDecoder(pyr, widths=(8, 4)).blocks] == [
        8,
        4,
        4,
        4,
    ]
    two = Pyramid(FeatureLevel("h", 16, 2), (FeatureLevel("a", 8, 1),))
    assert len(LiteUNetDecoder(two, widths=(8, 4, 2)).blocks) == 2
    with pytest.raises(ValueError, match="widths"):
        LiteUNetDecoder(two, widths=())
    with pytest.raises(ValueError, match="widths"):
        LiteUNetDecoder(two, widths=(8, 0))


def test_block_projects_before_upsampling_and_adds_lateral() -> None:
    blk = LiteDecoderBlock(8, 4, 6).eval()
    seen: dict[str, tuple[int, ...]] = {}
    blk.project.register_forward_hook(
        lambda _m, i, _o: seen.__setitem__("project", tuple(i[0].shape))
    )
    blk(torch.randn(1, 8, 3, 3), torch.randn(1, 4, 6, 6))
    assert seen["project"] == (1, 8, 3, 3)  # the 1×1 projection runs at the low resolution
    same = LiteDecoderBlock(6, 0, 6)
    assert isinstance(same.project, nn.Identity)
    assert same.lateral is None


def test_separable_only_for_wide_blocks() -> None:
    dec = LiteUNetDecoder(R50)
    for block in dec.blocks:
        width = block.conv[-2].num_features
        depthwise = block.conv[0].groups == width and width > 1
        assert depthwise == (width >= SEPARABLE_MIN_WIDTH)


def test_gradients_reach_every_parameter() -> None:
    pyr = Pyramid(FeatureLevel("h", 12, 3), (FeatureLevel("s2", 8, 2), FeatureLevel("s1", 4, 1)))
    torch.manual_seed(0)
    dec = LiteUNetDecoder(pyr, widths=(64, 8, 4)).train()  # first block separable
    head, skips = _inputs(pyr, 2, (21, 19))
    head.requires_grad_(True)
    dec(head, skips, (21, 19)).square().mean().backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert head.grad is not None and head.grad.abs().sum() > 0


def test_cheaper_than_unet_for_resnet50_pyramid() -> None:
    lite = LiteUNetDecoder(R50, DEFAULT_WIDTHS).eval()
    unet = UNetDecoder(R50, DEFAULT_WIDTHS).eval()
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
    assert macs_lite < 0.6e9


def test_init_conventions() -> None:
    dec = LiteUNetDecoder(R50)
    for m in dec.blocks.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
    assert torch.equal(dec.seg_head.bias, torch.zeros(2))
    torch.manual_seed(3)
    a = LiteUNetDecoder(R50).state_dict()
    torch.manual_seed(3)
    b = LiteUNetDecoder(R50).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_float64() -> None:
    pyr = Pyramid(FeatureLevel("h", 6, 2), (FeatureLevel("s", 3, 1),))
    dec = LiteUNetDecoder(pyr, widths=(4, 4)).double().eval()
    head, skips = _inputs(pyr, 2, (9, 11), torch.float64)
    out = dec(head, skips, (9, 11))
    assert out.dtype == torch.float64 and out.shape == (2, 2, 9, 11)
    # a float32 skip is cast to the decoder tensor's dtype
    out2 = dec(head, [skips[0].float()], (9, 11))
    assert out2.dtype == torch.float64
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("widths", [(3, 2), (64, 2)], ids=["dense", "separable"])
def test_gradcheck(widths: tuple[int, int]) -> None:
    pyr = Pyramid(FeatureLevel("h", 4, 2), (FeatureLevel("s", 3, 1),))
    torch.manual_seed(0)
    dec = LiteUNetDecoder(pyr, widths=widths).double().eval()
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
    dec = LiteUNetDecoder(pyr, widths=(4, 4)).eval()
    head, skips = _inputs(pyr, 2, (9, 11))
    out32 = dec(head, skips, (9, 11))
    out64 = dec.double()(head.double(), [s.double() for s in skips], (9, 11))
    torch.testing.assert_close(out32.double(), out64, atol=1e-4, rtol=1e-4)
