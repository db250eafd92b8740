"""TS-CAM: registry position, a reference computation, timm models, and clear refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from fcam import cams


def tiny_vit(image_size: int = 32, patch: int = 8) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=image_size, patch_size=patch, num_layers=3, num_heads=2, hidden_dim=16,
        mlp_dim=16, num_classes=5,
    ).eval()  # fmt: skip


def test_registry_appends_tscam() -> None:
    names = cams.available()
    assert names[:9] == [
        "cam", "gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam", "scorecam",
        "sscam", "iscam",
    ]  # fmt: skip
    assert names[9] == "tscam" and isinstance(cams.create("TS-CAM", tiny_vit()), cams.TSCAM)


def reference(model: VisionTransformer, x: Tensor, target: int, last: int | None = None) -> Tensor:
    """TS-CAM from torchvision's own attention weights (need_weights=True), no fcam code."""
    attn: list[Tensor] = []
    hooks = []
    for block in model.encoder.layers:
        twin = copy.deepcopy(block.self_attention)  # calling the hooked module would recurse

        def hook(mod: nn.Module, inputs: tuple, _out: object, twin: nn.Module = twin) -> None:
            q = inputs[0]
            _, w = twin(q, q, q, need_weights=True, average_attn_weights=True)
            attn.append(w)

        hooks.append(block.self_attention.register_forward_hook(hook))
    with torch.no_grad():
        tokens = model.encoder(_embed(model, x))
    for h in hooks:
        h.remove()
    stack = torch.stack(attn if last is None else attn[-last:])
    agnostic = stack.sum(0)[:, 0, 1:]  # (B, P)
    semantic = tokens[:, 1:] @ model.heads.head.weight[target]  # (B, P)
    side = int(agnostic.shape[1] ** 0.5)
    return torch.relu(agnostic * semantic).reshape(x.shape[0], side, side)


def _embed(model: VisionTransformer, x: Tensor) -> Tensor:
    t = model._process_input(x)
    return torch.cat([model.class_token.expand(x.shape[0], -1, -1), t], dim=1)


@pytest.mark.parametrize("last", [None, 1])
def test_matches_reference_computation(last: int | None) -> None:
    model = tiny_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    extractor = cams.TSCAM(model, last_blocks=last)
    maps = extractor(x, [3, 3])
    assert extractor.target_name == "encoder" and extractor.prefix == 1
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, reference(model, x, 3, last), rtol=1e-4, atol=1e-5)
    assert all(not m._forward_hooks for m in model.modules())


def test_non_square_input_and_explain() -> None:
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=32, num_classes=3).eval()
    maps = cams.create("tscam", model).explain(torch.rand(1, 3, 32, 32))
    assert maps.shape == (1, 32, 32) and float(maps.max()) <= 1


def test_timm_deit_with_distillation_token() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, num_classes=4, img_size=64
    ).eval()  # fmt: skip
    extractor = cams.TSCAM(model)
    maps = extractor(torch.rand(1, 3, 64, 64), 2)
    assert maps.shape == (1, 4, 4) and extractor.prefix == 2
    assert extractor.fc in (model.head, model.head_dist) and len(extractor.attentions or []) == 12


def test_refuses_models_without_class_token() -> None:
    cnn = torchvision.models.resnet18(weights=None, num_classes=3)
    with pytest.raises(ValueError, match="class token"):
        cams.create("tscam", cnn)(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="class token"):
        cams.TSCAM(tiny_vit(), "conv_proj")(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="last_blocks"):
        cams.TSCAM(tiny_vit(), last_blocks=0)
    with pytest.raises(ValueError, match="fc_layer"):
        cams.TSCAM(tiny_vit(), fc_layer="conv_proj")
