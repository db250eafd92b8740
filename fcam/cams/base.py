"""Private base class shared by every extractor: the hooked forward and the map assembly.

Model plumbing (freezing, layer lookup, target parsing, input checks, feature capture) comes
from :mod:`fcam.core`; this module only adds what is specific to CAMs.
"""

from __future__ import annotations

import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from fcam.cams.maps import cam_to_size
from fcam.core.hooks import capture_features
from fcam.core.layers import OutputFn, model_logits, probe_model, resolve_layer
from fcam.core.state import frozen
from fcam.core.targets import Targets, parse_targets
from fcam.core.tokens import default_target_layer, output_layout, to_nchw
from fcam.core.validation import check_images

__all__: list[str] = []

logger = logging.getLogger(__name__)

ReshapeFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class _Forward:
    """What one hooked forward pass produced.

    Attributes:
        images: the (detached) model input.
        activations: ``(B, C, h, w)`` target-layer output after ``reshape_transform``.
        scores: ``(B,)`` target logits.
        targets: ``(B,)`` class indices on the images' device.
        grads: ``(B, C, h, w)`` gradient of ``scores.sum()`` w.r.t. ``activations``, or
            ``None`` when the pass ran without gradients.
        features: detached outputs of the modules a caller asked for (see
            :meth:`_CAM.with_features`), captured in this same forward.
    """

    images: Tensor
    activations: Tensor
    scores: Tensor
    targets: Tensor
    grads: Tensor | None
    features: dict[str, Tensor] = field(default_factory=dict)


class _CAM(ABC):
    """Base of all extractors.

    A call runs the model in eval mode with every parameter's ``requires_grad`` switched
    off (so backward never computes parameter gradients and ``.grad`` is never touched),
    captures the target layer's output with a forward hook registered for that pass only,
    and restores the model's modes and flags in ``finally``. Subclasses implement
    :meth:`_weights`; the base forms ``ReLU(sum_k w_k * A_k)``.

    The forward hook detaches the layer output into a fresh leaf (requiring grad only for
    gradient methods) and hands a *clone* of it to the rest of the network. The stored
    activation is therefore immune to in-place ops downstream (``ReLU(inplace=True)``),
    and ``torch.autograd.grad`` w.r.t. that leaf only backpropagates through the layers
    after the target. If the target layer runs several times in one forward, the last run
    is used.
    """

    _needs_grad: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        output_fn: OutputFn | None = None,
        reshape_transform: ReshapeFn | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        if output_fn is not None and not callable(output_fn):
            raise TypeError(f"`output_fn` must be callable, got {type(output_fn).__name__}")
        if reshape_transform is not None and not callable(reshape_transform):
            raise TypeError(
                f"`reshape_transform` must be callable, got {type(reshape_transform).__name__}"
            )
        self.model = model
        self.output_fn = output_fn
        self.reshape_transform = reshape_transform
        self.target_name: str | None = None
        self.target_layer: nn.Module | None = None
        if target_layer is not None:
            self.target_name, self.target_layer = resolve_layer(model, target_layer)
        self._handles: list[RemovableHandle] = []
        self._warned_blank = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> _CAM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove_hooks()

    def remove_hooks(self) -> None:
        """Remove any hook still registered by this extractor (calls already clean up)."""
        while self._handles:
            self._handles.pop().remove()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_layer={self.target_name!r})"

    # ------------------------------------------------------------------ public calls
    def __call__(self, images: Tensor, targets: Targets = None) -> Tensor:
        """Raw class activation maps at the target layer's resolution.

        Args:
            images: ``(B, C, H, W)`` float batch, already normalised for the model.
            targets: class per image: ``None`` (argmax), an int, a sequence, a 1-D tensor, a
                NumPy array, or objects with an integer ``category`` such as
                pytorch-grad-cam's ``ClassifierOutputTarget`` (:func:`fcam.core.parse_targets`).

        Returns:
            ``(B, h, w)`` float32 maps after the method's ReLU, on the images' device.

        Raises:
            RuntimeError: under ``torch.inference_mode()``.
            TypeError: on a non-tensor/non-float ``images`` or badly typed ``targets``.
            ValueError: on bad shapes, non-finite pixels, out-of-range ``targets``, or a
                target layer that is not run or not spatial.
        """
        return self.with_features(images, targets)[0]

    def with_features(
        self, images: Tensor, targets: Targets = None, features: Sequence[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Raw maps plus the outputs of the modules named in ``features``, from the same forward.

        The features come from the forward on the clean ``images`` (never from a noisy or
        masked copy), detached and cloned, so a caller that needs both the CAM and the
        classifier's feature pyramid (F-CAM's training step) runs the classifier once.

        Example:
            >>> from fcam.cams import GradCAM
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            ...                     nn.Flatten(), nn.Linear(4, 2))
            >>> with GradCAM(net, "1") as cam:
            ...     maps, feats = cam.with_features(torch.rand(2, 3, 8, 8), features=["0"])
            >>> tuple(maps.shape), tuple(feats["0"].shape)
            ((2, 6, 6), (2, 4, 6, 6))

        Args:
            images: as in :meth:`__call__`.
            targets: as in :meth:`__call__`.
            features: qualified module names to capture.

        Returns:
            ``(maps, {name: tensor})``.
        """
        maps, feats, _ = self.with_features_and_targets(images, targets, features)
        return maps, feats

    def with_features_and_targets(
        self, images: Tensor, targets: Targets = None, features: Sequence[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """:meth:`with_features` plus the ``(B,)`` classes the maps are for (the argmax of the
        same forward when ``targets`` is ``None``), so a caller needs no second forward to learn
        which class was explained."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "CAM extractors need autograd and cannot run under torch.inference_mode(); "
                "call them outside it (torch.no_grad() is fine)"
            )
        check_images(images)
        wanted = parse_targets(targets, images.shape[0])
        inputs = images.clone() if images.is_inference() else images.detach()
        try:
            with frozen(self.model):
                if self.target_layer is None:
                    self._locate(inputs)
                fwd = self._forward(inputs, wanted, grad=self._needs_grad, features=features)
                weights = self._weights(fwd)
                with torch.no_grad():
                    if weights.ndim == 2:
                        weights = weights[:, :, None, None]
                    cam = torch.relu((weights * fwd.activations).sum(dim=1))
        finally:
            self.remove_hooks()
        self._report_blank(cam)
        return cam.float(), fwd.features, fwd.targets

    def explain(
        self,
        images: Tensor,
        targets: Targets = None,
        size: int | Sequence[int] | None = None,
    ) -> Tensor:
        """Maps at the input size (or ``size``) in [0, 1], by :func:`fcam.cams.cam_to_size`.

        Example:
            >>> with GradCAM(model, "layer4") as cam:            # doctest: +SKIP
            ...     maps = cam.explain(images)                    # (B, H, W) in [0, 1]

        Args:
            images: ``(B, C, H, W)`` float batch.
            targets: as in :meth:`__call__`.
            size: output ``(H, W)``; defaults to the images' size.

        Returns:
            ``(B, H, W)`` float32 maps in ``[0, 1]``.
        """
        maps = self(images, targets)
        out_size = tuple(images.shape[-2:]) if size is None else size
        return cam_to_size(maps, out_size)

    # ------------------------------------------------------------------ family hook
    @abstractmethod
    def _weights(self, fwd: _Forward) -> Tensor:
        """Channel weights ``(B, C)`` or element-wise weights ``(B, C, h, w)``."""

    # ------------------------------------------------------------------ internals
    def _report_blank(self, cam: Tensor) -> None:
        # All-zero maps (every weighted activation negative, or dead gradients) are a
        # frequent source of confusion downstream; say so once per extractor.
        blank = int((cam.flatten(1).amax(dim=1) <= 0).sum())
        if blank and not self._warned_blank:
            self._warned_blank = True
            logger.warning(
                "%s: %d of %d maps are all zero at `target_layer` %r (the weighted sum is "
                "negative everywhere); normalize() will return zeros for them",
                type(self).__name__, blank, cam.shape[0], self.target_name,
            )

    def _locate(self, images: Tensor) -> None:
        with _rejected_images(images):
            name, _ = default_target_layer(self.model, probe_model(self.model, images))
        self.target_name, self.target_layer = resolve_layer(self.model, name)
        logger.info("%s: target_layer=None, using %r", type(self).__name__, name)

    def _logits(self, images: Tensor) -> Tensor:
        with _rejected_images(images):
            output = self.model(images)
        return model_logits(output, self.output_fn)

    def _forward(
        self, images: Tensor, targets: Tensor | None, *, grad: bool, features: Sequence[str] = ()
    ) -> _Forward:
        """Run the model once with the capture hook, pick the target scores, get gradients."""
        layer = self.target_layer
        assert layer is not None  # set in __init__ or by _locate
        store: dict[str, Any] = {}

        def capture(_module: nn.Module, _inputs: Any, output: Any) -> Tensor | None:
            if not isinstance(output, Tensor) or not output.is_floating_point():
                store["bad"] = type(output).__name__
                return None
            leaf = output.detach().requires_grad_(grad)
            store["leaf"] = leaf
            return leaf.clone()

        handle = layer.register_forward_hook(capture)
        self._handles.append(handle)
        try:
            with capture_features(self.model, features) as captured, torch.set_grad_enabled(grad):
                logits = self._logits(images)
        finally:
            handle.remove()
            self._handles.remove(handle)

        leaf = self._captured(store)
        reshape = self._reshape_for(leaf, images)
        with torch.no_grad():
            activations = leaf if reshape is None else reshape(leaf)
        if activations.ndim != 4:
            raise ValueError(
                f"`target_layer` {self.target_name!r} outputs shape {tuple(activations.shape)}, "
                "not a (B, C, h, w) spatial map, a channels-last map or a token grid of the input "
                f"{tuple(images.shape[-2:])}; pick another layer or pass `reshape_transform`"
            )
        chosen = _resolve_targets(targets, logits)
        grads = None
        with torch.set_grad_enabled(grad):
            scores = logits.gather(1, chosen[:, None]).squeeze(1)
            if grad:
                grads = self._gradients(scores, leaf, reshape)
        return _Forward(images, activations.detach(), scores.detach(), chosen, grads, dict(captured))

    def _captured(self, store: dict[str, Any]) -> Tensor:
        if "leaf" in store:
            return store["leaf"]
        if "bad" in store:
            raise ValueError(
                f"`target_layer` {self.target_name!r} returns {store['bad']}, not a float tensor"
            )
        raise ValueError(f"`target_layer` {self.target_name!r} was not run during the forward pass")

    def _reshape_for(self, leaf: Tensor, images: Tensor) -> ReshapeFn | None:
        """``reshape_transform``, else the automatic one for channels-last maps and token
        sequences (prefix tokens dropped, grid inferred from the input size by
        :func:`fcam.core.tokens.output_layout`), else ``None`` for ``(B, C, h, w)`` maps."""
        if self.reshape_transform is not None:
            return self.reshape_transform
        size = (int(images.shape[-2]), int(images.shape[-1]))
        layout = output_layout(leaf.shape, size)
        if layout is None or layout.layout == "nchw":
            return None
        return functools.partial(to_nchw, layout=layout.layout, size=size, prefix=layout.prefix)

    def _gradients(self, scores: Tensor, leaf: Tensor, reshape: ReshapeFn | None = None) -> Tensor:
        if not scores.requires_grad:
            raise ValueError(
                f"the target scores do not depend on `target_layer` {self.target_name!r}"
            )
        (grads,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
        if grads is None:
            raise ValueError(
                f"the target scores do not depend on `target_layer` {self.target_name!r}"
            )
        if reshape is not None:
            grads = reshape(grads)
        return grads


@contextmanager
def _rejected_images(images: Tensor) -> Iterator[None]:
    """Turn the model's own shape/channel errors into a ValueError naming ``images``."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        raise ValueError(f"the model rejected `images` of shape {tuple(images.shape)}: {exc}") from exc


def _resolve_targets(targets: Tensor | None, logits: Tensor) -> Tensor:
    """Argmax when ``targets`` is None, else range-check and move to the logits' device."""
    if targets is None:
        return logits.detach().argmax(dim=1)
    classes = logits.shape[1]
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise ValueError(f"`targets` {bad.tolist()} out of range for {classes} classes")
    return targets.to(logits.device)


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``, or None for torch's global RNG."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
