"""Shared plumbing: the bottom layer of fcam.

Every other subpackage may import :mod:`fcam.core`; :mod:`fcam.core` imports none of them.
It holds exactly one implementation of each piece of model and file plumbing:

- :mod:`fcam.core.state`: freeze a classifier (eval mode, no ``requires_grad``) and restore it.
- :mod:`fcam.core.layers`: layer lookup, logits from any model output, the probe forward.
- :mod:`fcam.core.hooks`: context-managed feature capture.
- :mod:`fcam.core.targets`: class targets from ints, sequences, tensors, arrays or
  pytorch-grad-cam / torchcam style target objects.
- :mod:`fcam.core.validation`: numbers, image batches and normalisation statistics.
- :mod:`fcam.core.io`: atomic writes (fsync, file mode from the umask).
- :mod:`fcam.core.constants`: normalisation constants.
- :mod:`fcam.core.boxes`: box rescaling shared by datasets and metrics.
- :mod:`fcam.core.references`: ``"package.module:name"`` references to importable objects.
- :mod:`fcam.core.progress`: the one progress-bar policy (terminals and notebooks, not logs).
- :mod:`fcam.core.normalisation`: raw RGB images to classifier inputs (RGB or grey models).
"""

from __future__ import annotations

from fcam.core.boxes import resize_bbox
from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.core.hooks import capture_features
from fcam.core.io import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_png,
    atomic_write_text,
    read_torch_file,
)
from fcam.core.layers import (
    PROBE_SIZE,
    ModelProbe,
    OutputFn,
    declared_input_size,
    first_conv_channels,
    locate_target_layer,
    model_logits,
    probe_model,
    probe_structure,
    resolve_layer,
)
from fcam.core.references import import_reference, reference_of
from fcam.core.state import ModelState, frozen, model_device, model_dtype
from fcam.core.targets import Targets, parse_targets
from fcam.core.validation import (
    check_bool,
    check_images,
    check_int,
    check_maps,
    check_number,
    check_stats,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PROBE_SIZE",
    "ModelProbe",
    "ModelState",
    "OutputFn",
    "Targets",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_png",
    "atomic_write_text",
    "capture_features",
    "check_bool",
    "check_images",
    "check_int",
    "check_maps",
    "check_number",
    "check_stats",
    "declared_input_size",
    "first_conv_channels",
    "frozen",
    "import_reference",
    "locate_target_layer",
    "model_device",
    "model_dtype",
    "model_logits",
    "parse_targets",
    "probe_model",
    "probe_structure",
    "read_torch_file",
    "reference_of",
    "resize_bbox",
    "resolve_layer",
]
