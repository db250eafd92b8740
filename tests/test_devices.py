"""The library on a device: extractors, FCAM fit/explain/save/load and the F-CAM loss.

Each test runs on the CPU and, marked ``cuda``, on a GPU (the ``device`` fixture of
tests/conftest.py), so ``pytest -m cuda`` (``benchmarks/gpu_check.py``) exercises the device
paths and the CPU twins keep them from rotting where no GPU is. Metrics, seeds, the CRF, the
overlays and the WSOL methods have their device twins beside their other tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fcam import FCAM, cams
from fcam.losses import FCAMLoss, sample_seeds

SIZE = 32
#: Extractors whose maps draw no random numbers: the device must give the CPU's map.
DETERMINISTIC = ("cam", "gradcam", "gradcampp", "xgradcam", "layercam", "scorecam")


def _net(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    ).eval().to(device)  # fmt: skip


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", cams.available()[:9])  # tscam needs a class token
def test_extractor_maps_on_device(name: str, device: torch.device) -> None:
    x = _images()
    with cams.create(name, _net(device), "5") as extractor:
        maps = extractor.explain(x.to(device), targets=[0, 1, 2, 0])
    assert maps.device.type == device.type and maps.shape == (4, SIZE, SIZE)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    if name in DETERMINISTIC:
        with cams.create(name, _net(torch.device("cpu")), "5") as extractor:
            expected = extractor.explain(x, targets=[0, 1, 2, 0])
        torch.testing.assert_close(maps.cpu(), expected, rtol=1e-4, atol=1e-4)


def test_fcam_fit_explain_save_load_on_device(device: torch.device, tmp_path: Path) -> None:
    model = _net(device)
    data = TensorDataset(torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)),
                         torch.arange(8) % 3)
    fc = FCAM(model, "5", cam="gradcampp", widths=(8, 4), sigma_rgb=60.0)
    history = fc.fit(DataLoader(data, batch_size=4), epochs=2, device=device, progress=False)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert next(fc.decoder.parameters()).device.type == device.type
    x = _images(3).to(device)
    maps = fc.explain(x)
    assert maps.device.type == device.type and maps.shape == (3, SIZE, SIZE)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    fc.save(tmp_path / "fcam.pt")
    loaded = FCAM.load(tmp_path / "fcam.pt", model)
    torch.testing.assert_close(loaded.explain(x), maps)


def test_fcam_loss_on_device_matches_cpu(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(3)
    cam = torch.rand(2, SIZE, SIZE, generator=gen)
    rgb = torch.rand(2, 3, SIZE, SIZE, generator=gen) * 255
    logits = torch.randn(2, 2, SIZE, SIZE, generator=gen)
    seeds = sample_seeds(cam, generator=torch.Generator().manual_seed(0))
    values = []
    for where in (torch.device("cpu"), device):
        loss = FCAMLoss().to(where)
        probe = logits.to(where).requires_grad_(True)
        total, parts = loss(probe, seeds.to(where), rgb.to(where))
        (grad,) = torch.autograd.grad(total, probe)
        assert total.device.type == where.type and torch.isfinite(grad).all()
        values.append([float(total), *(float(v) for v in parts.values())])
    assert values[1] == pytest.approx(values[0], rel=1e-4, abs=1e-6)


def test_command_loaders_pin_memory_on_cuda_only(device: torch.device) -> None:
    from fcam.commands.common import device_loading

    benchmark = torch.backends.cudnn.benchmark
    try:
        options = device_loading(_net(device))
        assert options == ({"pin_memory": True} if device.type == "cuda" else {})
        assert torch.backends.cudnn.benchmark == (benchmark or device.type == "cuda")
    finally:
        torch.backends.cudnn.benchmark = benchmark
