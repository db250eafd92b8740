"""ClassConditionalHead: shared 2-logit head plus one zero-initialised residual per class."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcam.upscalers import ClassConditionalHead, FeatureLevel, Pyramid, build_upscaler
from fcam.upscalers.class_head import apply_head


def _head(dtype: torch.dtype = torch.float32, classes: int = 4) -> ClassConditionalHead:
    torch.manual_seed(0)
    head = ClassConditionalHead(nn.Conv2d(3, 2, 3, padding=1).to(dtype), classes)
    with torch.no_grad():
        head.weight.normal_()
        head.bias.normal_()
    return head


def test_untrained_head_is_exactly_the_shared_head() -> None:
    shared = nn.Conv2d(5, 2, 3, padding=1)
    head = ClassConditionalHead(shared, 7)
    x = torch.rand(3, 5, 6, 4)
    # One grouped convolution with the summed weights: equal to the shared head up to rounding.
    torch.testing.assert_close(head(x, torch.tensor([0, 6, 3])), shared(x), rtol=1e-6, atol=1e-6)
    assert torch.equal(head(x), shared(x))
    assert head.weight.shape == (7, 2, 5, 3, 3) and head.bias.shape == (7, 2)
    assert not head.weight.any() and not head.bias.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_residual_is_each_images_own_class_convolution(dtype: torch.dtype) -> None:
    head = _head(dtype)
    x = torch.rand(4, 3, 5, 7, dtype=dtype)
    classes = torch.tensor([2, 0, 2, 3])
    got = head(x, classes)
    for b, c in enumerate(classes.tolist()):  # brute force: one image at a time
        shared = F.conv2d(x[b:b + 1], head.shared.weight, head.shared.bias, padding=1)
        own = F.conv2d(x[b:b + 1], head.weight[c], head.bias[c], padding=1)
        torch.testing.assert_close(got[b:b + 1], shared + own)
    torch.testing.assert_close(head(x), head.shared(x))


def test_gradcheck_float64() -> None:
    head = _head(torch.float64, classes=3)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    classes = torch.tensor([1, 1])  # a repeated class: its residual's gradient sums over images
    params = {k: v.detach().clone().requires_grad_() for k, v in head.named_parameters()}
    names = list(params)

    def fn(x: torch.Tensor, *values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(head, dict(zip(names, values, strict=True)), (x, classes))

    assert torch.autograd.gradcheck(fn, (x, *params.values()))


def test_only_the_explained_classes_residuals_get_gradients() -> None:
    head = _head(classes=5)
    x = torch.rand(3, 3, 4, 4)
    head(x, torch.tensor([1, 1, 3])).sum().backward()
    assert head.weight.grad is not None and head.bias.grad is not None
    used = torch.zeros(5, dtype=torch.bool)
    used[[1, 3]] = True
    assert head.weight.grad[used].abs().sum() > 0 and head.bias.grad[used].abs().sum() > 0
    assert not head.weight.grad[~used].any() and not head.bias.grad[~used].any()


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        (torch.tensor([0, 1]), r"\(3,\) integer tensor"),
        (torch.tensor([0.0, 1.0, 2.0]), "integer tensor"),
        (torch.tensor([True, False, True]), "integer tensor"),
        ([0, 1, 2], "integer tensor"),
        (torch.tensor([0, 4, 1]), "out of range for 4 classes"),
        (torch.tensor([0, -1, 1]), "out of range"),
    ],
)
def test_bad_classes_are_refused_by_name(classes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _head()(torch.rand(3, 3, 4, 4), classes)


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ClassConditionalHead(nn.Conv2d(3, 2, 1), 0)
    with pytest.raises(TypeError, match="shared"):
        ClassConditionalHead(nn.Linear(3, 2), 2)  # type: ignore[arg-type]


def test_apply_head_refuses_classes_for_a_plain_head() -> None:
    conv = nn.Conv2d(3, 2, 1)
    x = torch.rand(1, 3, 2, 2)
    assert torch.equal(apply_head(conv, x, None), conv(x))
    with pytest.raises(ValueError, match="no class-conditional head"):
        apply_head(conv, x, torch.tensor([0]))


@pytest.mark.parametrize("name", ["unet", "unet-lite", "dpt"])
def test_every_decoder_takes_a_class_conditional_head(name: str) -> None:
    if name == "dpt":
        pyr = Pyramid(FeatureLevel("c", 8, 3, grid_level=3), (FeatureLevel("b", 8, 2, grid_level=3),))
        head_map, skips = torch.rand(2, 8, 2, 2), [torch.rand(2, 8, 2, 2)]
        extra = {"images": torch.rand(2, 3, 16, 16)}
    else:
        pyr = Pyramid(FeatureLevel("c", 8, 2), (FeatureLevel("b", 4, 1),))
        head_map, skips = torch.rand(2, 8, 4, 4), [torch.rand(2, 4, 8, 8)]
        extra = {}
    torch.manual_seed(0)
    plain = build_upscaler(name, pyr, (8, 4, 4))
    torch.manual_seed(0)
    dec = build_upscaler(name, pyr, (8, 4, 4), num_classes=3).eval()
    plain.eval()
    assert isinstance(dec.seg_head, ClassConditionalHead)
    classes = torch.tensor([0, 2])
    out = dec(head_map, skips, (16, 16), classes=classes, **extra)
    # Same initialisation as the plain decoder; the residuals start at zero.
    torch.testing.assert_close(out, plain(head_map, skips, (16, 16), **extra))
    with torch.no_grad():
        dec.seg_head.bias[2] += torch.tensor([0.0, 1.0])
    moved = dec(head_map, skips, (16, 16), classes=classes, **extra)
    torch.testing.assert_close(moved[0], out[0])                 # class 0 untouched
    torch.testing.assert_close(moved[1, 1] - out[1, 1], torch.ones(16, 16))
    with pytest.raises(ValueError, match="no class-conditional head"):
        plain(head_map, skips, (16, 16), classes=classes, **extra)
    with pytest.raises(ValueError, match="num_classes"):
        build_upscaler(name, pyr, (8, 4, 4), num_classes=-1)
