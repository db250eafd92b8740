"""Gaussian filtering in a joint feature space, exact (brute force) or on a bilateral grid.

Both functions compute, for points with features ``f_i`` (already divided by their bandwidths)
and values ``v_j``,

.. math::
    (W v)_i = \\sum_j \\exp\\big(-\\tfrac12 \\lVert f_i - f_j \\rVert^2\\big)\\, v_j ,

the un-normalised Gaussian sum including ``j = i``.

* :func:`exact_gaussian_filter` evaluates it pair by pair in row chunks: O(N²) time, O(N·chunk)
  memory. It is the oracle.
* :func:`grid_gaussian_filter` splats the values onto a regular grid in feature space with
  multilinear weights, blurs the grid with a separable sampled Gaussian and slices it back with
  the same weights: ``W ≈ Pᵀ G P``. The approximation is symmetric (``P`` is used both ways and
  ``G`` is symmetric), so the gradient ``2 W S`` of a quadratic form stays consistent with the
  value. Time and memory are linear in N for a fixed feature range. Multilinear interpolation
  blurs by a tent on each side (variance ``h²/6`` each), so the grid Gaussian uses the
  remaining variance ``1 − h²/3`` and the amplitude ``1 / sqrt(1 − h²/3)`` per dimension;
  its position-dependent error (largest for points sitting on grid nodes versus cell centres)
  is reduced by averaging ``shifts`` grids offset along the diagonal by fractions of a cell,
  and by a symmetric diagonal correction ``D^{-1/2} Ŵ D^{-1/2}`` where ``D_i = Ŵ_ii`` (known in
  closed form from the point's position in its cell): the self-affinity becomes exactly 1 and
  pairs of identical colour (flat regions) get their colour factor right, which otherwise
  carries a systematic error of a few per cent.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor

__all__ = [
    "exact_gaussian_filter",
    "grid_gaussian_filter",
    "lowrank_gaussian_filter",
    "spatial_basis",
    "spatial_rank",
    "window_gaussian_filter",
]


def exact_gaussian_filter(features: Tensor, values: Tensor, chunk: int = 1024) -> Tensor:
    """Brute-force ``W v`` with ``W_ij = exp(-½‖f_i − f_j‖²)``.

    Args:
        features: (B, N, D) features scaled by their bandwidths.
        values: (B, N, C) values to filter.
        chunk: rows of ``W`` materialised at once (memory ``chunk · N``).

    Returns:
        (B, N, C) filtered values.

    Example:
        >>> f = torch.zeros(1, 3, 2); v = torch.ones(1, 3, 1)
        >>> exact_gaussian_filter(f, v).flatten().tolist()
        [3.0, 3.0, 3.0]
    """
    out = torch.empty_like(values)
    for start in range(0, features.shape[1], chunk):
        rows = features[:, start:start + chunk]
        # Differences, not |a|²+|b|²−2ab: no cancellation for nearby points.
        sq = (rows.unsqueeze(2) - features.unsqueeze(1)).pow(2).sum(-1)
        out[:, start:start + chunk] = torch.exp(-0.5 * sq) @ values
    return out


def _blur_first_axis(grid: Tensor, spacing: float, var: float) -> Tensor:
    """Convolve ``grid`` along dim 0 with the sampled Gaussian ``exp(−½ (t h)² / var) / √var``
    and move that axis last.

    Short axes use a dense (n, n) matrix product (fast BLAS); long ones a sum of shifted slices
    truncated at 4 standard deviations (neglected mass < 1e-4), so the cost stays
    O(cells · taps), linear in the grid size, for large images.
    """
    size = grid.shape[0]
    radius = math.ceil(4.0 * math.sqrt(var) / spacing)
    norm = 1.0 / math.sqrt(var)
    if size <= 3 * (2 * radius + 1):
        steps = torch.arange(size, dtype=grid.dtype, device=grid.device) * spacing
        kernel = torch.exp(-0.5 * (steps[:, None] - steps[None, :]) ** 2 / var) * norm
        return torch.tensordot(grid, kernel, dims=([0], [0]))
    out = grid * norm
    for t in range(1, radius + 1):
        tap = norm * math.exp(-0.5 * (t * spacing) ** 2 / var)
        out[t:].add_(grid[:-t], alpha=tap)
        out[:-t].add_(grid[t:], alpha=tap)
    return out.movedim(0, -1)


def _blur_variance(spacing: Tensor, nearest: Tensor) -> Tensor:
    """Grid-Gaussian variance left once splat and slice have blurred (tent: h²/6 each side,
    nearest: box, h²/12 each side)."""
    return 1.0 - spacing * spacing / torch.where(nearest, 6.0, 3.0).to(spacing)


def _cell_positions(features: Tensor, spacing: Tensor, offset: float,
                    nearest: Tensor) -> tuple[Tensor, Tensor]:
    """Integer cell (from 0 in each point set) and fractional position in the cell of each
    (..., N, D) point (0 on nearest-neighbour axes)."""
    pos = features / spacing + offset
    pos = torch.where(nearest, (pos + 0.5).floor(), pos)
    pos = pos - pos.amin(dim=-2, keepdim=True).floor()
    base = pos.floor()
    return base.long(), pos - base


def _self_affinity(frac: Tensor, spacing: Tensor, var: Tensor, dim: int = -1) -> Tensor:
    """``(Pᵀ G P)_ii`` per point: per axis (``dim`` of ``frac``)
    ``((1−u)² + u²) g0 + 2u(1−u) g1``, multiplied."""
    g0 = 1.0 / var.sqrt()
    g1 = g0 * torch.exp(-0.5 * spacing * spacing / var)
    lo = 1.0 - frac
    return ((lo * lo + frac * frac) * g0 + 2.0 * lo * frac * g1).prod(dim=dim)


def _grid_filter_once(features: Tensor, values: Tensor, spacing: Tensor, var: Tensor,
                      nearest: Tensor, offset: float) -> Tensor:
    """One splat / blur / slice pass for (B, N, D) features and (B, N, C) values.

    The B point sets share one grid allocation (each spans its own feature range; the grid
    has the largest extent), with the set index innermost: row ``cell · B + b``. All corners
    are handled by single fused ``index_add_`` / gather calls: few, large tensor ops, which
    matters for multi-threaded CPU runs where each op pays a synchronisation cost.
    """
    batch, npts, ndim = features.shape
    channels = values.shape[-1]
    base, frac = _cell_positions(features, spacing, offset, nearest)
    sizes = (base.amax(dim=(0, 1)) + 2).tolist()
    strides = [1] * ndim
    for d in range(ndim - 2, -1, -1):
        strides[d] = strides[d + 1] * sizes[d + 1]
    stride_t = torch.tensor(strides, device=features.device)
    set_index = torch.arange(batch, device=features.device)[:, None]
    origin = ((base * stride_t).sum(-1) * batch + set_index).reshape(1, -1)
    frac = frac.reshape(-1, ndim)

    # Corner offsets and multilinear weights, (M, B·N), built one axis at a time.
    offsets = torch.zeros(1, 1, dtype=torch.long, device=features.device)
    weights = torch.ones_like(frac[:, 0])[None]
    for d in range(ndim):
        if bool(nearest[d]):
            continue
        offsets = torch.cat((offsets, offsets + strides[d] * batch))
        weights = torch.cat((weights * (1 - frac[:, d]), weights * frac[:, d]))
    index = (origin + offsets).reshape(-1)

    grid = values.new_zeros(strides[0] * sizes[0] * batch, channels)
    flat_values = values.reshape(1, -1, channels)
    grid.index_add_(0, index, (weights[..., None] * flat_values).reshape(-1, channels))

    grid = grid.view(*sizes, batch, channels)
    for d in range(ndim):
        grid = _blur_first_axis(grid, float(spacing[d]), float(var[d]))
    # Each pass moved its axis last: the layout is now (B, C, n_0, ..., n_{D-1}).
    grid = grid.movedim((0, 1), (-2, -1)).reshape(-1, channels)

    out = (grid[index].view(-1, batch * npts, channels) * weights[..., None]).sum(0)
    return out.view(batch, npts, channels)


def grid_gaussian_filter(features: Tensor, values: Tensor, spacing: float | Tensor = 0.5,
                         shifts: int = 1, nearest: bool | Tensor = False) -> Tensor:
    """Approximate ``W v`` on a dense bilateral grid (splat / blur / slice).

    Args:
        features: (B, N, D) features scaled by their bandwidths.
        values: (B, N, C) values to filter.
        spacing: grid spacing in bandwidth units, scalar or per dimension (D,); must be < 1.7.
        shifts: number of grids, offset by ``s / shifts`` of a cell on every axis, averaged.
        nearest: per dimension (D,) or for all: splat/slice to the nearest node instead of
            multilinearly (halves the corners per such axis; use a finer spacing there).

    Returns:
        (B, N, C) filtered values.
    """
    batch, ndim = features.shape[0], features.shape[-1]
    spacing = torch.as_tensor(spacing, dtype=features.dtype).expand(ndim).to(features.device)
    nearest = torch.as_tensor(nearest, dtype=torch.bool).expand(ndim).to(features.device)
    var = _blur_variance(spacing, nearest)
    offsets = [s / shifts for s in range(shifts)]
    diag = torch.stack(
        [_self_affinity(_cell_positions(features, spacing, o, nearest)[1], spacing, var) for o in offsets]
    ).mean(0)
    norm = diag.rsqrt()[..., None]
    scaled = values * norm
    out = torch.zeros_like(values)
    # One grid per image: a shared grid must span the largest extent of every axis over the
    # batch, which measured about 2x slower on natural images; memory stays that of one image.
    for b in range(batch):
        part = slice(b, b + 1)
        for o in offsets:
            out[part] += _grid_filter_once(features[part], scaled[part], spacing, var, nearest, o)
    return out * (norm / shifts)


def window_gaussian_filter(features: Tensor, values: Tensor, sigma_xy: float,
                           radius: int) -> Tensor:
    """``W v`` on a pixel grid, summing only over pixels within a square ``radius`` window.

    For a small spatial bandwidth the spatial factor ``exp(-½ ((dx² + dy²) / σ_xy²))`` is
    negligible beyond a few ``σ_xy``: with ``radius = 4 σ_xy`` the neglected Gaussian mass is
    below 1.3e-4. Each pair is evaluated once (half of the offsets, used both ways). Time
    O(N · radius²), memory O(N).

    Args:
        features: (B, D, H, W) per-pixel non-spatial features (colours) scaled by their bandwidth.
        values: (B, C, H, W) values to filter.
        sigma_xy: spatial bandwidth in pixels.
        radius: window half-width in pixels.

    Returns:
        (B, C, H, W) filtered values.
    """
    height, width = values.shape[-2:]
    out = values.clone()  # the i = j term: weight exp(0) = 1
    for dy in range(min(radius, height - 1) + 1):
        for dx in range(-min(radius, width - 1), min(radius, width - 1) + 1):
            if dy == 0 and dx <= 0:
                continue
            # Pairs (p, p + (dy, dx)) with both pixels inside the image.
            ys, yt = slice(0, height - dy), slice(dy, height)
            xs = slice(max(0, -dx), width - max(0, dx))
            xt = slice(max(0, dx), width + min(0, dx))
            diff = features[..., ys, xs] - features[..., yt, xt]
            pair = torch.exp(-0.5 * (diff.pow(2).sum(1, keepdim=True)
                                     + (dx * dx + dy * dy) / (sigma_xy * sigma_xy)))
            out[..., ys, xs] += pair * values[..., yt, xt]
            out[..., yt, xt] += pair * values[..., ys, xs]
    return out


@functools.lru_cache(maxsize=16)
def _axis_eigenbasis(length: int, sigma: float) -> tuple[Tensor, Tensor]:
    """Eigenvalues (descending, relative to the largest) and scaled eigenvectors ``U`` of the
    ``length × length`` kernel ``K_ij = exp(−½ (i − j)² / σ²)``, so that ``K = U Uᵀ``."""
    steps = torch.arange(length, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (steps[:, None] - steps[None, :]) ** 2 / (sigma * sigma))
    eigvals, eigvecs = torch.linalg.eigh(kernel)
    eigvals, eigvecs = eigvals.flip(0).clamp_min(0.0), eigvecs.flip(1)
    return eigvals / eigvals[0], eigvecs * eigvals.sqrt()


@functools.lru_cache(maxsize=16)
def _kept_eigenpairs(height: int, width: int, sigma: float, tol: float) -> Tensor:
    """(R, 2) indices (row eigenpair, column eigenpair) whose relative product is >= ``tol``.

    Cached: the loss asks for it on every step to choose its path.
    """
    eig_y = _axis_eigenbasis(height, sigma)[0]
    eig_x = _axis_eigenbasis(width, sigma)[0]
    return (eig_y[:, None] * eig_x[None, :] >= tol).nonzero()


@functools.lru_cache(maxsize=16)
def _spatial_basis64(height: int, width: int, sigma: float, tol: float) -> Tensor:
    basis_y = _axis_eigenbasis(height, sigma)[1]
    basis_x = _axis_eigenbasis(width, sigma)[1]
    keep = _kept_eigenpairs(height, width, sigma, tol)
    basis = basis_y[:, keep[:, 0]][:, None, :] * basis_x[:, keep[:, 1]][None, :, :]
    return basis.reshape(height * width, -1)


def spatial_basis(height: int, width: int, sigma: float, tol: float = 1e-2,
                  dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    """Low-rank factor ``Φ`` (H·W, R) of the spatial Gaussian of a pixel grid: ``Φ Φᵀ ≈ K``
    with ``K_ij = exp(−½ ‖p_i − p_j‖² / σ²)`` (row-major pixels).

    ``K`` is the Kronecker product of the two 1-D kernels of the rows and columns, whose
    eigenvectors give the optimal low-rank factors; products of eigenpairs whose relative
    eigenvalue ``λ_a μ_b / (λ_0 μ_0)`` is at least ``tol`` are kept. For ``σ`` comparable to the
    image size a few terms suffice (``R = 8`` for 224² at σ = 100 with the default ``tol``);
    ``R`` grows like ``(size / σ)²``. Cached per (height, width, σ, tol).
    """
    basis = _spatial_basis64(int(height), int(width), float(sigma), float(tol))
    return basis.to(dtype=dtype, device=device)


def spatial_rank(height: int, width: int, sigma: float, tol: float = 1e-2) -> int:
    """Number of columns ``R`` of :func:`spatial_basis`, without building it."""
    return _kept_eigenpairs(int(height), int(width), float(sigma), float(tol)).shape[0]


def _sparse_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used for mm only
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size)


def _sparse_grid_filter(points: Tensor, values: Tensor, spacing: float) -> Tensor:
    """Splat / blur / slice on a dense grid for one point set, (D, N) coordinates (one row per
    axis, so per-axis operations run on contiguous rows), and (N, C) values.

    Same approximation as :func:`grid_gaussian_filter` (multilinear weights, sampled-Gaussian
    blur with the remaining variance, symmetric diagonal correction), organised for many
    channels: the splat and the slice are sparse-matrix products (``torch.sparse_csr``), and the
    splat needs a sort of the N base cells only (each of the ``2^D`` corners is the base cell
    shifted by a constant).
    """
    ndim, npts = points.shape
    channels = values.shape[1]
    device = points.device
    var = 1.0 - spacing * spacing / 3.0
    pos = points / spacing
    pos = pos - pos.amin(dim=1, keepdim=True).floor()
    base = pos.floor()
    frac = pos - base
    sizes = (base.amax(dim=1).long() + 2).tolist()
    strides = [math.prod(sizes[d + 1:]) for d in range(ndim)]
    ncells = strides[0] * sizes[0]
    # int32 indices halve the index traffic; torch's CSR kernels take either width.
    index_dtype = torch.int32 if ncells * 2 ** ndim < 2**31 else torch.int64
    stride_row = torch.tensor([strides], dtype=base.dtype, device=device)
    origin = (stride_row @ base)[0].to(index_dtype)

    # Multilinear corner weights, (2^D, N) (one contiguous row per corner), with the diagonal
    # correction folded in. Axis 0 (largest stride) is the most significant bit of the corner
    # number, so the offsets increase and each slice row has sorted columns.
    low = 1.0 - frac
    spacing_t, var_t = frac.new_tensor(spacing), frac.new_tensor(var)
    weights = _self_affinity(frac, spacing_t, var_t, dim=0).rsqrt()[None]
    offsets = [0]
    for d in range(ndim - 1, -1, -1):
        weights = torch.stack((weights * low[d], weights * frac[d])).view(-1, npts)
        offsets = [s + o for s in (0, strides[d]) for o in offsets]

    # Splat: one sort of the base cells; corner c lands at base + offsets[c].
    order = torch.argsort(origin, stable=True)
    crow = torch.zeros(ncells + 1, dtype=index_dtype, device=device)
    torch.cumsum(torch.bincount(origin, minlength=ncells), 0, out=crow[1:])
    col = order.to(index_dtype)
    sorted_weights = weights.index_select(1, order)
    grid = values.new_zeros(ncells, channels)
    for corner, offset in enumerate(offsets):
        # Base cells below ncells − offset hold every point (the grid has a one-cell margin),
        # so the truncated row pointer still ends at N: accumulate straight into the grid.
        row_ptr = crow[:ncells - offset + 1]
        part = _sparse_csr(row_ptr, col, sorted_weights[corner], (ncells - offset, npts))
        grid[offset:].addmm_(part, values)

    grid = grid.view(*sizes, channels)
    for _ in range(ndim):
        grid = _blur_first_axis(grid, spacing, var)
    grid = grid.movedim(0, -1).reshape(ncells, channels)

    # Slice: row i holds point i's 2^D corners.
    corners = origin[:, None] + torch.tensor(offsets, dtype=index_dtype, device=device)
    rows = torch.arange(0, npts * len(offsets) + 1, len(offsets), dtype=index_dtype,
                        device=device)
    slicer = _sparse_csr(rows, corners.view(-1), weights.t().reshape(-1), (npts, ncells))
    out = values.new_empty(npts, channels)
    return torch.addmm(out, slicer, grid, beta=0, out=out)  # beta=0: out is not read


def lowrank_gaussian_filter(colours: Tensor, values: Tensor, basis: Tensor,
                            spacing: float = 0.5) -> Tensor:
    """``W v`` for ``W_ij = k_xy(i, j) · exp(−½‖c_i − c_j‖²)`` with a low-rank spatial factor.

    With ``k_xy ≈ Φ Φᵀ`` (:func:`spatial_basis`), ``(W v)_i = Σ_r Φ_ir Σ_j k_c(i, j) Φ_jr v_j``:
    the values are multiplied by each basis column, filtered in colour space only (a 3-D grid,
    8 corners per point instead of 32 in 5-D), and recombined. Linear in N for a fixed rank.

    Args:
        colours: (B, N, D) colour features scaled by their bandwidth.
        values: (B, N, C) values.
        basis: (N, R) spatial factor.
        spacing: colour-grid spacing in bandwidth units.

    Returns:
        (B, N, C) filtered values.
    """
    batch, npts, channels = values.shape
    rank = basis.shape[1]
    out = torch.empty_like(values)
    column = basis[:, :, None]
    points = colours.transpose(1, 2).contiguous()  # (B, D, N); free for channel-first colours
    for b in range(batch):
        # Channel-major (N, C·R) layout: per-channel products and a batched contraction
        # vectorise well (a broadcast with a 2-wide innermost dimension does not).
        lifted = torch.cat([basis * values[b, :, c, None] for c in range(channels)], dim=1)
        filtered = _sparse_grid_filter(points[b], lifted, spacing).view(npts, channels, rank)
        out[b] = torch.bmm(filtered, column)[..., 0]
    return out
