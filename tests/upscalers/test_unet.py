"""U-Net decoder: shapes on every torchvision family, block semantics, init, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from fcam.upscalers import (
    DecoderBlock,
    FeatureLevel,
    Pyramid,
    UNetDecoder,
    build_upscaler,
    capture_features,
    discover_pyramid,
)

# (arch, target layer, odd input size)
CASES = [
    ("resnet18", "layer4", (161, 203)),
    ("vgg11_bn", "features", (161, 203)),
    ("inception_v3", "Mixed_7c", (299, 299)),
    ("densenet121", "features", (161, 203)),
    ("mobilenet_v3_small", "features", (161, 203)),
    ("efficientnet_b0", "features", (161, 203)),
    ("convnext_tiny", "features", (161, 203)),
    ("regnet_y_400mf", "trunk_output", (161, 203)),
    ("googlenet", "inception5b", (161, 203)),
]


@pytest.mark.parametrize(("arch", "target", "odd"), CASES, ids=[c[0] for c in CASES])
def test_decoder_shapes_per_family(arch: str, target: str, odd: tuple[int, int]) -> None:
    kw = {"init_weights": False} if arch in {"inception_v3", "googlenet"} else {}
    if arch == "googlenet":
        kw["aux_logits"] = False
    model = getattr(tvm, arch)(weights=None, **kw).eval()
    pyr = discover_pyramid(model, target)
    dec = UNetDecoder(pyr, widths=(8, 8, 4, 4, 4)).eval()
    assert len(dec.blocks) == 5
    for size in [(224, 224), odd]:
        with torch.no_grad(), capture_features(model, pyr.names) as feats:
            model(torch.randn(1, 3, *size))
            out = dec(feats[pyr.head.name], [feats[s.name] if s else None for s in pyr.skips], size)
        assert out.shape == (1, 2, *size)
        assert torch.isfinite(out).all()


def _pyr(head_ch: int = 6, level: int = 2, skip_ch: int = 3) -> Pyramid:
    return Pyramid(FeatureLevel("h", head_ch, level), (FeatureLevel("s", skip_ch, 1),))


def test_block_upsamples_resizes_and_concatenates() -> None:
    blk = DecoderBlock(2, 1, 3).eval()
    seen: dict[str, torch.Tensor] = {}

    def record(_m: nn.Module, inp: tuple[torch.Tensor], _o: torch.Tensor) -> None:
        seen["in"] = inp[0].clone()

    blk.conv1.register_forward_hook(record)
    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    skip = torch.full((1, 1, 3, 3), 7.0)
    out = blk(x, skip)
    assert out.shape == (1, 3, 3, 3)
    up = F.interpolate(x.repeat_interleave(2, -1).repeat_interleave(2, -2), size=(3, 3),
                       mode="bilinear", align_corners=True)
    # Decoder tensor first, then the skip; nearest x2 then bilinear (align_corners=True).
    assert torch.equal(seen["in"], torch.cat([up, skip], 1))
    # Without a skip (or with a matching size) no bilinear resize happens.
    seen.clear()
    blk2 = DecoderBlock(2, 0, 3)
    blk2.conv1.register_forward_hook(record)
    blk2(x)
    assert torch.equal(seen["in"], x.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_widths_trimmed_extended_and_channels() -> None:
    dec = UNetDecoder(_pyr(level=2), widths=(256, 128, 64, 32, 16))
    assert [b.conv2[0].out_channels for b in dec.blocks] == [256, 128]
    assert dec.blocks[0].conv1[0].in_channels == 6 + 3
    assert dec.blocks[1].conv1[0].in_channels == 256  # full resolution: no skip
    deep = Pyramid(FeatureLevel("h", 4, 4), (None, None, None))
    assert [b.conv2[0].out_channels for b in UNetDecoder(deep, widths=(8, 4)).blocks] == [8, 4, 4, 4]
    with pytest.raises(ValueError, match="widths"):
        UNetDecoder(deep, widths=())
    with pytest.raises(ValueError, match="upscaler"):
        build_upscaler("transformer", deep)
    assert isinstance(build_upscaler("unet", deep), UNetDecoder)


def test_init_follows_fcam() -> None:
    torch.manual_seed(0)
    dec = UNetDecoder(_pyr(head_ch=64, skip_ch=64), widths=(64, 64))
    w = dec.blocks[0].conv1[0].weight
    bound = (6 / w[0].numel()) ** 0.5  # kaiming_uniform, fan_in, gain sqrt(2)
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    bn = dec.blocks[0].conv1[1]
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
    hw = dec.seg_head.weight
    xb = (6 / (hw.shape[1] * 9 + hw.shape[0] * 9)) ** 0.5
    assert hw.abs().max() <= xb and not dec.seg_head.bias.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_odd_size_output_and_dtype(dtype: torch.dtype) -> None:
    dec = UNetDecoder(_pyr(), widths=(4, 4)).to(dtype)
    out = dec(torch.randn(2, 6, 3, 4, dtype=dtype), [torch.randn(2, 3, 5, 7, dtype=dtype)], (11, 13))
    assert out.shape == (2, 2, 11, 13) and out.dtype == dtype


def test_gradcheck_float64() -> None:
    dec = UNetDecoder(_pyr(head_ch=2, skip_ch=1), widths=(2, 2)).double().eval()
    head = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    skip = torch.randn(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, s: dec(h, [s], (5, 5)), (head, skip))


def test_decoder_is_a_plain_module() -> None:
    dec = UNetDecoder(_pyr(), widths=(4, 4))
    assert isinstance(dec, nn.Module)
    assert all(p.requires_grad for p in dec.parameters())
