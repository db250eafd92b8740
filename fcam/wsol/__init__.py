"""WSOL training methods and the evaluation baselines of the WSOL tables.

F-CAM is published as a layer on top of any weakly-supervised object localisation (WSOL)
classifier. This package trains those classifiers: the methods that wsolevaluation
(Choe et al., CVPR 2020) compares, batched, device-agnostic and seeded, plus the center and
few-shot fully-supervised baselines.

* input-level methods: :func:`has` (Hide-and-Seek), :func:`cutmix` (CutMix);
* building blocks: :class:`ADL`, :func:`acol_erase` (ACoL), :func:`spg_mask` and
  :func:`spg_loss` (SPG), :func:`eil_mask` (EIL, MEIL), :func:`danet_cosine_loss` and
  :func:`hierarchy_from_weights` (DANet);
* two-stage and box methods: :class:`SPOLModel` with :func:`spol_pseudo_mask` (SPOL),
  :class:`CSTNModel` with its :class:`ConvSTN` head (CSTN);
* :func:`build` turns any CNN classifier into a :class:`WSOLModel` with the method's heads
  and its own CAM rule (``.cams``), :func:`train` trains it with wsolevaluation's recipe;
* baselines: :func:`center_baseline`, :func:`fsl_baseline`.

Example:
    >>> from fcam.wsol import available, build
    >>> available()
    ['cam', 'has', 'cutmix', 'adl', 'acol', 'spg', 'eil', 'meil', 'danet', 'spol', 'cstn']
    >>> built = build(torchvision.models.resnet18(weights=None), "adl", num_classes=3)
    >>> built.cams(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 2, 2])

F-CAM on a WSOL model (training skipped here)::

    built = build(torchvision.models.resnet18(weights=None), "acol", num_classes=5)
    train(built, loader, "acol", epochs=10, lr=0.01, device="cuda")
    fc = FCAM(built, built.target_layer, cam=built.cams)
    fc.fit(loader)
"""

from __future__ import annotations

from fcam.wsol.acol import AcolHeads, acol_erase, acol_loss
from fcam.wsol.adl import ADL
from fcam.wsol.augment import cutmix, has
from fcam.wsol.baselines import center_baseline, few_shot_indices, fsl_baseline
from fcam.wsol.cstn import ConvSTN, CSTNModel
from fcam.wsol.danet import DANetHeads, danet_cosine_loss
from fcam.wsol.eil import eil_mask
from fcam.wsol.hierarchy import hierarchy_from_weights
from fcam.wsol.model import METHODS, WSOLModel, available, build
from fcam.wsol.spg import SPG_THRESHOLDS, SPGHeads, spg_loss, spg_mask
from fcam.wsol.spol import MFFHead, SPOLModel, spol_pseudo_mask
from fcam.wsol.training import MethodOptions, make_optimizer, train, train_step

__all__ = [
    "ADL",
    "METHODS",
    "SPG_THRESHOLDS",
    "AcolHeads",
    "CSTNModel",
    "ConvSTN",
    "DANetHeads",
    "MFFHead",
    "MethodOptions",
    "SPGHeads",
    "SPOLModel",
    "WSOLModel",
    "acol_erase",
    "acol_loss",
    "available",
    "build",
    "center_baseline",
    "cutmix",
    "danet_cosine_loss",
    "eil_mask",
    "few_shot_indices",
    "fsl_baseline",
    "has",
    "hierarchy_from_weights",
    "make_optimizer",
    "spg_loss",
    "spg_mask",
    "spol_pseudo_mask",
    "train",
    "train_step",
]
