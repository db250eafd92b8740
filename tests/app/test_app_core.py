"""The core of ``fcam app`` without a browser: maps equal the library's, boxes equal
fcam.metrics', and every bad input gives its message."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.vision_transformer import VisionTransformer

from fcam import FCAM, cams
from fcam.app import applicable_methods, explain_image, load_checkpoint, load_image
from fcam.app.core import FCAM_NAME, MAX_PIXELS, Explanation, Prediction
from fcam.app.examples import example_images
from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.data import SyntheticWSOL
from fcam.metrics import boxes_at_thresholds
from fcam.models import ClassifierSpec, build_model

SIZE = 64


@pytest.fixture(scope="module")
def tiny() -> dict[str, object]:
    """A random 5-class resnet18 at 64 px and an F-CAM fitted on it for one short epoch."""
    torch.manual_seed(0)
    spec = ClassifierSpec("resnet18", num_classes=5, target_layer="layer4", input_size=SIZE)
    model = build_model(spec).eval().requires_grad_(False)
    fc = FCAM(model, target_layer="layer4", cam="gradcam")
    fc.fit(DataLoader(SyntheticWSOL(4, size=SIZE, seed=1), batch_size=4), epochs=1, progress=False)
    return {"model": model, "spec": spec, "fcam": fc}


def _photo(width: int = 90, height: int = 70, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _input(image: Image.Image) -> torch.Tensor:
    """The classifier input computed independently: bilinear resize, /255, ImageNet stats."""
    resized = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
    x = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std)[None]


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width x height`` pixels (its pixel data is a tiny,
    wrong-sized stream: decoding it would fail as truncated, so only a header check passes)."""
    data = bytearray(_png_bytes(Image.new("RGB", (4, 4))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


# ------------------------------------------------------------------------ maps and classes
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "cam", "layercam"])
def test_cam_maps_equal_the_extractors(tiny: dict, method: str) -> None:
    model, spec = tiny["model"], tiny["spec"]
    image = _photo()
    x = _input(image)
    result = explain_image(image, 3, [method], model, spec)
    with cams.create(method, model, "layer4") as extractor:
        expected = extractor.explain(x, [3])[0]
    assert result.target == 3
    assert result.maps[method].shape == (SIZE, SIZE)
    torch.testing.assert_close(result.maps[method], expected, atol=1e-5, rtol=0)
    assert result.seconds[method] > 0


def test_fcam_map_equals_fcam_explain_and_files_equal_images(tiny: dict, tmp_path: Path) -> None:
    model, spec, fc = tiny["model"], tiny["spec"], tiny["fcam"]
    image = _photo(seed=1)
    path = tmp_path / "photo.png"
    image.save(path)
    x = _input(image)
    for source in (image, path, path.read_bytes()):
        result = explain_image(source, 1, ["gradcam"], model, spec, fcam=fc)
        torch.testing.assert_close(result.maps[FCAM_NAME], fc.explain(x, [1])[0], atol=1e-5, rtol=0)
        assert list(result.maps) == ["gradcam", FCAM_NAME]
        assert set(result.seconds) == {"gradcam", FCAM_NAME}


def test_top_predictions_and_default_class(tiny: dict) -> None:
    model, spec = tiny["model"], tiny["spec"]
    image = _photo(seed=2)
    with torch.no_grad():
        probs = model(_input(image)).softmax(1)[0]
    result = explain_image(image, None, ["gradcam"], model, spec, class_names=list("abcde"))
    order = probs.argsort(descending=True).tolist()
    assert [p.index for p in result.predictions] == order[:5]
    assert [p.label for p in result.predictions] == ["abcde"[i] for i in order[:5]]
    np.testing.assert_allclose([p.probability for p in result.predictions],
                               probs[order[:5]].numpy(), atol=1e-6)
    assert result.target == order[0]
    assert Prediction(order[0], "abcde"[order[0]], result.predictions[0].probability) == (
        result.predictions[0])


# ------------------------------------------------------------------------------- boxes
def test_boxes_equal_fcam_metrics_extraction(tiny: dict) -> None:
    result = explain_image(_photo(seed=3), 0, ["gradcam", "gradcampp"], tiny["model"],
                           tiny["spec"], threshold=0.3)
    for name, heat in result.maps.items():
        expected = boxes_at_thresholds(heat.numpy(), [0.3])[0]
        np.testing.assert_array_equal(result.boxes[name], expected)
        for tau in (0.0, 0.5, 0.9):
            np.testing.assert_array_equal(result.boxes_at(tau)[name],
                                          boxes_at_thresholds(heat.numpy(), [tau])[0])


def test_boxes_by_hand_on_a_known_map() -> None:
    """A 8x8 map with a bright 3x2 block (x 2..4, y 5..6) and a dim pixel. wsolevaluation boxes a
    contour as (x, y, x + w, y + h): the block gives (2, 5, 5, 7) at 0.5, and at 0.1 the
    largest contour is still the block; on a 16x24 image (twice as wide, three times as tall)
    the box scales to (4, 15, 10, 21)."""
    heat = torch.zeros(8, 8)
    heat[5:7, 2:5] = 1.0
    heat[0, 7] = 0.3
    result = Explanation(Image.new("RGB", (16, 24)), 0, [], {"m": heat}, {"m": 0.1}, 0.5)
    assert result.boxes_at(0.5)["m"].tolist() == [[2, 5, 5, 7]]
    assert result.boxes_at(0.1)["m"].tolist() == [[2, 5, 5, 7]]
    assert result.image_boxes(0.5)["m"].tolist() == [[4, 15, 10, 21]]
    with pytest.raises(ValueError, match="threshold"):
        result.boxes_at(1.5)


def test_full_map_is_at_the_image_resolution(tiny: dict) -> None:
    result = explain_image(_photo(90, 70), 0, ["gradcam"], tiny["model"], tiny["spec"])
    full = result.full_map("gradcam")
    assert full.shape == (70, 90) and full.dtype == np.float32
    assert 0.0 <= full.min() and full.max() <= 1.0
    expected = F.interpolate(result.maps["gradcam"][None, None], size=(70, 90), mode="bilinear",
                             align_corners=False)[0, 0]
    np.testing.assert_allclose(full, expected.clamp(0, 1).numpy(), atol=1e-6)
    constant = Explanation(Image.new("RGB", (30, 20)), 0, [], {"m": torch.full((8, 8), 0.25)},
                           {}, 0.5)
    np.testing.assert_allclose(constant.full_map("m"), np.full((20, 30), 0.25), atol=1e-7)


def test_overlay_draws_the_box(tiny: dict) -> None:
    heat = torch.zeros(8, 8)
    heat[2:6, 2:6] = 1.0
    result = Explanation(Image.new("RGB", (64, 64)), 0, [], {"m": heat}, {}, 0.5)
    plain = np.asarray(result.overlay("m"))
    boxed = np.asarray(result.overlay("m", threshold=0.5))
    assert plain.shape == boxed.shape == (64, 64, 3)
    assert (boxed != plain).any(axis=2).sum() > 0
    assert (boxed[16:48, 16] == 255).all()  # the box's left edge, x = 2 * 64 / 8
    small = result.overlay("m", max_side=32)
    assert small.size == (32, 32)


# ----------------------------------------------------------------------------- bad input
def test_not_an_image(tiny: dict, tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image at all")
    for source in (path, b"%PDF-1.4 hello"):
        with pytest.raises(ValueError, match="is not an image Pillow can read"):
            explain_image(source, None, ["gradcam"], tiny["model"], tiny["spec"])
    with pytest.raises(ValueError, match="image not found"):
        load_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(tiny: dict, fmt: str) -> None:
    buffer = io.BytesIO()
    _photo(200, 150).save(buffer, format=fmt)
    data = buffer.getvalue()
    with pytest.raises(ValueError, match="truncated or corrupt"):
        explain_image(data[: len(data) // 2], None, ["gradcam"], tiny["model"], tiny["spec"])


def test_huge_images_are_rejected_on_the_header(tiny: dict) -> None:
    # 40 000 x 40 000: Pillow's decompression-bomb check refuses the header.
    with pytest.raises(ValueError, match="larger than Pillow decodes safely"):
        explain_image(_png_claiming(40_000, 40_000), None, ["gradcam"], tiny["model"],
                      tiny["spec"])
    # 6 000 x 5 000 (30 MP): under Pillow's limits, over the app's; refused before decoding
    # (decoding this file would fail as truncated instead).
    with pytest.raises(ValueError, match=r"6000 x 5000 pixels \(30 megapixels\).*at most 25"):
        load_image(_png_claiming(6000, 5000))
    with pytest.raises(ValueError, match="truncated"):
        load_image(_png_claiming(6000, 5000), max_pixels=10**8)
    assert MAX_PIXELS == 25_000_000


@pytest.mark.parametrize("target", [5, -1, 100])
def test_class_out_of_range(tiny: dict, target: int) -> None:
    with pytest.raises(ValueError, match=r"class -?\d+ is outside this model's classes: "
                                         r"choose 0 to 4"):
        explain_image(_photo(), target, ["gradcam"], tiny["model"], tiny["spec"])


def test_bad_class_method_and_threshold(tiny: dict) -> None:
    model, spec = tiny["model"], tiny["spec"]
    with pytest.raises(ValueError, match="class must be a whole number"):
        explain_image(_photo(), 1.5, ["gradcam"], model, spec)
    with pytest.raises(ValueError, match="class must be a whole number"):
        explain_image(_photo(), True, ["gradcam"], model, spec)
    assert explain_image(_photo(), 2.0, [], model, spec).target == 2
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain_image(_photo(), None, ["nocam"], model, spec)
    with pytest.raises(ValueError, match="threshold must be in"):
        explain_image(_photo(), None, ["gradcam"], model, spec, threshold=-0.1)


def test_checkpoint_that_does_not_fit(tiny: dict, tmp_path: Path) -> None:
    path = tmp_path / "fcam.pt"
    tiny["fcam"].save(path)
    assert load_checkpoint(path, tiny["model"]).fitted
    torch.manual_seed(1)
    other = build_model(ClassifierSpec("resnet18", num_classes=3)).eval()
    with pytest.raises(ValueError, match="does not fit the classifier: .*another classifier"):
        load_checkpoint(path, other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="does not fit the classifier"):
        load_checkpoint(junk, tiny["model"])


# ------------------------------------------------------------------ methods and examples
def test_applicable_methods(tiny: dict) -> None:
    assert applicable_methods(tiny["model"], tiny["spec"]) == [
        m for m in cams.available() if m != "tscam"
    ]
    no_linear = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten())
    spec = ClassifierSpec("x.y:z", num_classes=5, target_layer="2", input_size=16)
    methods = applicable_methods(no_linear.eval(), spec)
    assert "cam" not in methods and "tscam" not in methods and "gradcam" in methods
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                            mlp_dim=16, num_classes=5).eval()
    vit_spec = ClassifierSpec("x.y:vit", num_classes=5, input_size=32)
    assert "tscam" in applicable_methods(vit, vit_spec)


def test_example_images(tmp_path: Path) -> None:
    paths = example_images(tmp_path, count=3, size=96)
    assert [p.name for p in paths] == ["example-ellipse.png", "example-rectangle.png",
                                       "example-triangle.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (96, 96) and image.mode == "RGB"
    with pytest.raises(ValueError, match="count"):
        example_images(tmp_path, count=0)
