"""Save and load any classifier, with what explaining it needs (layer, size, normalisation).

* :class:`ClassifierSpec`: model (torchvision builder name such as ``"resnet50"``, or
  ``"package.module:callable"``), number of classes, target layer, input size, mean and std;
* :func:`build_model`: the randomly initialised model of a spec (never downloads);
* :func:`load_model`: a spec plus a weights file or training checkpoint (a state dict, or a
  dict holding one under ``"state_dict"``/``"model_state_dict"``/``"model"``/...; a DDP
  ``"module."`` prefix is stripped);
* :func:`save_classifier` / :func:`load_classifier`: one self-describing file (atomic write,
  ``weights_only`` load); the demo's classifier files load too.

Example:
    >>> from fcam.models import ClassifierSpec, load_model, save_classifier
    >>> spec = ClassifierSpec("resnet50", num_classes=200, target_layer="layer4")  # doctest: +SKIP
    >>> model, spec = load_model(spec, "cub_resnet50.pth")                         # doctest: +SKIP
    >>> save_classifier(model, spec, "cub_resnet50.fcam.pt")                       # doctest: +SKIP
"""

from __future__ import annotations

from fcam.models.files import (
    CHECKPOINT_KEYS,
    infer_num_classes,
    load_classifier,
    load_model,
    load_weights,
    read_classifier_file,
    read_state_dict,
    save_classifier,
)
from fcam.models.spec import ClassifierSpec, build_model

__all__ = [
    "CHECKPOINT_KEYS",
    "ClassifierSpec",
    "build_model",
    "infer_num_classes",
    "load_classifier",
    "load_model",
    "load_weights",
    "read_classifier_file",
    "read_state_dict",
    "save_classifier",
]
