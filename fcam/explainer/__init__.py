r"""F-CAM: a learned, image-guided upscaler of class activation maps (Belharbi et al., WACV 2022).

:class:`FCAM` attaches a U-Net decoder (:mod:`fcam.upscalers`) to a **frozen** classifier's own
feature pyramid and trains it without any mask: sparse pseudo-labels ("seeds") sampled from the
classifier's low-resolution CAM, a dense-CRF term that snaps the map to colour edges, and a
log-barrier size term (:mod:`fcam.losses`). The decoder's head has a zero-initialised residual
per class (``class_head``, :class:`fcam.upscalers.ClassConditionalHead`), trained on that class's
images, so objects of other classes can stay background. At inference the map is the decoder's
softmax foreground probability :math:`p_{fg}` for the explained class at full input resolution,
with a small share of the seed CAM of that class: :math:`(1-\alpha)\, p_{fg} + \alpha\,
\mathrm{cam}_c` with ``cam_mix`` :math:`\alpha` (default :data:`DEFAULT_CAM_MIX`, 0.02;
``cam_exponent`` :math:`\gamma` also weights :math:`p_{fg}` by :math:`\mathrm{cam}_c^{\gamma}`,
default 0). The decoder marks a look-alike distractor as confidently as the object, and
everything outside its mask alike; the CAM's share orders them. ``cam_mix=0`` (with
``cam_exponent=0``) gives the decoder's map from one classifier forward plus the decoder (no
backward, no CAM extractor; with ``class_head=False`` the published, class-agnostic F-CAM map);
otherwise the seed CAM costs a backward through the layers after ``target_layer`` (gradient
CAMs).

Example:
    >>> from fcam import FCAM
    >>> fc = FCAM(model, target_layer="layer4", cam="gradcampp")   # doctest: +SKIP
    >>> history = fc.fit(train_loader, epochs=5)                     # doctest: +SKIP
    >>> maps = fc.explain(images)   # (B, H, W) in [0, 1]            # doctest: +SKIP
    >>> fc.save("fcam.pt"); fc = FCAM.load("fcam.pt", model)         # doctest: +SKIP

The package is split by job:

- :mod:`fcam.explainer.fcam`: the :class:`FCAM` class (construction, explain, save/load).
- :mod:`fcam.explainer.forward`: the forward pieces it composes (features, seed CAM, decoding,
  :func:`mix_with_cam`).
- :mod:`fcam.explainer.persistence`: what ``save`` writes and ``load`` rebuilds.
- :mod:`fcam.explainer.config`: :class:`FCAMConfig` / :class:`SeedOptions`, the one definition
  of the options that the constructor, ``save`` and ``load`` derive from.
- :mod:`fcam.explainer.trainer`: the epoch loop, DDP, AMP, RNG state and exact resume.
- :mod:`fcam.explainer.checkpoint`: the file format, its version and the classifier fingerprint.
- :mod:`fcam.explainer.batches`: what a training loader may yield.
- :mod:`fcam.explainer.adapters`: seed CAMs from pytorch-grad-cam and torchcam.

**CRF weight.** ``crf_weight`` (default :data:`DEFAULT_REFERENCE_CRF_WEIGHT`) is defined for a
224×224 reference image and rescaled per batch: the CRF loss sums ``W_ij`` over all pixel pairs,
so at a fixed spatial bandwidth it grows like ``(H·W)²``; the weight used is
``crf_weight · (224² / (H·W))²``, which keeps the balance between the CRF and the seed term
independent of the image size. With the default ``crf_normalize="affinity"`` each image's
affinity is also scaled to a unit mean entry, so the balance no longer depends on how much
colour structure an image has. The default weight, 2e-9 (twice the paper's exact-kernel value), and
the default seeds (background seeds from the lowest half of the CAM, both kinds drawn in
proportion to their colour agreement) were chosen on two synthetic domains, their number (60 + 60
per image, 5 × 5 patches) on real photographs (``docs/notes/real_photos.md``); the
earlier 3e-8 let the CRF outweigh the seeds about ninefold and ran away to all-foreground on
cluttered backgrounds. Derivation and measurements, tuned
and held-out domains: ``docs/concepts/fcam.md`` and ``docs/benchmarks.md``. When maps collapse
anyway, :meth:`FCAM.fit` logs a warning, and ``fit(val_loader=...)`` selects the best epoch.

**Distributed training.** When ``torch.distributed`` is initialised (e.g. under ``torchrun``),
:meth:`FCAM.fit` wraps the decoder in ``DistributedDataParallel``; only rank 0 shows progress
and writes checkpoints. Give each rank its shard with a ``DistributedSampler`` and call
``sampler.set_epoch(epoch)`` through ``fit(..., on_epoch_start=sampler.set_epoch)``::

    sampler = DistributedSampler(dataset, shuffle=True)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)
    FCAM(model).fit(loader, epochs=10, on_epoch_start=sampler.set_epoch)

**Seed CAMs from other libraries.** ``cam`` may be any callable ``(images, targets) ->
Tensor[B, h, w]``. :func:`wrap_cam` adapts pytorch-grad-cam objects
(``pytorch_grad_cam.GradCAM(model, target_layers=[...])``) and torchcam extractors
(``torchcam.methods.GradCAMpp(model, "layer4")``); :class:`FCAM` applies it automatically.
"""

from __future__ import annotations

from fcam.explainer.adapters import CamFn, wrap_cam
from fcam.explainer.checkpoint import CHECKPOINT_NAME, FORMAT_VERSION, classifier_fingerprint
from fcam.explainer.config import (
    CRF_REFERENCE_PIXELS,
    DEFAULT_CAM_EXPONENT,
    DEFAULT_CAM_MIX,
    DEFAULT_REFERENCE_CRF_WEIGHT,
    FCAMConfig,
    SeedOptions,
)
from fcam.explainer.fcam import FCAM, NotFittedError, mix_with_cam
from fcam.explainer.trainer import TrainOptions

__all__ = [
    "CHECKPOINT_NAME",
    "CRF_REFERENCE_PIXELS",
    "DEFAULT_CAM_EXPONENT",
    "DEFAULT_CAM_MIX",
    "DEFAULT_REFERENCE_CRF_WEIGHT",
    "FCAM",
    "FORMAT_VERSION",
    "CamFn",
    "FCAMConfig",
    "NotFittedError",
    "SeedOptions",
    "TrainOptions",
    "classifier_fingerprint",
    "mix_with_cam",
    "wrap_cam",
]
