r"""The two reference points of the WSOL tables: the center baseline and the few-shot
fully-supervised (FSL) baseline.

* :func:`center_baseline`: one fixed centred Gaussian for every image, whatever it shows
  (wsolevaluation's "center baseline"; Choe et al., CVPR 2020, Sec. 5).
* :func:`fsl_baseline`: F-CAM's decoder (optionally with its encoder) trained with *full masks*
  on the ``k`` first images of each class (:func:`few_shot_indices`; ``k = 5`` like
  wsolevaluation's CUB train-fullsup split): the upper reference that any WSOL method is
  compared with.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from fcam.core.hooks import capture_features
from fcam.core.progress import progress_bar
from fcam.core.state import frozen, model_device, model_dtype
from fcam.core.validation import check_int, check_number
from fcam.explainer import FCAM
from fcam.explainer.trainer import check_lr_schedule, epoch_lr

__all__ = ["center_baseline", "few_shot_indices", "fsl_baseline"]

logger = logging.getLogger(__name__)


def center_baseline(
    batch: int,
    size: int | Sequence[int],
    sigma: float = 0.25,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""The center baseline: an isotropic Gaussian centred in every image, in ``[0, 1]``.

    With pixel centres :math:`(y + \tfrac12)/H` and :math:`(x + \tfrac12)/W`:

    .. math::
        M(y, x) = \exp\Big(-\frac{(\tfrac{y + 1/2}{H} - \tfrac12)^2 +
        (\tfrac{x + 1/2}{W} - \tfrac12)^2}{2\sigma^2}\Big)

    then min-max normalised. The WSOL metrics sweep every threshold, so ``sigma`` changes
    nothing but the map's look for square images (the level sets are the same discs).

    Example:
        >>> m = center_baseline(2, (4, 6))
        >>> m.shape, float(m.max()), float(m.min())
        (torch.Size([2, 4, 6]), 1.0, 0.0)

    Args:
        batch: number of maps.
        size: ``(H, W)`` or one int.
        sigma: standard deviation, as a fraction of the image side.
        device, dtype: of the result.

    Returns:
        ``(batch, H, W)`` identical maps.
    """
    check_int(batch, "batch")
    check_number(sigma, "sigma", positive=True)
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    check_int(height, "size")
    check_int(width, "size")
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height - 0.5
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width - 0.5
    dist = ys[:, None] ** 2 + xs[None, :] ** 2
    gauss = torch.exp(-dist / (2 * sigma**2))
    span = (gauss.max() - gauss.min()).clamp_min(1e-12)
    gauss = (gauss - gauss.min()) / span
    return gauss.expand(batch, height, width).clone()


def _label(dataset: Any, index: int) -> int:
    label_of = getattr(dataset, "label_of", None)
    return int(label_of(index)) if callable(label_of) else int(dataset[index]["label"])


def few_shot_indices(dataset: Any, k: int = 5) -> list[int]:
    """The first ``k`` indices of each class in dataset order (like wsolevaluation's
    ``num_val_sample_per_class``).

    Example:
        >>> from fcam.data import SyntheticWSOL
        >>> few_shot_indices(SyntheticWSOL(20, size=32), k=2)
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]

    Args:
        dataset: items with a ``label`` (or a ``label_of(index)`` method).
        k: images per class.
    """
    check_int(k, "k")
    taken: dict[int, int] = {}
    chosen = []
    for index in range(len(dataset)):
        label = _label(dataset, index)
        if taken.get(label, 0) < k:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(index)
    return chosen


def _mask_targets(batch: dict[str, Any], device: torch.device) -> Tensor:
    if "mask" not in batch:
        raise ValueError("fsl_baseline needs items with a full 'mask'")
    target = batch["mask"].to(device).long()
    if "ignore" in batch:
        target = target.masked_fill(batch["ignore"].to(device).bool(), 255)
    return target


def fsl_baseline(
    model: nn.Module,
    dataset: Dataset[Any],
    target_layer: nn.Module | str | None = None,
    k: int = 5,
    epochs: int = 40,
    lr: float = 0.01,
    batch_size: int = 8,
    *,
    finetune_encoder: bool = False,
    lr_schedule: str = "constant",
    seed: int = 0,
    progress: bool = True,
    **fcam_options: Any,
) -> FCAM:
    r"""The few-shot fully-supervised baseline: F-CAM's decoder trained on full masks.

    The decoder of an :class:`fcam.FCAM` for ``model`` is trained with pixel-wise
    cross-entropy :math:`\mathrm{CE}(z, m)` against the ground-truth masks of the ``k`` first
    images of each class (SGD, momentum 0.9, Nesterov, weight decay 1e-4). With
    ``finetune_encoder`` a copy of the classifier is trained too (encoder + decoder, the
    encoder at ``lr / 10`` and in eval mode for BatchNorm); ``model`` itself never changes.

    Like wsolevaluation's, the baseline is one class-agnostic segmenter by default. With
    ``class_head=True`` it has F-CAM's class-conditional head and learns each image's mask for
    its label, so that it is the fully-supervised counterpart of a default F-CAM (whose
    ``explain`` then takes the class to segment, or uses the prediction).

    Example:
        >>> fsl = fsl_baseline(model, train_set, "layer4", k=5)       # doctest: +SKIP
        >>> maps = fsl.explain(images)                                   # doctest: +SKIP

    Args:
        model: the classifier whose features the decoder reads.
        dataset: items (dicts) with ``image`` (normalised), ``label`` and ``mask`` (optionally
            ``ignore``), e.g. :class:`fcam.data.SyntheticWSOL`.
        target_layer: the decoder's head layer (see :class:`fcam.FCAM`).
        k: images per class (5, like wsolevaluation's CUB train-fullsup split).
        epochs, lr, batch_size: training options.
        finetune_encoder: train the encoder too.
        lr_schedule: ``"constant"`` (wsolevaluation's) or ``"cosine"`` (annealed per epoch, as
            :meth:`fcam.FCAM.fit`'s default; see :func:`fcam.explainer.trainer.epoch_lr`).
        seed: seed of the decoder's initialisation and of the shuffling.
        progress: show a tqdm bar.
        **fcam_options: options of :class:`fcam.FCAM` (``widths``, ``upscaler``,
            ``class_head``, ...).

    Returns:
        A fitted :class:`fcam.FCAM` without a seed CAM; ``explain(images)`` gives the maps.
    """
    check_int(epochs, "epochs")
    check_number(lr, "lr", positive=True)
    check_lr_schedule(lr_schedule)
    encoder = copy.deepcopy(model) if finetune_encoder else model
    # No seed CAM to weight the map by: the decoder alone, trained on the masks, is the map;
    # like wsolevaluation's few-shot baseline it is one class-agnostic segmenter.
    fcam_options.setdefault("cam_exponent", 0.0)
    fcam_options.setdefault("cam_mix", 0.0)
    fcam_options.setdefault("class_head", False)
    fc = FCAM(encoder, target_layer, cam=None, seed=seed, **fcam_options)
    subset = Subset(dataset, few_shot_indices(dataset, k))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    device, dtype = model_device(encoder), model_dtype(encoder)
    groups = [{"params": list(fc.decoder.parameters()), "lr": lr}]
    if finetune_encoder:
        groups.append({"params": [p for p in encoder.parameters()], "lr": lr / 10})
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    bar = progress_bar(
        total=epochs * len(loader), enabled=progress, desc="fsl baseline", unit="step"
    )
    with frozen(encoder, requires_grad=finetune_encoder):
        fc.decoder.train()
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        for epoch in range(epochs):
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = epoch_lr(base, epoch, epochs, lr_schedule)
            for batch in loader:
                images = batch["image"].to(device, dtype)
                target = _mask_targets(batch, device)
                size = (int(images.shape[-2]), int(images.shape[-1]))
                with torch.set_grad_enabled(finetune_encoder), capture_features(
                    encoder, fc.pyramid.names) as feats:
                    encoder(images)
                # Every item has a label: few_shot_indices read them all.
                classes = torch.as_tensor(batch["label"]) if fc.config.class_head else None
                logits = fc.decode(fc.decoder, fc.attach_inputs(feats, images, classes), size)
                loss = F.cross_entropy(logits.float(), target, ignore_index=255)
                if not math.isfinite(float(loss.detach())):
                    raise FloatingPointError("fsl_baseline: the loss became non-finite")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    fc.decoder.eval()
    fc.fitted = True
    return fc
