"""FCAM: fit / explain / save / load on a tiny CNN, bad inputs, resume, DDP."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fcam import FCAM
from fcam.cams import GradCAM, normalize
from fcam.explainer import CHECKPOINT_NAME, NotFittedError, wrap_cam

SIZE = 32
WIDTHS = (8, 4)


class Tiny(nn.Module):
    """Stride-4 CNN with BN, Dropout and in-place ReLUs; pyramid: features.7 (head), features.5."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x).mean((2, 3))))


def tiny(seed: int = 0, classes: int = 3) -> Tiny:
    torch.manual_seed(seed)
    return Tiny(classes).eval()


def data(n: int = 8, size: int = SIZE, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 3)


def make(model: nn.Module | None = None, **kw) -> FCAM:
    kw.setdefault("widths", WIDTHS)
    # A wide colour bandwidth keeps the CRF's bilateral grid small: these tests check plumbing.
    kw.setdefault("sigma_rgb", 60.0)
    return FCAM(model if model is not None else tiny(), "features.7", cam=kw.pop("cam", "gradcam"), **kw)


def test_pyramid_and_fit_explain(tmp_path: Path) -> None:
    fc = make()
    assert [s.name for s in fc.pyramid.skips] == ["features.5"]
    hist = fc.fit(DataLoader(data(), batch_size=4), epochs=2, progress=False)
    assert [h["epoch"] for h in hist] == [1.0, 2.0]
    assert {"loss", "seed", "crf", "size", "t", "images"} <= set(hist[0])
    assert hist[1]["t"] == pytest.approx(1.01**2)
    x = torch.randn(3, 3, 37, 45)  # odd size
    with torch.no_grad():
        maps = fc.explain(x, targets=[0, 1, 2])
    assert maps.shape == (3, 37, 45) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 and not maps.requires_grad
    maps2, cam = fc.explain(x, targets=[0, 1, 2], return_cam=True)
    assert torch.equal(maps, maps2)
    assert cam.shape == (3, 37, 45) and cam.min() >= 0 and cam.max() <= 1
    assert not fc.decoder.training


def test_classifier_unchanged_and_state_restored() -> None:
    model = tiny()
    model.train()
    model.features[1].eval()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    fc = make(model)
    fc.fit(DataLoader(data(), batch_size=4), epochs=1, progress=False)
    fc.explain(torch.randn(2, 3, SIZE, SIZE), return_cam=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # params and BN stats
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_one_classifier_forward_per_step_and_none_at_explain_backward() -> None:
    model = tiny()
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    fc = make(model)
    calls.clear()
    fc.fit(DataLoader(data(8), batch_size=4), epochs=1, progress=False)
    assert len(calls) == 2  # 2 steps, the extractor's forward is reused for the features
    calls.clear()
    with torch.no_grad():  # the default map weights by the seed CAM: its forward gives the features
        fc.explain(torch.randn(2, 3, SIZE, SIZE))
    assert len(calls) == 1
    fc.cam_fn = lambda *a: (_ for _ in ()).throw(AssertionError("extractor used at inference"))
    calls.clear()
    with torch.no_grad():
        fc.explain(torch.randn(2, 3, SIZE, SIZE), cam_exponent=0, cam_mix=0)
    assert len(calls) == 1


def test_save_load_round_trip_bit_identical(tmp_path: Path) -> None:
    model = tiny()
    fc = make(model, crf_weight=1e-7, sl_max=2)
    fc.fit(DataLoader(data(), batch_size=4), epochs=1, progress=False)
    x = torch.randn(2, 3, SIZE, SIZE)
    ref = fc.explain(x)
    fc.save(tmp_path / "fc.pt")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    loaded = FCAM.load(tmp_path / "fc.pt", model)
    assert torch.equal(loaded.explain(x), ref)
    assert loaded.config == fc.config and loaded.history == fc.history
    # A fresh copy of the same weights is accepted too.
    twin = tiny()
    twin.load_state_dict(model.state_dict())
    assert torch.equal(FCAM.load(tmp_path / "fc.pt", twin).explain(x), ref)


def test_load_refuses_other_classifier(tmp_path: Path) -> None:
    fc = make()
    fc.fit(DataLoader(data(), batch_size=4), epochs=1, progress=False)
    fc.save(tmp_path / "fc.pt")
    with pytest.raises(ValueError, match="another classifier.*params"):
        FCAM.load(tmp_path / "fc.pt", tiny(classes=5))
    with pytest.raises(ValueError, match="another classifier.*architecture"):
        FCAM.load(tmp_path / "fc.pt", nn.Sequential(*tiny().children()))


def test_a_script_class_matches_the_same_class_imported_from_its_module() -> None:
    from fcam.explainer.checkpoint import classifier_fingerprint, fingerprint_mismatch

    model = tiny()
    saved = classifier_fingerprint(model)
    here = saved["class"]                      # e.g. "test_explainer.Tiny"
    qualname = type(model).__qualname__
    # Fitted in a script (class __main__.Tiny), loaded where the script is imported, and back.
    assert fingerprint_mismatch({**saved, "class": f"__main__.{qualname}"}, model) is None
    assert fingerprint_mismatch(saved, model) is None
    # Another class, or the same name in two real modules, stays "another classifier".
    assert "architecture" in str(fingerprint_mismatch({**saved, "class": "__main__.Other"}, model))
    assert "architecture" in str(fingerprint_mismatch({**saved, "class": f"elsewhere.{qualname}"}, model))
    # The parameter names and shapes are still compared.
    wrong = {**saved, "class": f"__main__.{qualname}", "params": saved["params"][:-1]}
    assert "params" in str(fingerprint_mismatch(wrong, model))
    assert here.endswith("." + qualname)


def test_corrupt_foreign_and_missing_files(tmp_path: Path) -> None:
    model = tiny()
    (tmp_path / "junk.pt").write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="not a readable fcam checkpoint"):
        FCAM.load(tmp_path / "junk.pt", model)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an fcam.FCAM checkpoint"):
        FCAM.load(tmp_path / "foreign.pt", model)
    with pytest.raises(ValueError, match="not a file"):
        FCAM.load(tmp_path / "missing.pt", model)
    # Anything but plain tensors/containers is refused by weights_only loading.
    torch.save({"format": "fcam.FCAM", "evil": Tiny}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="not a readable"):
        FCAM.load(tmp_path / "pickled.pt", model)


def test_checkpoints_each_epoch_and_resume_matches(tmp_path: Path) -> None:
    loader = DataLoader(data(12), batch_size=4, shuffle=True)
    torch.manual_seed(123)
    full = make()
    full.fit(loader, epochs=3, progress=False)

    torch.manual_seed(123)
    part = make()
    part.fit(loader, epochs=1, checkpoint_dir=tmp_path, progress=False)
    ckpt = tmp_path / CHECKPOINT_NAME
    assert ckpt.is_file() and sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]
    torch.manual_seed(999)  # the resumed run must not depend on the caller's RNG state
    resumed = make()
    hist = resumed.fit(loader, epochs=3, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [h["epoch"] for h in hist] == [1.0, 2.0, 3.0]
    a, b = full.decoder.state_dict(), resumed.decoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in hist] == [h["loss"] for h in full.history]
    assert resumed.loss.size.t == full.loss.size.t
    # The per-epoch checkpoint is a loadable F-CAM file.
    x = torch.randn(1, 3, SIZE, SIZE)
    assert torch.equal(FCAM.load(ckpt, resumed.model).explain(x), resumed.explain(x))


def test_checkpoint_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir .* not writable"):
        make().fit(DataLoader(data(), batch_size=4), epochs=1, checkpoint_dir=blocker / "sub")
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        make().fit(DataLoader(data(), batch_size=4), epochs=1, resume=True)


def test_nan_loss_names_term_and_writes_no_checkpoint(tmp_path: Path) -> None:
    fc = make(size_weight=1.7e308)  # finite weight, but weight * barrier overflows to -inf
    with pytest.raises(FloatingPointError, match="'size'"):
        fc.fit(DataLoader(data(), batch_size=4), epochs=1, checkpoint_dir=tmp_path, progress=False)
    assert not (tmp_path / CHECKPOINT_NAME).exists()
    with pytest.raises(NotFittedError):
        fc.explain(torch.randn(1, 3, SIZE, SIZE))


def test_loader_formats_and_labels_drive_the_cam() -> None:
    seen = []

    def cam(images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        seen.append(None if targets is None else targets.tolist())
        return images.mean(1)[:, ::4, ::4]

    ds = data(4)
    x, y = ds.tensors
    raw = (torch.rand(4, 3, SIZE, SIZE) * 255).round()
    loaders = {
        "tensor": [x],
        "tuple": [(x, y, "extra")],
        "dict": [{"image": x, "label": y, "raw": raw}],
        "dict-no-label": [{"images": x}],
    }
    for loader in loaders.values():
        make(cam=cam).fit(loader, epochs=1, progress=False)
    assert seen == [None, y.tolist(), y.tolist(), None]


@pytest.mark.parametrize(
    ("loader", "err", "match"),
    [
        ([], ValueError, "loader is empty"),
        (iter([]), ValueError, "loader is empty"),
        (["not an image"], TypeError, "loader must yield"),
        ([torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8)], TypeError, "floating-point"),
        ([torch.zeros(3, SIZE, SIZE)], ValueError, "4-D"),
        ([torch.zeros(2, 1, SIZE, SIZE)], ValueError, "channels"),
        ([torch.full((2, 3, SIZE, SIZE), float("nan"))], ValueError, "NaN"),
        ([(torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0]))], ValueError, "1 entries for a batch of 2"),
        ([(torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0, 3]))], ValueError, r"\[3\] out of range"),
        ([{"img": torch.zeros(2, 3, SIZE, SIZE)}], TypeError, "'image' key"),
        ([{"image": torch.zeros(2, 3, SIZE, SIZE), "raw": torch.zeros(2, 3, 8, 8)}], ValueError, "raw"),
    ],
)
def test_bad_loaders(loader: object, err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        make().fit(loader, epochs=1, progress=False)


def test_bad_explain_inputs_and_options() -> None:
    fc = make()
    with pytest.raises(NotFittedError, match="fit"):
        fc.explain(torch.zeros(1, 3, SIZE, SIZE))
    fc.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=1, progress=False)
    with pytest.raises(ValueError, match="4-D"):
        fc.explain(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(ValueError, match="channels"):
        fc.explain(torch.zeros(1, 4, SIZE, SIZE))
    with pytest.raises(TypeError, match="`images` must be a torch.Tensor"):
        fc.explain([[0.0]])
    with pytest.raises(ValueError, match=r"targets \[7\] out of range"):
        fc.explain(torch.zeros(2, 3, SIZE, SIZE), targets=[0, 7], return_cam=True)
    with pytest.raises(ValueError, match="targets has 1 entries"):
        fc.explain(torch.zeros(2, 3, SIZE, SIZE), targets=[0], return_cam=True)
    with pytest.raises(ValueError, match="cam must be one of"):
        make(cam="nocam")
    with pytest.raises(TypeError, match="cam must be"):
        make(cam=42)
    with pytest.raises(ValueError, match="crf_weight"):
        make(crf_weight=float("nan"))
    with pytest.raises(ValueError, match="mean and std"):
        make(mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="epochs"):
        fc.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=0)
    with pytest.raises(ValueError, match="amp=True needs a CUDA"):
        fc.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=1, amp=True, device="cpu")


def test_extractor_instance_and_third_party_cams() -> None:
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from torchcam.methods import GradCAM as TcGradCAM

    model = tiny()
    x = torch.randn(2, 3, SIZE, SIZE)
    y = torch.tensor([0, 2])
    ours = GradCAM(model, "features.7")
    ref = ours(x, y)
    pgc = wrap_cam(PgcGradCAM(model, target_layers=[model.features[7]]), model)(x, y)
    assert pgc.shape == (2, SIZE, SIZE)
    with TcGradCAM(model, "features.7") as tc:
        tcam = wrap_cam(tc, model)(x, y)
        assert torch.allclose(normalize(tcam), normalize(ref), atol=1e-5)
    for cam in (ours, pgc_obj := PgcGradCAM(model, target_layers=[model.features[7]])):
        fc = make(model, cam=cam)
        fc.fit([(x, y)], epochs=1, progress=False)
        assert fc.explain(x).shape == (2, SIZE, SIZE)
    del pgc_obj


# ----------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ds = data(8)
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(ds, batch_size=2, sampler=sampler)
        fc = make()
        fc.fit(loader, epochs=2, checkpoint_dir=out, progress=False, on_epoch_start=sampler.set_epoch)
        torch.save(fc.decoder.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_gloo(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ddp_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    s1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    weights = [k for k in s0 if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(s0[k], s1[k]) for k in weights)  # gradients were all-reduced
    # Rank 0 wrote the checkpoint; it is a loadable F-CAM for the same classifier.
    fc = FCAM.load(tmp_path / CHECKPOINT_NAME, tiny())
    assert len(fc.history) == 2
    assert all(torch.equal(fc.decoder.state_dict()[k], s0[k]) for k in s0)


# ----------------------------------------------------------------------------- end to end
E2E_SIZE = 128
# F-CAM must beat the interpolated seed CAM by this many PxAP points on held-out images.
# Measured with this exact setup (classifier 75 % accurate, 2 F-CAM epochs of 160 images):
# interpolated CAM 27.3, F-CAM 43.1 (+15.8); the margin is half of that, for platform noise.
E2E_MARGIN = 8.0


def _e2e_net() -> nn.Sequential:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
        nn.MaxPool2d(2), *block(64, 64), nn.MaxPool2d(2), *block(64, 128), nn.MaxPool2d(2),
        *block(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 5),
    )  # fmt: skip


@pytest.fixture(scope="session")
def e2e_classifier(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """A stride-32 CNN trained from scratch on SyntheticWSOL (4×4 CAMs at 128 px), cached."""
    from fcam.data import SyntheticWSOL

    path = tmp_path_factory.getbasetemp() / "e2e_classifier.pt"
    torch.manual_seed(0)
    model = _e2e_net()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train = SyntheticWSOL(400, size=E2E_SIZE, seed=0, split="train")
    x = torch.stack([train[i]["image"] for i in range(len(train))])
    y = torch.tensor([train[i]["label"] for i in range(len(train))])
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(8):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(model.state_dict(), path)
    return model.eval()


@pytest.mark.slow
def test_end_to_end_fcam_beats_interpolated_cam(e2e_classifier: nn.Module) -> None:
    """Default losses and seeds; F-CAM PxAP must exceed the interpolated CAM's by E2E_MARGIN."""
    from fcam.data import SyntheticWSOL
    from fcam.metrics import pxap

    model = e2e_classifier
    test = SyntheticWSOL(80, size=E2E_SIZE, seed=0, split="test")
    tx = torch.stack([test[i]["image"] for i in range(len(test))])
    ty = torch.tensor([test[i]["label"] for i in range(len(test))])
    masks = torch.stack([test[i]["mask"] for i in range(len(test))])
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    assert acc > 0.5  # the classifier learned the shapes (chance: 0.2)

    train = SyntheticWSOL(160, size=E2E_SIZE, seed=1, split="train")
    torch.manual_seed(0)
    loader = DataLoader(train, batch_size=16, shuffle=True)
    fc = FCAM(model, "22", cam="gradcampp", widths=(32, 16, 16, 8, 8))
    fc.fit(loader, epochs=2, progress=False)
    maps, cams = fc.explain(tx, targets=ty, return_cam=True)
    cam_ap, fcam_ap = pxap(cams, masks), pxap(maps, masks)
    assert fcam_ap > cam_ap + E2E_MARGIN, (cam_ap, fcam_ap)
