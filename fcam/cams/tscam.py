r"""TS-CAM: token semantic coupled attention maps (Gao et al., ICCV 2021).

TS-CAM couples two maps over the patch tokens of a vision transformer with a class token:

* the *semantic-agnostic attention map*, the attention paid by the class token to every
  patch token, averaged over heads and summed over the blocks,

  .. math:: A(i) = \sum_{b} \frac{1}{H}\sum_{h} \mathrm{softmax}\Big(\frac{q^{b,h}_{cls}\,
     {k^{b,h}}^\top}{\sqrt d}\Big)(i),

* the *semantic-aware map* of class :math:`c`, the classifier applied to every patch token
  (TS-CAM trains a convolutional head on the tokens for this; a standard ViT's linear head
  :math:`W` applied to the final normalised tokens :math:`X(i)` is the same construction),

  .. math:: S_c(i) = W_c^\top X(i),

and returns :math:`\mathrm{ReLU}\big(A(i)\,S_c(i)\big)` on the patch grid (``vasgaowei/TS-CAM``,
``lib/models/deit.py``: ``cams = attn_weights.sum(0)[:, 0, 1:] * feature_map``).

It applies **only to models with a class token** (torchvision ``VisionTransformer``, timm
ViT/DeiT): the attention weights are recomputed from each block's attention module
(``nn.MultiheadAttention``, or any module with a ``qkv`` linear layer and ``num_heads``, as in
timm), so fused attention kernels that do not return weights are fine. Other models get a
``ValueError`` that says what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.cams.base import _CAM, _Forward, _rejected_images
from fcam.core.layers import OutputFn, probe_model, resolve_layer
from fcam.core.tokens import output_layout, to_nchw, token_blocks

__all__ = ["TSCAM"]


def _is_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    return isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(
        getattr(module, "num_heads", None), int
    )


def _class_attention(module: nn.Module, x: Tensor) -> Tensor:
    """Head-averaged attention of query token 0 over all tokens: ``(B, T)``."""
    if isinstance(module, nn.MultiheadAttention):
        if not module.batch_first:
            x = x.transpose(0, 1)
        bsz, tokens, _ = x.shape
        heads = module.num_heads
        if module.in_proj_weight is not None:
            wq, wk, _ = module.in_proj_weight.chunk(3)
        else:
            wq, wk = module.q_proj_weight, module.k_proj_weight
        bq = bk = None
        if module.in_proj_bias is not None:
            bq, bk, _ = module.in_proj_bias.chunk(3)
        q = F.linear(x[:, :1], wq, bq).reshape(bsz, 1, heads, -1).transpose(1, 2)
        k = F.linear(x, wk, bk).reshape(bsz, tokens, heads, -1).transpose(1, 2)
        scale = 1.0 / math.sqrt(q.shape[-1])
    else:
        bsz, tokens, _ = x.shape
        heads = int(module.num_heads)  # type: ignore[arg-type]
        qkv = module.qkv(x).reshape(bsz, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)  # type: ignore[operator]
        q, k = qkv[0], qkv[1]
        for norm, attr in ((getattr(module, "q_norm", None), "q"), (getattr(module, "k_norm", None), "k")):
            if isinstance(norm, nn.Module):
                if attr == "q":
                    q = norm(q)
                else:
                    k = norm(k)
        q = q[:, :, :1]
        scale = float(getattr(module, "scale", 1.0 / math.sqrt(q.shape[-1])))
    attn = torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)  # (B, heads, 1, T)
    return attn.mean(dim=1)[:, 0]


class TSCAM(_CAM):
    """TS-CAM (formulas in the module docstring); only for transformers with a class token.

    Example:
        >>> import torch, torchvision
        >>> vit = torchvision.models.vit_b_16(weights=None, image_size=32, num_classes=3)
        >>> TSCAM(vit)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 2, 2])

    Args:
        model: the classifier (torchvision ``VisionTransformer``, timm ViT/DeiT, or any model
            whose repeated blocks hold ``nn.MultiheadAttention`` or timm-style attention).
        target_layer: the token layer the classifier head is applied to; ``None`` = the last
            token output of the model (the final norm: ``encoder.ln``, timm ``norm``).
        last_blocks: number of final blocks whose class attention is summed; ``None`` = all
            blocks (TS-CAM).
        fc_layer: the classification ``nn.Linear`` (module or name); ``None`` = the last linear
            layer with one output per class.
        output_fn, reshape_transform: as in :class:`~fcam.cams.GradCAM`.

    Raises:
        ValueError: (on the first call) a model without a class token, without attention
            blocks, or without a linear classifier on the tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        *,
        last_blocks: int | None = None,
        fc_layer: nn.Module | str | None = None,
        output_fn: OutputFn | None = None,
        reshape_transform: Any = None,
    ) -> None:
        super().__init__(model, target_layer, output_fn=output_fn, reshape_transform=reshape_transform)
        if last_blocks is not None and (not isinstance(last_blocks, int) or last_blocks < 1):
            raise ValueError(f"`last_blocks` must be a positive int or None, got {last_blocks!r}")
        self.last_blocks = last_blocks
        self.fc: nn.Linear | None = None
        if fc_layer is not None:
            _, fc = resolve_layer(model, fc_layer)
            if not isinstance(fc, nn.Linear):
                raise ValueError(f"`fc_layer` must be an nn.Linear, got {type(fc).__name__}")
            self.fc = fc
        self.attentions: list[nn.Module] | None = None
        self.prefix: int | None = None
        self._attn: list[Tensor] = []

    # ------------------------------------------------------------------ setup
    def _setup(self, images: Tensor) -> None:
        """Find the token layer, the attention modules, the head and the class token."""
        with _rejected_images(images):
            probe = probe_model(self.model, images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        name = type(self.model).__name__
        if self.target_layer is None:
            tokens = [
                e for e in probe.events
                if e.name and (lay := output_layout(e.shape, size)) is not None and lay.layout == "tokens"
            ]  # fmt: skip
            if not tokens:
                raise ValueError(
                    f"tscam applies only to vision transformers with a class token; {name} "
                    "outputs no token sequence (N, T, C); use another CAM method"
                )
            self.target_name, self.target_layer = resolve_layer(self.model, tokens[-1].name)
        event = probe.event(self.target_name or "")
        lay = output_layout(None if event is None else event.shape, size)
        if lay is None or lay.layout != "tokens" or lay.prefix < 1:
            raise ValueError(
                f"tscam applies only to models with a class token: `target_layer` "
                f"{self.target_name!r} of {name} does not output (N, 1 + h*w, C) tokens"
            )
        self.prefix = lay.prefix
        modules = dict(self.model.named_modules())
        blocks = token_blocks(self.model, probe)
        attentions = [
            [m for m in modules[b].modules() if _is_attention(m)][:1] for b in blocks
        ]
        found = [a[0] for a in attentions if a]
        if not found:
            raise ValueError(
                f"tscam found no attention module (nn.MultiheadAttention or a module with `qkv` "
                f"and `num_heads`) in the blocks of {name}; it applies only to ViT-like models "
                "with a class token"
            )
        self.attentions = found if self.last_blocks is None else found[-self.last_blocks :]
        if self.fc is None:
            classes = probe.num_classes(self.output_fn)
            assert event is not None and event.shape is not None  # a token output was found above
            width = int(event.shape[-1])
            linears = [
                e for e in probe.events
                if isinstance(modules.get(e.name), nn.Linear)
                and modules[e.name].out_features == classes
                and modules[e.name].in_features == width
            ]  # fmt: skip
            if not linears:
                raise ValueError(
                    f"tscam found no nn.Linear classifier with {classes} outputs on the "
                    f"{width}-dim tokens of {name}; pass `fc_layer`"
                )
            self.fc = modules[linears[-1].name]  # type: ignore[assignment]

    @contextmanager
    def _attention_hooks(self) -> Iterator[None]:
        self._attn = []

        def hook(module: nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
            with torch.no_grad():
                self._attn.append(_class_attention(module, inputs[0].detach()))

        handles = [m.register_forward_hook(hook) for m in self.attentions or []]
        self._handles.extend(handles)
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
                self._handles.remove(handle)

    def _locate(self, images: Tensor) -> None:
        self._setup(images)

    def _forward(self, images: Tensor, targets: Tensor | None, *, grad: bool, features: Any = ()) -> _Forward:
        if self.attentions is None:
            self._setup(images)
        with self._attention_hooks():
            fwd = super()._forward(images, targets, grad=grad, features=features)
        return fwd

    def _reshape_for(self, leaf: Tensor, images: Tensor) -> Any:
        reshape = super()._reshape_for(leaf, images)
        if self.reshape_transform is None and self.prefix is not None and leaf.ndim == 3:
            size = (int(images.shape[-2]), int(images.shape[-1]))
            return partial(to_nchw, layout="tokens", size=size, prefix=self.prefix)
        return reshape

    # ------------------------------------------------------------------ weights
    def _weights(self, fwd: _Forward) -> Tensor:
        if not self._attn:
            raise ValueError(f"tscam: no attention module ran during the forward of {type(self.model).__name__}")
        prefix = int(self.prefix or 1)
        attention = torch.stack(self._attn).sum(0)[:, prefix:]  # (B, h*w)
        b, _, h, w = fwd.activations.shape
        attention = attention.reshape(b, 1, h, w).to(fwd.activations.dtype)
        assert self.fc is not None
        head = self.fc.weight[fwd.targets].to(fwd.activations.dtype)  # (B, C)
        return head[:, :, None, None] * attention

