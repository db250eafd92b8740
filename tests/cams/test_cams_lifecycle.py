"""Hook lifecycle, state restoration, grad modes, in-place ops and memory."""

from __future__ import annotations

import copy
import gc
import tracemalloc

import pytest
import torch
from cams_toy import ToyNet
from torch import Tensor, nn

from fcam import cams

OPTIONS = {"smoothgradcampp": {"seed": 0, "num_samples": 2}, "sscam": {"seed": 0, "num_samples": 2}}


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )  # fmt: skip


def make(name: str, model: nn.Module, layer: str = "features") -> cams._CAM:
    return cams.create(name, model, layer, **OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token: test_tscam.py
def test_no_hooks_remain_and_state_is_restored(name: str, toy: ToyNet, toy_input: Tensor) -> None:
    toy.train()
    toy.pool.eval()  # a mixed-mode model must come back mixed
    toy.features.weight.requires_grad_(False)
    flags = [p.requires_grad for p in toy.parameters()]
    with make(name, toy) as extractor:
        extractor(toy_input, 0)
        assert hook_count(toy) == 0
    assert hook_count(toy) == 0
    assert toy.training and toy.fc.training and not toy.pool.training
    assert [p.requires_grad for p in toy.parameters()] == flags
    assert all(p.grad is None for p in toy.parameters())  # parameter .grad is never touched


class Exploding(nn.Module):
    """Raises inside forward, after the target layer ran."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        self.features(x)
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "smoothgradcampp"])
def test_exception_inside_forward_leaves_model_clean(name: str) -> None:
    model = Exploding().train()
    with pytest.raises(ValueError, match="boom"):
        make(name, model)(torch.rand(1, 3, 8, 8))
    assert hook_count(model) == 0
    assert model.training
    assert all(p.requires_grad for p in model.parameters())


def test_batchnorm_statistics_untouched_in_train_mode() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).train()  # fmt: skip
    before = copy.deepcopy(model.state_dict())
    cams.GradCAM(model, "1")(torch.rand(2, 3, 8, 8))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert model.training


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token: test_tscam.py
def test_works_under_callers_no_grad(name: str, toy: ToyNet, toy_input: Tensor) -> None:
    expected = make(name, toy)(toy_input, 0)
    with torch.no_grad():
        got = make(name, toy)(toy_input, 0)
    torch.testing.assert_close(got, expected)
    assert torch.is_grad_enabled()


def test_inference_mode_raises_clearly(toy: ToyNet, toy_input: Tensor) -> None:
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cams.GradCAM(toy, "features")(toy_input)
    assert hook_count(toy) == 0
    # tensors created under inference mode are fine afterwards
    with torch.inference_mode():
        frozen = toy_input.clone()
    assert cams.GradCAM(toy, "features")(frozen, 0).shape == (1, 3, 3)


def test_input_requiring_grad_is_left_alone(toy: ToyNet, toy_input: Tensor) -> None:
    x = toy_input.clone().requires_grad_(True)
    cams.GradCAM(toy, "features")(x, 0)
    assert x.grad is None


class SignedNet(nn.Module):
    """conv (target) -> ReLU -> conv -> GAP -> fc, with activations of both signs."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.mix = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.mix(self.relu(self.features(x))).mean(dim=(2, 3)))


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token: test_tscam.py
def test_inplace_relu_after_target_layer(name: str) -> None:
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    plain, inplace = SignedNet(inplace=False), SignedNet(inplace=True)
    # the target layer's output really has negative values the ReLU would overwrite
    assert float(plain.features(x).detach().min()) < 0
    expected = make(name, plain)(x, [0, 3])
    got = make(name, inplace)(x, [0, 3])
    torch.testing.assert_close(got, expected)
    assert hook_count(inplace) == 0


def test_activations_are_pre_relu_values() -> None:
    # LayerCAM = sum_k relu(g_k) A_k: with a stored post-ReLU A the negative parts would vanish.
    model = SignedNet(inplace=True)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    activations = model.features(x).detach()
    grads = torch.autograd.functional.jacobian(
        lambda a: model.fc(model.mix(torch.relu(a)).mean(dim=(2, 3)))[0, 1], activations
    )
    expected = (grads.clamp_min(0) * activations).sum(1).clamp_min(0)
    torch.testing.assert_close(cams.LayerCAM(model, "features")(x, 1), expected)


def test_remove_hooks_is_idempotent(toy: ToyNet) -> None:
    extractor = cams.GradCAM(toy, "features")
    extractor.remove_hooks()
    extractor.remove_hooks()
    assert hook_count(toy) == 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradcampp", "scorecam"])
def test_no_memory_growth_over_300_calls(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(32, 8, 3, padding=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))  # fmt: skip
    x = torch.rand(2, 3, 32, 32)
    # Score-CAM hooks the 8-channel layer to keep its 16 masked forwards per call cheap
    layer, options = ("2", {"batch_size": 64}) if name == "scorecam" else ("0", {})
    extractor = cams.create(name, model, layer, **options)
    for _ in range(20):  # warm up allocator caches
        extractor(x)
    gc.collect()
    tracemalloc.start()
    rss = _rss_bytes()
    snapshot = tracemalloc.take_snapshot()
    for _ in range(300):
        extractor(x)
    gc.collect()
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(snapshot, "filename"))
    tracemalloc.stop()
    # one leaked activation per call would be 300 * 2*32*32*32*4 B = 75 MB
    assert grown < 1_000_000
    assert _rss_bytes() - rss < 30_000_000
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token: test_tscam.py
def test_device_inplace_relu_and_no_memory_growth(name: str, device: torch.device) -> None:
    # The CPU twin checks the maps and the hooks; device memory is counted on CUDA only (the
    # CPU's growth is test_no_memory_growth's job).
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    plain, inplace = SignedNet(inplace=False).to(device), SignedNet(inplace=True).to(device)
    expected = make(name, plain)(x, [0, 3])
    extractor = make(name, inplace)
    got = extractor(x, [0, 3])
    assert got.device == x.device
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.cpu(), make(name, SignedNet(inplace=True))(x.cpu(), [0, 3]), rtol=1e-4, atol=1e-5)
    if device.type == "cuda":
        for _ in range(5):
            extractor(x)
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated(device)
        for _ in range(50):
            extractor(x)
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated(device) - baseline < 1_000_000
    assert hook_count(inplace) == 0
