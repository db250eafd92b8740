"""FCAMConfig drives constructor, save and load; checkpoint versions; custom callables."""

from __future__ import annotations

import dataclasses
import inspect
import os
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from fcam import FCAM
from fcam.explainer import FORMAT_VERSION, FCAMConfig, SeedOptions
from fcam.explainer.checkpoint import read_checkpoint

SIZE = 32


def tiny(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    ).eval()  # fmt: skip


def mean_cam(images: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """A module-level seed CAM: importable, so a checkpoint can name it."""
    return images.mean(1)[:, ::4, ::4].abs()


def second_output(output: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return output[1]


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = tiny()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
        return logits[:, :1], logits


def fitted(model: nn.Module, **kw: object) -> FCAM:
    kw.setdefault("widths", (8, 4))
    kw.setdefault("sigma_rgb", 60.0)
    target = kw.pop("target", "3")
    fc = FCAM(model, target, **kw)
    fc.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=1, progress=False)
    return fc


def test_every_config_field_is_a_constructor_option_and_round_trips(tmp_path: Path) -> None:
    options = dict(
        crf_weight=1e-7, sigma_rgb=40.0, sigma_xy=50.0, crf_scale=0.5, size_weight=0.2,
        seed_weight=0.5, init_t=2.0, max_t=5.0, mulcoef=1.05, sl_max=2, sl_min=3, sl_ksz=5,
        sl_min_p=0.2, fg_erode_k=7, fg_erode_iter=0, mean=(0.4, 0.4, 0.4), std=(0.2, 0.3, 0.4),
        seed=7, widths=(6, 4), input_size=(32, 32), crf_normalize=None, size_min_share=0.05,
        cam_exponent=0.5, cam_mix=0.1, class_head=False, bg_outside_roi=False, colour_bins=4,
        colour_mode="weight",
    )  # fmt: skip
    hidden = {"seeds", "cam_ref", "output_fn_ref", "target_layer", "cam", "upscaler", "skips"}
    assert set(FCAMConfig.option_names()) - hidden == set(options)
    model = tiny()
    fc = fitted(model, cam="gradcam", **options)
    assert fc.config.seeds == SeedOptions(2, 3, 5, 0.2, 7, 0, False, 4, "weight")
    fc.save(tmp_path / "fc.pt")
    loaded = FCAM.load(tmp_path / "fc.pt", model)
    assert loaded.config == fc.config
    assert loaded.config.to_dict() == FCAMConfig.from_dict(fc.config.to_dict()).to_dict()
    x = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(loaded.explain(x), fc.explain(x))
    # Overrides on load go through the same definition.
    assert FCAM.load(tmp_path / "fc.pt", model, sl_max=4).config.seeds.sl_max == 4


@pytest.mark.parametrize("upscaler", ["unet", "unet-lite"])
def test_decoder_choice_and_default_widths_round_trip(tmp_path: Path, upscaler: str) -> None:
    from fcam.upscalers import LiteUNetDecoder, UNetDecoder, default_widths

    model = tiny()
    kind = {"unet": UNetDecoder, "unet-lite": LiteUNetDecoder}[upscaler]
    fc = FCAM(model, "3", upscaler=upscaler, sigma_rgb=60.0)
    assert type(fc.decoder) is kind
    # widths=None is resolved to the decoder's own default and stored resolved
    assert fc.config.widths == default_widths(upscaler)
    fc.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=1, progress=False)
    fc.save(tmp_path / "fc.pt")
    loaded = FCAM.load(tmp_path / "fc.pt", model)
    assert type(loaded.decoder) is kind and loaded.config == fc.config
    # a config's upscaler is kept when the constructor is not given one
    again = FCAM(model, "3", config=fc.config)
    assert type(again.decoder) is kind


def test_checkpoint_of_another_decoder_is_refused_clearly(tmp_path: Path) -> None:
    model = tiny()
    fitted(model, upscaler="unet").save(tmp_path / "fc.pt")
    with pytest.raises(ValueError, match="decoder weights do not fit"):
        FCAM.load(tmp_path / "fc.pt", model, upscaler="unet-lite")


def test_unknown_and_bad_options_are_refused() -> None:
    with pytest.raises(TypeError, match=r"unknown F-CAM option\(s\) \['crf_wieght'\]"):
        FCAM(tiny(), "3", crf_wieght=1e-8)
    with pytest.raises(ValueError, match="sl_min_p"):
        FCAM(tiny(), "3", sl_min_p=2.0)
    with pytest.raises(ValueError, match="widths"):
        FCAM(tiny(), "3", widths=())
    with pytest.raises(ValueError, match="crf_scale"):
        FCAMConfig(crf_scale=1.5)
    with pytest.raises(ValueError, match="unknown keys"):
        FCAMConfig.from_dict({"future_option": 1})
    for bad in (-1, 65, 2.0, True):
        with pytest.raises(ValueError, match="colour_bins"):
            FCAM(tiny(), "3", colour_bins=bad)
    with pytest.raises(ValueError, match="colour_mode"):
        FCAM(tiny(), "3", colour_mode="soft")
    # The constructor's signature carries no option list of its own that could drift.
    params = inspect.signature(FCAM.__init__).parameters
    structural = {"skips", "upscaler", "target_layer", "cam"}
    assert not set(params) & ({f.name for f in dataclasses.fields(FCAMConfig)} - structural)


def test_custom_cam_and_output_fn_are_saved_as_references(tmp_path: Path) -> None:
    model = TwoHeads()
    fc = fitted(model, target="body.3", cam=mean_cam, output_fn=second_output)
    assert fc.num_classes == 3
    assert fc.config.cam is None and fc.config.cam_ref == f"{__name__}:mean_cam"
    fc.save(tmp_path / "fc.pt")
    loaded = FCAM.load(tmp_path / "fc.pt", model)
    assert loaded.cam_fn is mean_cam and loaded.output_fn is second_output
    loaded.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=1, progress=False)


def test_unimportable_cam_needs_cam_on_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny()
    fc = fitted(model, cam=lambda x, t: x.mean(1)[:, ::4, ::4].abs())
    fc.save(tmp_path / "fc.pt")
    assert "pass cam= to FCAM.load" in caplog.text
    loaded = FCAM.load(tmp_path / "fc.pt", model)
    # The published map needs no seed CAM; the default CAM-weighted one names both ways out.
    assert loaded.explain(torch.randn(1, 3, SIZE, SIZE), cam_exponent=0, cam_mix=0).shape == (1, SIZE, SIZE)
    with pytest.raises(ValueError, match="pass cam= to FCAM.load, or explain with cam_mix=0, cam_exponent=0"):
        loaded.explain(torch.randn(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="seed cam"):
        loaded.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=1, progress=False)
    FCAM.load(tmp_path / "fc.pt", model, cam=mean_cam).fit(
        [torch.randn(2, 3, SIZE, SIZE)], epochs=1, progress=False
    )


def test_version_1_checkpoints_load_and_newer_ones_are_refused(tmp_path: Path) -> None:
    model = tiny()
    fc = fitted(model, cam="cam")
    fc.save(tmp_path / "v2.pt")
    payload = torch.load(tmp_path / "v2.pt", weights_only=True)
    assert payload["version"] == FORMAT_VERSION == 2
    v1 = {k: v for k, v in payload.items() if k != "digest"}  # version 1 had no digest
    v1["version"] = 1
    v1["config"] = {k: v for k, v in payload["config"].items() if k not in ("cam_ref", "output_fn_ref")}
    torch.save(v1, tmp_path / "v1.pt")
    x = torch.randn(1, 3, SIZE, SIZE)
    assert torch.equal(FCAM.load(tmp_path / "v1.pt", model).explain(x), fc.explain(x))
    torch.save(dict(payload, version=3), tmp_path / "v3.pt")
    with pytest.raises(ValueError, match=r"version 3; this fcam reads versions \[1, 2\]"):
        FCAM.load(tmp_path / "v3.pt", model)
    del payload["decoder"]
    torch.save(payload, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="damaged.*'decoder'"):
        read_checkpoint(tmp_path / "cut.pt")


def test_checkpoints_without_colour_bins_resume_with_seeds_from_the_cam_alone() -> None:
    saved = FCAMConfig.from_options(colour_bins=8).to_dict()
    assert saved["seeds"]["colour_bins"] == 8
    assert FCAMConfig.from_dict(saved).seeds.colour_bins == 8
    del saved["seeds"]["colour_bins"]  # written before the option existed
    assert FCAMConfig.from_dict(saved).seeds.colour_bins == 0


def test_saved_files_are_readable_by_others(tmp_path: Path) -> None:
    fc = fitted(tiny(), cam="cam")
    old = os.umask(0o022)
    try:
        fc.save(tmp_path / "fc.pt")
        fc.fit([torch.randn(2, 3, SIZE, SIZE)], epochs=2, checkpoint_dir=tmp_path / "ck", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fc.pt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ck" / "fcam-last.pt").stat().st_mode) == 0o644


def test_one_probe_forward_at_construction() -> None:
    model = tiny()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda m, a: calls.append(1))
    FCAM(model, None, cam="gradcampp")
    assert len(calls) == 1
