"""Reshape transforms turning token sequences into spatial grids (vision transformers)."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["vit_reshape_transform"]


def vit_reshape_transform(
    tokens: Tensor,
    prefix_tokens: int = 1,
    grid_size: tuple[int, int] | None = None,
) -> Tensor:
    """Turn ``(B, N, C)`` transformer tokens into a ``(B, C, h, w)`` grid.

    torchvision ``vit_*`` models prepend one class token, so by default the first token
    is skipped and the grid side is inferred from the remaining count:
    ``h = w = sqrt(N - prefix_tokens)``. Nothing is hard-coded at 14x14, so models built
    with another ``image_size`` or patch size work unchanged. Pass ``grid_size`` for a
    non-square grid and ``prefix_tokens`` for models with extra (register/distillation)
    tokens.

    Example:
        >>> model = torchvision.models.vit_b_16(weights=None)        # doctest: +SKIP
        >>> cam = GradCAM(model, "encoder.layers.encoder_layer_11.ln_1",
        ...               reshape_transform=vit_reshape_transform)   # doctest: +SKIP

    Args:
        tokens: ``(B, N, C)`` token tensor (batch first, as in torchvision).
        prefix_tokens: number of leading non-patch tokens to drop.
        grid_size: explicit ``(h, w)``; inferred when ``None``.

    Returns:
        ``(B, C, h, w)`` view-compatible grid (a permuted copy).

    Raises:
        ValueError: if the shape is not 3-D or the patch-token count does not fit the grid.
    """
    if tokens.ndim != 3:
        raise ValueError(f"`tokens` must be (B, N, C), got shape {tuple(tokens.shape)}")
    if prefix_tokens < 0 or prefix_tokens >= tokens.shape[1]:
        raise ValueError(f"`prefix_tokens`={prefix_tokens} leaves no patch tokens out of {tokens.shape[1]}")
    patches = tokens[:, prefix_tokens:, :]
    count = patches.shape[1]
    if grid_size is None:
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(
                f"cannot infer a square grid from {count} patch tokens; pass `grid_size` "
                f"or fix `prefix_tokens` (currently {prefix_tokens})"
            )
        grid_size = (side, side)
    height, width = grid_size
    if height * width != count:
        raise ValueError(f"`grid_size`={grid_size} does not hold {count} patch tokens")
    return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)
