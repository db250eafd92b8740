"""The :class:`FCAM` explainer: construction, ``explain``, ``fit``, ``save`` and ``load``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from fcam.cams import available as available_cams
from fcam.cams import create as create_cam
from fcam.core.hooks import capture_features
from fcam.core.layers import (
    OutputFn,
    first_conv_channels,
    model_logits,
    probe_structure,
    resolve_layer,
)
from fcam.core.references import reference_of
from fcam.core.state import frozen, model_device, model_dtype
from fcam.core.targets import Targets, parse_targets
from fcam.core.tokens import default_target_layer
from fcam.core.validation import check_images, check_number, check_stats
from fcam.explainer import forward, persistence
from fcam.explainer.adapters import CamFn, wrap_cam
from fcam.explainer.checkpoint import write_checkpoint
from fcam.explainer.config import FCAMConfig
from fcam.explainer.forward import mix_with_cam
from fcam.explainer.trainer import (
    DEFAULT_LR,
    DEFAULT_LR_SCHEDULE,
    Trainer,
    TrainOptions,
    checkpoint_path,
)
from fcam.losses import DenseCRFLoss, FCAMLoss, SeedLoss, SizeLoss
from fcam.upscalers import build_upscaler, decoder_name, default_widths, discover_pyramid

__all__ = ["FCAM", "NotFittedError", "mix_with_cam"]

logger = logging.getLogger(__name__)

class NotFittedError(ValueError, RuntimeError):
    """Raised when :meth:`FCAM.explain` runs before :meth:`FCAM.fit` or :meth:`FCAM.load`."""


class FCAM:
    r"""Learned full-resolution CAMs for a frozen classifier (F-CAM).

    Training objective per batch (Belharbi et al., WACV 2022, Sec. 3), with :math:`z` the
    decoder logits, :math:`S = \mathrm{softmax}(z)` and :math:`I` the raw RGB image in [0, 255]:

    .. math::
        \mathcal{L} = \lambda_{sl}\,\mathrm{CE}_{seeds}(z)
        + \lambda_{crf}\Big(\tfrac{224^2}{HW}\Big)^{2}\,\frac1B\sum_b\sum_k S_{bk}^\top W_b(1-S_{bk})
        + \lambda_{size}\,\tfrac12\big[\psi_t(-|S_0|) + \psi_t(-|S_1|)\big]

    Seeds are re-sampled every iteration from the seed CAM at input size
    (:func:`fcam.cams.cam_to_size`; GT class when labels are given, else the prediction).

    Example:
        >>> import torch, torchvision
        >>> from fcam import FCAM
        >>> model = torchvision.models.resnet18(weights=None, num_classes=3)
        >>> fc = FCAM(model, "layer4", cam="cam", widths=(16, 8, 8, 8, 8))
        >>> history = fc.fit([torch.rand(2, 3, 64, 64)], epochs=1, progress=False)
        >>> fc.explain(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])

    Args:
        model: the classifier (kept frozen; never modified).
        target_layer: CAM layer = decoder head (module or dotted name); ``None`` picks the last
            layer with a spatial output.
        cam: seed CAM: a name from :func:`fcam.cams.available`, an extractor instance, or a
            callable ``(images, targets) -> Tensor[B, h, w]`` (pytorch-grad-cam and torchcam
            objects are adapted by :func:`fcam.explainer.wrap_cam`); ``None`` only to explain
            with a loaded decoder.
        upscaler: decoder type (:func:`fcam.upscalers.available`); ``None``: the config's
            (default ``"unet-lite"``, :class:`~fcam.upscalers.LiteUNetDecoder`; ``"unet"`` is
            F-CAM's published decoder, about 8× the compute).
        skips: explicit skip layers (names or modules) instead of the automatic pyramid.
        output_fn: maps the model output to logits (see :func:`fcam.core.model_logits`).
        config: a complete :class:`~fcam.explainer.FCAMConfig` to start from.
        **options: any field of :class:`~fcam.explainer.FCAMConfig` (``crf_weight``,
            ``sigma_rgb``, ``widths``, ``mean``, ``std``, ``seed``, ...) or of
            :class:`~fcam.explainer.SeedOptions` (``sl_max``, ...).

    Raises:
        TypeError, ValueError: on a bad model, layer, CAM, upscaler or option.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        cam: str | CamFn | Any = "gradcampp",
        upscaler: str | None = None,
        *,
        skips: Sequence[nn.Module | str] | None = None,
        output_fn: OutputFn | None = None,
        config: FCAMConfig | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if output_fn is not None and not callable(output_fn):
            raise TypeError(f"output_fn must be callable, got {type(output_fn).__name__}")
        base = config if config is not None else FCAMConfig()
        cfg = base.replace(**options) if upscaler is None else base.replace(upscaler=upscaler, **options)
        self.model = model
        self.output_fn = output_fn
        self.in_channels = first_conv_channels(model)
        check_stats(cfg.mean, cfg.std, self.in_channels)
        # One probe forward answers every structural question: layer, pyramid, class count.
        probe = probe_structure(model, cfg.input_size, self.in_channels)
        if target_layer is None:
            target_layer = default_target_layer(model, probe)[0]
            logger.info("FCAM: target_layer=None, using %r", target_layer)
        self.target_name, _ = resolve_layer(model, target_layer)
        self.pyramid = discover_pyramid(model, self.target_name, skips, probe=probe)
        self.num_classes = probe.num_classes(output_fn)
        self.cam_fn = self._build_cam(cam)
        self.config = cfg.replace(
            target_layer=self.target_name,
            cam=cam.lower() if isinstance(cam, str) else None,
            cam_ref=None if isinstance(cam, str) or cam is None else reference_of(cam),
            skips=None if skips is None else [s.name for s in self.pyramid.skips if s],
            output_fn_ref=None if output_fn is None else reference_of(output_fn),
            widths=cfg.widths or default_widths(decoder_name(cfg.upscaler, self.pyramid)),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.decoder = build_upscaler(self.config.upscaler, self.pyramid, self.config.widths,
                                          self.num_classes if self.config.class_head else 0)
        # The decoder follows the classifier's dtype (float64 classifiers fit in float64).
        self.decoder.to(model_device(model), model_dtype(model))
        self.loss = self._build_loss()
        self.fitted = False
        self.history: list[dict[str, float]] = []

    def _build_cam(self, cam: Any) -> CamFn | None:
        if cam is None:
            return None
        if isinstance(cam, str):
            if cam.lower().replace("-", "").replace("_", "") not in available_cams():
                raise ValueError(f"cam must be one of {available_cams()}, got {cam!r}")
            return create_cam(cam, self.model, self.target_name, output_fn=self.output_fn)
        return wrap_cam(cam, self.model)

    def _build_loss(self) -> FCAMLoss:
        c = self.config
        return FCAMLoss(
            seed=SeedLoss(),
            crf=DenseCRFLoss(
                sigma_rgb=c.sigma_rgb, sigma_xy=c.sigma_xy, weight=c.crf_weight, scale=c.crf_scale,
                normalize=c.crf_normalize,
            ),
            size=SizeLoss(weight=c.size_weight, init_t=c.init_t, max_t=c.max_t, mulcoef=c.mulcoef,
                          min_share=c.size_min_share),
            seed_weight=c.seed_weight,
        )

    def __repr__(self) -> str:
        skips = [s.name if s else None for s in self.pyramid.skips]
        cam = self.config.cam or self.config.cam_ref or type(self.cam_fn).__name__
        return (
            f"FCAM(model={type(self.model).__name__}, target_layer={self.target_name!r}, "
            f"skips={skips}, cam={cam}, upscaler={self.config.upscaler!r}, fitted={self.fitted})"
        )

    # ------------------------------------------------------------------ forward pieces
    def features(self, images: Tensor, targets: Tensor | None = None) -> dict[str, Tensor]:
        """The pyramid features of ``images`` from one no-grad classifier forward, with the
        explained classes (``targets``, else the prediction of the same forward)."""
        with capture_features(self.model, self.pyramid.names) as feats, torch.no_grad():
            output = self.model(images)
        if targets is None and self.config.class_head:
            targets = model_logits(output, self.output_fn).argmax(1)
        return self.attach_inputs(feats, images, targets)

    def attach_inputs(
        self, feats: Mapping[str, Tensor], images: Tensor, classes: Tensor | None
    ) -> dict[str, Tensor]:
        """``feats`` plus what :meth:`decode` reads besides them: the input ``images`` (for
        image-guided decoders) and the explained class of each image (for the class head)."""
        return forward.attach_inputs(feats, images, classes)

    def cam_and_features(self, images: Tensor, targets: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Seed CAM in [0, 1] at input size, plus the pyramid features.

        An extractor with ``with_features_and_targets`` (every :mod:`fcam.cams` extractor)
        hands the features and the explained classes over from its own forward on these images;
        any other CAM callable is followed by one no-grad forward for them.

        Raises:
            ValueError: no seed CAM (a loaded custom one), or a CAM of the wrong shape.
        """
        return forward.cam_and_features(self, images, targets)

    def decode(self, decoder: nn.Module, feats: Mapping[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Decoder logits ``(B, 2, H, W)`` from captured pyramid features.

        Each feature is converted to ``(N, C, h, w)`` from its recorded layout
        (:meth:`fcam.upscalers.Pyramid.maps`: Swin's channels-last stages, ViT tokens); a
        decoder with ``needs_images = True`` also gets ``images=`` (the classifier's input,
        stored in ``feats`` by :meth:`features` and :meth:`cam_and_features`).
        """
        return forward.decode(self, decoder, feats, size)

    # ------------------------------------------------------------------ explain
    @overload
    def explain(
        self, images: Tensor, targets: Targets = ..., return_cam: Literal[False] = ...,
        *, cam_exponent: float | None = ..., cam_mix: float | None = ...,
    ) -> Tensor: ...

    @overload
    def explain(
        self, images: Tensor, targets: Targets = ..., *, return_cam: Literal[True],
        cam_exponent: float | None = ..., cam_mix: float | None = ...,
    ) -> tuple[Tensor, Tensor]: ...

    def explain(
        self, images: Tensor, targets: Targets = None, return_cam: bool = False,
        *, cam_exponent: float | None = None, cam_mix: float | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""Full-resolution maps: one classifier forward plus the decoder.

        The map is :math:`(1 - \alpha)\, p_{fg} \cdot \mathrm{cam}_c^{\gamma} + \alpha\,
        \mathrm{cam}_c` (:func:`mix_with_cam`): the decoder's foreground probability with a
        share :math:`\alpha` = ``cam_mix`` (:attr:`FCAMConfig.cam_mix`, default 0.02) of the
        seed CAM of class :math:`c` (``targets``), optionally weighted by the CAM to the power
        :math:`\gamma` = ``cam_exponent`` (default 0). With :math:`\alpha = \gamma = 0` it is
        :math:`p_{fg}` alone and no CAM is computed (no backward). :math:`p_{fg}` is the
        decoder's map for class :math:`c` when it has a class head
        (:attr:`FCAMConfig.class_head`, the default), else F-CAM's class-agnostic map.

        Args:
            images: ``(B, C, H, W)`` normalised batch on the model's device.
            targets: class per image for the seed CAM and the class head; ``None`` means the
                prediction.
            return_cam: also return the seed CAM at input size (needs a backward for
                gradient methods).
            cam_exponent: :math:`\gamma \ge 0` for this call; ``None``: the config's.
            cam_mix: :math:`\alpha \in [0, 1]` for this call; ``None``: the config's.

        Returns:
            ``(B, H, W)`` float32 map in [0, 1] on the images' device, and with ``return_cam``
            the ``(B, H, W)`` seed CAM in [0, 1].

        Raises:
            NotFittedError: before :meth:`fit` or :meth:`load`.
            TypeError, ValueError: bad ``images``, ``targets``, ``cam_exponent`` or ``cam_mix``.
            RuntimeError: the seed CAM is needed under ``torch.inference_mode()``.
        """
        if not self.fitted:
            raise NotFittedError(
                "FCAM.explain needs a trained decoder: call fit(loader) or FCAM.load(path, model)"
            )
        images = check_images(images, self.in_channels)
        device, dtype = model_device(self.model), model_dtype(self.model)
        if images.device != device:
            raise ValueError(f"`images` are on {images.device} but the model is on {device}")
        if images.dtype != dtype:
            raise ValueError(f"`images` have dtype {images.dtype} but the model has {dtype}")
        wanted = parse_targets(targets, images.shape[0], self.num_classes)
        gamma = self.config.cam_exponent if cam_exponent is None else check_number(
            cam_exponent, "cam_exponent", non_negative=True)
        mix = self.config.cam_mix if cam_mix is None else check_number(
            cam_mix, "cam_mix", non_negative=True, maximum=1.0)
        needs_cam = return_cam or gamma > 0 or mix > 0
        if model_device(self.decoder) != device or model_dtype(self.decoder) != dtype:
            self.decoder.to(device, dtype)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if needs_cam and torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"explain with cam_mix={mix:g}, cam_exponent={gamma:g} (or return_cam=True) "
                "computes the seed CAM, which needs autograd: call it outside "
                "torch.inference_mode() (torch.no_grad() is fine), or pass cam_mix=0 and "
                "cam_exponent=0 for the decoder's map alone"
            )
        with frozen(self.model), frozen(self.decoder, requires_grad=True):
            if needs_cam:
                cam, feats = self.cam_and_features(images, wanted)
            else:
                feats = self.features(images, wanted)
            with torch.no_grad():
                logits = self.decode(self.decoder, feats, size)
                maps = torch.softmax(logits.float(), dim=1)[:, 1]
        maps = torch.nan_to_num(maps, nan=0.0)
        if gamma > 0 or mix > 0:
            maps = mix_with_cam(maps, cam.to(maps.dtype), gamma, mix)
        return (maps, cam) if return_cam else maps

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        loader: Iterable[Any],
        epochs: int = 10,
        lr: float = DEFAULT_LR,
        device: str | torch.device | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        progress: bool = True,
        *,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 1e-4,
        amp: bool = False,
        on_epoch_start: Any = None,
        val_loader: Iterable[Any] | None = None,
        select_by: str | None = "pxap",
        lr_schedule: str = DEFAULT_LR_SCHEDULE,
    ) -> list[dict[str, float]]:
        """Train the decoder on the frozen classifier (SGD; a cosine-annealed rate by default).

        Args:
            loader: iterable of batches: image tensors, ``(images, labels, ...)`` tuples, or
                dicts with ``"image"`` (and optionally ``"label"``, ``"raw"``/``"raw_image"``
                RGB in [0, 255] for the CRF). Without labels the prediction picks the CAM class.
            epochs: total number of epochs (including those restored with ``resume``).
            lr: SGD learning rate; with ``"cosine"`` the first epoch's (the paper: 0.01, constant).
            device: where to train; ``None`` = the model's device. The model is moved there for
                the run and moved back afterwards.
            checkpoint_dir: write ``fcam-last.pt`` there after every epoch (rank 0, atomic).
            resume: continue from the checkpoint in ``checkpoint_dir`` (same result as an
                uninterrupted run; restores optimizer, barrier, generator and global RNG states).
                The cosine schedule depends on ``epochs``: resuming with a larger ``epochs``
                continues on the longer run's schedule (a partial warm restart).
            progress: show a tqdm bar (rank 0) on a terminal or in a notebook; never when the
                stream is redirected to a file (:func:`fcam.core.progress.progress_bar`).
            momentum, nesterov, weight_decay: SGD options (paper: 0.9, True, 1e-4).
            amp: float16 autocast for the decoder on CUDA.
            on_epoch_start: called with the 0-based epoch index before each epoch (e.g.
                ``DistributedSampler.set_epoch``).
            val_loader: a few annotated images (``(images, labels, masks)`` tuples or dicts
                with ``"image"``/``"label"``/``"mask"``; masks ``(B, H, W)`` in {0, 1}), scored
                after every epoch (:mod:`fcam.explainer.selection`).
            select_by: ``"pxap"``: keep the decoder of the epoch with the best validation
                PxAP and restore it at the end; ``None``: only report the scores.
            lr_schedule: ``"cosine"`` (annealed per epoch over ``epochs``,
                :func:`fcam.explainer.trainer.epoch_lr`) or ``"constant"`` (the published run).

        Returns:
            The history: one dict per epoch with the mean loss parts, ``t``, the epoch's
            ``lr``, timing, the foreground share of the maps (``fg_share``, ``fg_share_std``)
            and of the seed CAM (``cam_fg_share``), and with ``val_loader`` ``val_pxap`` /
            ``val_avg_drop``. A logged warning fires when the maps collapse to one label or
            grow far past the seed CAM's foreground at the last epoch or for 3 epochs in a row
            (:func:`~fcam.explainer.selection.collapse_alert`; early epochs that recover are
            logged at INFO level).

        Raises:
            ValueError: empty loader, bad batches/labels, unwritable ``checkpoint_dir``, a
                missing checkpoint with ``resume=True``, ``amp`` without CUDA, no seed CAM, a
                ``val_loader`` with bad masks or without masks for ``select_by="pxap"``.
            FloatingPointError: a loss term became NaN/inf (named in the message); no
                checkpoint is written for that epoch.
        """
        options = TrainOptions(
            epochs, lr, momentum, nesterov, weight_decay, amp, progress, on_epoch_start,
            val_loader, select_by, lr_schedule,
        )
        if hasattr(loader, "__len__") and len(loader) == 0:  # type: ignore[arg-type]
            raise ValueError("loader is empty")
        if not isinstance(loader, Iterable):
            raise TypeError(f"loader must be iterable, got {type(loader).__name__}")
        if self.cam_fn is None:
            raise ValueError("fit needs a seed cam: pass cam= to FCAM(...) or FCAM.load(...)")
        home = model_device(self.model)
        target = home if device is None else torch.device(device)
        ckpt = checkpoint_path(checkpoint_dir, resume)
        try:
            return Trainer(self, options, target, ckpt).run(loader, resume)
        finally:
            self.decoder.eval()
            self.model.to(home)
            self.decoder.to(home)
            self.loss.to(home)

    # ------------------------------------------------------------------ persistence
    def payload(self) -> dict[str, Any]:
        """The checkpoint content (:mod:`fcam.explainer.checkpoint`) without training state."""
        return persistence.payload(self)

    def check_compatible(self, payload: Mapping[str, Any], path: Path | str) -> None:
        """Raise ``ValueError`` unless ``payload`` was trained for this classifier and pyramid."""
        persistence.check_compatible(self, payload, path)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write decoder weights, configuration and classifier fingerprint to one file (atomic).

        A custom ``cam`` or ``output_fn`` is stored as an import reference when it is a
        module-level function; otherwise pass it again to :meth:`load` (a warning says so).

        Raises:
            NotFittedError: nothing to save before :meth:`fit`.
            ValueError: the folder of ``path`` does not exist.
        """
        if not self.fitted:
            raise NotFittedError("FCAM.save needs a trained decoder: call fit() first")
        if self.config.cam is None and self.config.cam_ref is None:
            logger.warning("the seed cam is not importable: pass cam= to FCAM.load to fit again")
        if self.output_fn is not None and self.config.output_fn_ref is None:
            logger.warning("output_fn is not importable: pass output_fn= to FCAM.load")
        write_checkpoint(self.payload(), path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: nn.Module,
        cam: Any = None,
        output_fn: OutputFn | None = None,
        **overrides: Any,
    ) -> FCAM:
        """Rebuild an :class:`FCAM` saved with :meth:`save` (or a fit checkpoint) for ``model``.

        Args:
            path: the file.
            model: the classifier; its fingerprint must match the saved one.
            cam: seed CAM for ``return_cam``/further fitting; default: the saved name or
                import reference.
            output_fn: default: the saved import reference.
            **overrides: :class:`~fcam.explainer.FCAMConfig` options to change.

        Raises:
            ValueError: missing, corrupt or foreign file, or a mismatching classifier.
        """
        return persistence.load(cls, path, model, cam, output_fn, overrides)

