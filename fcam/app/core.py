"""The core of ``fcam app``: image, class and methods in; maps, boxes and timings out.

:func:`explain_image` is what the page calls on every upload, class choice or method choice;
it is a plain function so it is tested without a browser. Every mistake a user can make on
the page (a file that is not an image, a truncated image, an image too large to decode, a
class outside the model's range, an unknown method, a checkpoint for another classifier)
raises a ``ValueError`` whose message the page shows as is.

Example:
    >>> import torch, torchvision
    >>> from PIL import Image
    >>> from fcam.app import explain_image
    >>> from fcam.models import ClassifierSpec
    >>> model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    >>> spec = ClassifierSpec("resnet18", num_classes=3, target_layer="layer4", input_size=64)
    >>> result = explain_image(Image.new("RGB", (80, 60)), None, ["gradcam"], model, spec)
    >>> tuple(result.maps["gradcam"].shape), len(result.predictions)
    ((64, 64), 3)
    >>> result.full_map("gradcam").shape            # the uploaded image's resolution
    (60, 80)
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from torch import Tensor, nn

from fcam.cams import available, create
from fcam.cams.tscam import _is_attention
from fcam.core import frozen, model_device, model_logits
from fcam.core.boxes import resize_bbox
from fcam.core.normalisation import normalise_raw
from fcam.metrics.boxes import boxes_at_thresholds

__all__ = [
    "FCAM_NAME",
    "MAX_PIXELS",
    "TOP_K",
    "Explanation",
    "Prediction",
    "applicable_methods",
    "explain_image",
    "load_checkpoint",
    "load_image",
    "method_label",
    "probabilities",
    "shrink_image",
    "to_input",
    "top_predictions",
]

#: Largest image the app decodes, in pixels (a 24-megapixel photo fits). Checked on the header,
#: before the pixels are decoded, so a tiny file claiming 40 000 x 40 000 pixels costs nothing.
MAX_PIXELS = 25_000_000
#: Number of predictions listed.
TOP_K = 5
#: Key of the F-CAM map in :attr:`Explanation.maps`.
FCAM_NAME = "fcam"

_LABELS = {
    "cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++",
    "smoothgradcampp": "Smooth Grad-CAM++", "xgradcam": "XGrad-CAM", "layercam": "LayerCAM",
    "scorecam": "Score-CAM", "sscam": "SS-CAM", "iscam": "IS-CAM", "tscam": "TS-CAM",
    FCAM_NAME: "F-CAM",
}
_BOX_COLOUR = (255, 255, 255)


def method_label(name: str) -> str:
    """Display name of a CAM method (``"gradcampp"`` -> ``"Grad-CAM++"``) or of F-CAM."""
    return _LABELS.get(name, name)


# --------------------------------------------------------------------------- inputs
def load_image(
    source: str | os.PathLike[str] | bytes | Image.Image, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """An RGB image from a file, its bytes or a PIL image, with its EXIF orientation applied.

    Args:
        source: a path, the file's bytes, or a PIL image.
        max_pixels: largest ``width x height`` accepted; checked on the header, before
            decoding (the same check as Pillow's ``Image.MAX_IMAGE_PIXELS``, but lower).

    Raises:
        ValueError: not an image, a truncated or corrupt image, or too many pixels.
    """
    name = Path(source).name if isinstance(source, (str, os.PathLike)) else "the file"
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, name)
        return source.convert("RGB")
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise ValueError(f"image not found: {source}")
    data: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(data) as image:  # reads the header only
                _check_pixels(image.size, max_pixels, name)
                image.load()
                return ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refused the header's size (its decompression-bomb check) before decoding.
        raise ValueError(
            f"{name} is larger than Pillow decodes safely ({(Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f}"
            f" megapixels); the app accepts at most {max_pixels / 1e6:.0f} megapixels: "
            "downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(
            f"{name} is not an image Pillow can read (PNG, JPEG, WebP, BMP, TIFF, ...)"
        ) from None
    except (OSError, SyntaxError, EOFError) as exc:  # Pillow's truncated/corrupt data errors
        raise ValueError(f"{name} is a truncated or corrupt image ({exc})") from None


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ValueError(
            f"{name} is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
            f"the app accepts at most {max_pixels / 1e6:.0f} megapixels: downscale it first"
        )
    if width < 1 or height < 1:
        raise ValueError(f"{name} has no pixels ({width} x {height})")


def to_input(image: Image.Image, spec: Any, device: torch.device) -> Tensor:
    """The ``(1, C, S, S)`` classifier input: resized (bilinear, no crop) and normalised like
    ``fcam explain`` (:func:`fcam.core.normalisation.normalise_raw`)."""
    size = spec.size
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    raw = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1)
    return normalise_raw(raw.to(device), spec.mean, spec.std)[None]


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module) -> Any:
    """A fitted :class:`~fcam.FCAM` for ``model`` (loaded with ``weights_only=True``).

    Raises:
        ValueError: a missing or corrupt file, or a checkpoint fitted for another classifier.
    """
    from fcam import FCAM

    try:
        return FCAM.load(path, model)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        message = " ".join(str(exc).split())
        raise ValueError(f"this F-CAM checkpoint does not fit the classifier: {message}") from None


def applicable_methods(model: nn.Module, spec: Any) -> list[str]:
    """The names of :func:`fcam.cams.available` that work on ``model`` at ``spec``'s layer.

    Each method is built (CAM needs a pooled linear head). TS-CAM needs a class-token
    transformer: it is offered only when the model has an attention module and a forward on a
    blank input succeeds.
    """
    names = []
    device = model_device(model)
    for name in available():
        if name == "tscam" and not any(_is_attention(m) for m in model.modules()):
            continue
        try:
            with create(name, model, spec.target_layer) as extractor:
                if name == "tscam":
                    extractor(to_input(Image.new("RGB", (spec.size, spec.size)), spec, device), 0)
        except (ValueError, TypeError, RuntimeError):
            continue
        names.append(name)
    return names


# --------------------------------------------------------------------------- outputs
@dataclass(frozen=True)
class Prediction:
    """One of the top predictions: class index, display label and softmax probability."""

    index: int
    label: str
    probability: float


@dataclass
class Explanation:
    """What :func:`explain_image` returns.

    Attributes:
        image: the uploaded image (RGB, its own resolution ``H0 x W0``).
        target: the explained class.
        predictions: the top :data:`TOP_K` classes, most probable first.
        maps: ``{method: (S, S) map in [0, 1]}`` at the classifier's input size, on the
            model's device; F-CAM's key is :data:`FCAM_NAME`.
        seconds: wall time each map took (forward, backward and decoder included).
        threshold: the threshold of :attr:`boxes`.
        boxes: ``{method: (K, 4) int64 boxes x0, y0, x1, y1}`` at :attr:`threshold`, in the
            input frame (:meth:`image_boxes` maps them onto the image).
    """

    image: Image.Image
    target: int
    predictions: list[Prediction]
    maps: dict[str, Tensor]
    seconds: dict[str, float]
    threshold: float
    boxes: dict[str, np.ndarray] = field(default_factory=dict)

    def boxes_at(self, threshold: float) -> dict[str, np.ndarray]:
        """Each map's box at ``threshold`` in the input frame: the box of the largest contour
        of ``map > threshold * max`` (:func:`fcam.metrics.boxes_at_thresholds`, MaxBoxAcc)."""
        threshold = _check_threshold(threshold)
        return {
            name: boxes_at_thresholds(heat.detach().float().cpu().numpy(), [threshold])[0]
            for name, heat in self.maps.items()
        }

    def image_boxes(self, threshold: float) -> dict[str, np.ndarray]:
        """:meth:`boxes_at` rescaled to the uploaded image's frame."""
        return {
            name: _scale_boxes(boxes, self.maps[name].shape, self.image.size)
            for name, boxes in self.boxes_at(threshold).items()
        }

    def full_map(self, name: str) -> np.ndarray:
        """The map of ``name`` at the uploaded image's resolution, ``(H0, W0)`` float32 in
        [0, 1] (bilinear, ``align_corners=False``): the ``.npy`` download."""
        width, height = self.image.size
        heat = self.maps[name].detach().float()[None, None]
        full = F.interpolate(heat, size=(height, width), mode="bilinear", align_corners=False)
        return full[0, 0].clamp(0, 1).cpu().numpy()

    def overlay(self, name: str, threshold: float | None = None, max_side: int = 0) -> Image.Image:
        """The image with the map of ``name`` blended on it (:func:`fcam.viz.overlay`) and,
        with ``threshold``, its box; downscaled so its longer side is at most ``max_side``
        (0: the image's resolution)."""
        from fcam.viz import overlay

        image = shrink_image(self.image, max_side)
        out = overlay(image, self.maps[name].detach().float().cpu())
        if threshold is not None:
            boxes = self.boxes_at(threshold)[name]
            scaled = _scale_boxes(boxes, self.maps[name].shape, image.size)
            draw = ImageDraw.Draw(out)
            width = max(2, round(max(image.size) / 160))
            for x0, y0, x1, y1 in np.asarray(scaled).tolist():
                draw.rectangle((x0, y0, x1, y1), outline=_BOX_COLOUR, width=width)
        return out


def _scale_boxes(boxes: np.ndarray, map_shape: Sequence[int], size: tuple[int, int]) -> np.ndarray:
    """``(K, 4)`` boxes on an ``(h, w)`` map rescaled to an image of ``size = (W, H)``."""
    frame = (int(map_shape[-1]), int(map_shape[-2]))
    return np.array([resize_bbox(box, frame, size) for box in np.asarray(boxes).tolist()],
                    dtype=np.int64).reshape(-1, 4)


def shrink_image(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` downscaled (bilinear) so its longer side is at most ``max_side`` (0: as is)."""
    if max_side <= 0 or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def _check_target(target: Any, num_classes: int) -> int | None:
    if target is None:
        return None
    if isinstance(target, float) and target.is_integer():
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"class must be a whole number, got {target!r}")
    if not 0 <= target < num_classes:
        raise ValueError(
            f"class {target} is outside this model's classes: choose 0 to {num_classes - 1}"
        )
    return target


def _check_methods(methods: Sequence[str]) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    names = list(dict.fromkeys(str(m).lower() for m in methods))
    unknown = [n for n in names if n not in available()]
    if unknown:
        raise ValueError(f"unknown CAM method(s) {', '.join(unknown)}; choose from {available()}")
    return names


def probabilities(model: nn.Module, images: Tensor) -> Tensor:
    """Softmax probabilities ``(K,)`` of the classes for a ``(1, C, S, S)`` input."""
    with frozen(model), torch.no_grad():
        return model_logits(model(images)).float().softmax(1)[0]


def top_predictions(
    probs: Tensor, class_names: Sequence[str] | None = None, k: int = TOP_K
) -> list[Prediction]:
    """The ``k`` most probable classes of ``probs`` (:func:`probabilities`), best first."""
    top = probs.topk(min(k, probs.numel()))
    return [
        Prediction(i, class_names[i] if class_names and i < len(class_names) else f"class {i}", p)
        for i, p in zip(top.indices.tolist(), top.values.tolist())
    ]


def explain_image(
    image: str | os.PathLike[str] | bytes | Image.Image,
    target: int | None,
    methods: Sequence[str],
    model: nn.Module,
    spec: Any,
    *,
    fcam: Any = None,
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Explanation:
    """Maps, boxes and timings of one image for one class: the page's core.

    Each CAM map is ``cams.create(method, model, spec.target_layer).explain(x, target)`` and the
    F-CAM map ``fcam.explain(x, target)``, with ``x`` the image resized to ``spec.size`` and
    normalised with ``spec.mean``/``spec.std``; boxes come from
    :func:`fcam.metrics.boxes_at_thresholds` at ``threshold``.

    Args:
        image: a path, the file's bytes, or a PIL image (see :func:`load_image`).
        target: class to explain; ``None``: the top prediction.
        methods: names of :func:`fcam.cams.available` (may be empty when ``fcam`` is given).
        model: the classifier (eval mode).
        spec: its :class:`~fcam.models.ClassifierSpec` (input size, normalisation, layer).
        fcam: a fitted :class:`~fcam.FCAM` for ``model``, or ``None``.
        threshold: box threshold in [0, 1], relative to each map's maximum.
        class_names: labels of the predictions (default ``"class k"``).
        max_pixels: largest image accepted.

    Raises:
        ValueError: a bad image, class, method or threshold (the message says which).
    """
    names = _check_methods(methods)
    threshold = _check_threshold(threshold)
    picture = load_image(image, max_pixels)
    x = to_input(picture, spec, model_device(model))
    probs = probabilities(model, x)
    predictions = top_predictions(probs, class_names)
    chosen = _check_target(target, int(probs.numel()))
    chosen = predictions[0].index if chosen is None else chosen
    maps: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for name in names:
        tick = time.perf_counter()
        with create(name, model, spec.target_layer) as extractor:
            maps[name] = extractor.explain(x, [chosen])[0]
        seconds[name] = time.perf_counter() - tick
    if fcam is not None:
        tick = time.perf_counter()
        maps[FCAM_NAME] = fcam.explain(x, [chosen])[0]
        seconds[FCAM_NAME] = time.perf_counter() - tick
    result = Explanation(picture, chosen, predictions, maps, seconds, threshold)
    result.boxes = result.boxes_at(threshold)
    return result

