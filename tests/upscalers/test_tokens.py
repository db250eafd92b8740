"""Token layouts: grid inference, reshape goldens, token pyramids and the DPT decoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from fcam.core import probe_model
from fcam.core.tokens import (
    GridLayout,
    default_target_layer,
    grid_fits,
    infer_grid,
    output_layout,
    to_nchw,
    token_blocks,
)
from fcam.upscalers import (
    DPTDecoder,
    FeatureLevel,
    Pyramid,
    UNetDecoder,
    build_upscaler,
    discover_pyramid,
)

# (tokens, image size) -> (prefix, grid): class token, distillation token, registers,
# non-square inputs, patch 14, padded (ceil) patch grids.
GRIDS = [
    (197, (224, 224), (1, (14, 14))),
    (196, (224, 224), (0, (14, 14))),
    (198, (224, 224), (2, (14, 14))),
    (201, (224, 224), (5, (14, 14))),  # class + 4 registers
    (257, (224, 224), (1, (16, 16))),  # patch 14
    (1 + 20 * 18, (320, 288), (1, (20, 18))),
    (1 + 18 * 20, (288, 320), (1, (18, 20))),
    (1 + 4 * 7, (64, 112), (1, (4, 7))),
    (49, (224, 224), (0, (7, 7))),
    (1 + 8 * 8, (61, 64), (1, (8, 8))),  # padded patch embedding: ceil(61 / 8) = 8
    (5, (32, 32), (1, (2, 2))),
    (2 + 3 * 5, (48, 80), (2, (3, 5))),
]


@pytest.mark.parametrize(("tokens", "size", "expected"), GRIDS)
def test_grid_inference_golden(tokens: int, size: tuple[int, int], expected: tuple) -> None:
    assert infer_grid(tokens, size) == expected


def test_grid_inference_with_known_prefix_and_errors() -> None:
    assert infer_grid(201, (224, 224), prefix=5) == (5, (14, 14))
    with pytest.raises(ValueError, match="reshape_transform"):
        infer_grid(197, (224, 224), prefix=0)
    with pytest.raises(ValueError, match="cannot arrange"):
        infer_grid(7, (224, 224), max_prefix=0)
    assert grid_fits(10, 9, (320, 288)) and not grid_fits(9, 10, (320, 288))


def test_reshape_golden_values() -> None:
    # Token t of the grid (row-major after the prefix) lands at (t // w, t % w).
    b, h, w, c, p = 2, 3, 5, 4, 2
    grid = torch.arange(b * h * w * c, dtype=torch.float32).reshape(b, h, w, c)
    tokens = torch.cat([torch.full((b, p, c), -1.0), grid.reshape(b, h * w, c)], dim=1)
    out = to_nchw(tokens, "tokens", (48, 80), prefix=p)
    assert out.shape == (b, c, h, w)
    assert torch.equal(out, grid.permute(0, 3, 1, 2))
    assert torch.equal(to_nchw(grid, "nhwc", (48, 80)), grid.permute(0, 3, 1, 2))
    same = torch.zeros(1, 4, 3, 5)
    assert to_nchw(same, "nchw", (48, 80)) is same
    with pytest.raises(ValueError, match="layout"):
        to_nchw(same, "nhcw", (48, 80))


@pytest.mark.parametrize(
    ("shape", "size", "expected"),
    [
        ((1, 96, 80, 72), (320, 288), GridLayout("nchw", 2, 0, (80, 72))),
        ((1, 80, 72, 96), (320, 288), GridLayout("nhwc", 2, 0, (80, 72))),
        ((1, 7, 7, 768), (224, 224), GridLayout("nhwc", 5, 0, (7, 7))),  # square: C decides
        ((1, 768, 7, 7), (224, 224), GridLayout("nchw", 5, 0, (7, 7))),
        ((1, 198, 192), (224, 224), GridLayout("tokens", 4, 2, (14, 14))),
        ((1, 512, 1, 1), (224, 224), None),
        ((1, 1000), (224, 224), None),
    ],
)
def test_output_layout(shape: tuple, size: tuple, expected: GridLayout | None) -> None:
    assert output_layout(shape, size) == expected


def tiny_vit(image_size: int = 32, layers: int = 4) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=image_size, patch_size=8, num_layers=layers, num_heads=2, hidden_dim=16,
        mlp_dim=16, num_classes=3,
    ).eval()  # fmt: skip


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        window_size=[2, 2], num_classes=3,
    ).eval()  # fmt: skip


def test_vit_default_layer_blocks_and_pyramid() -> None:
    vit = tiny_vit()
    probe = probe_model(vit, size=(32, 32))
    blocks = token_blocks(vit, probe)
    assert blocks == [f"encoder.layers.encoder_layer_{i}" for i in range(4)]
    name, layout = default_target_layer(vit, probe)
    assert name == "encoder.layers.encoder_layer_3.ln_1"
    assert layout == GridLayout("tokens", 3, 1, (4, 4))
    pyr = discover_pyramid(vit, name, probe=probe)
    # Patch 8 (level 3): head read at stride 16, blocks 2, 1, 0 at strides 8, 4, 2.
    assert (pyr.head.level, pyr.head.grid_level, pyr.head.prefix) == (4, 3, 1)
    assert [(s.name[-1], s.level, s.source_level) for s in pyr.skips if s] == [
        ("2", 3, 3), ("1", 2, 3), ("0", 1, 3)
    ]
    assert pyr.resampled and Pyramid.from_dict(pyr.to_dict()) == pyr
    assert isinstance(build_upscaler("unet", pyr, (8, 8, 8, 8)), DPTDecoder)


def test_swin_pyramid_is_channels_last_non_square() -> None:
    swin = tiny_swin()
    probe = probe_model(swin, size=(96, 64))
    name, layout = default_target_layer(swin, probe)
    assert name == "permute" and layout.layout == "nchw" and layout.grid == (3, 2)
    pyr = discover_pyramid(swin, name, probe=probe)
    assert [(s.name, s.layout, s.level) if s else None for s in pyr.skips] == [
        ("features.5", "nhwc", 4), ("features.3", "nhwc", 3), ("features.1", "nhwc", 2), None
    ]
    assert not pyr.resampled and Pyramid.from_dict(pyr.to_dict()) == pyr
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        from fcam.upscalers import capture_features

        with capture_features(swin, pyr.names) as feats:
            swin(x)
    head, skips = pyr.maps(feats, (96, 64))
    assert head.shape[-2:] == (3, 2)
    assert [tuple(s.shape[-3:]) for s in skips if s is not None] == [
        (32, 6, 4), (16, 12, 8), (8, 24, 16)
    ]
    assert isinstance(build_upscaler("unet", pyr, (8, 8, 8, 8, 8)), UNetDecoder)


def test_pyramid_dict_backward_compatible() -> None:
    old = {"head": ["layer4", 512, 5], "skips": [["layer3", 256, 4], None]}
    pyr = Pyramid.from_dict(old)
    assert pyr.head == FeatureLevel("layer4", 512, 5) and pyr.head.layout == "nchw"
    assert pyr.to_dict() == old  # CNN pyramids are written exactly as before
    tok = FeatureLevel("blocks.3", 16, 4, "tokens", 1, 3)
    assert tok.to_list() == ["blocks.3", 16, 4, "tokens", 1, 3]
    assert FeatureLevel.from_list(tok.to_list()) == tok
    with pytest.raises(ValueError, match="layout"):
        FeatureLevel("x", 1, 1, "nhcw")
    with pytest.raises(ValueError, match="3 to 6"):
        FeatureLevel.from_list(["x", 1])


def test_dpt_decoder_shapes_and_images_required() -> None:
    pyr = discover_pyramid(tiny_vit(48), "encoder.layers.encoder_layer_3.ln_1", probe_size=(48, 48))
    dec = DPTDecoder(pyr, widths=(8, 8, 8, 8)).eval()
    x = torch.rand(2, 3, 48, 48)
    vit = tiny_vit(48)
    from fcam.upscalers import capture_features

    with torch.no_grad(), capture_features(vit, pyr.names) as feats:
        vit(x)
    head, skips = pyr.maps(feats, (48, 48))
    assert head.shape == (2, 16, 6, 6)
    with torch.no_grad():
        assert dec(head, skips, (48, 48), images=x).shape == (2, 2, 48, 48)
    with pytest.raises(ValueError, match="images"):
        dec(head, skips, (48, 48))


def test_token_model_without_blocks_says_how_to_pass_skips() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 8, stride=8)
            self.mix = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.mix(self.embed(x).flatten(2).transpose(1, 2))
            return self.head(t.mean(1))

    model = Flat()
    assert default_target_layer(model, probe_model(model, size=(32, 32)))[0] == "mix"
    with pytest.raises(ValueError, match="skips="):
        discover_pyramid(model, "mix", probe_size=(32, 32))
