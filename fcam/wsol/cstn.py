r"""CSTN: the convolutional spatial transformer network (Meethal et al., ICPR 2020).

The last classification convolution becomes a spatial transformer. On the STN input
:math:`X` (the backbone's stride-16 stage after a ReLU, conv3×3 and batch norm, resampled to
``grid × grid``), a localisation net (conv k×k same, ReLU, conv k×k *valid* to 6 channels,
zero-initialised, plus the identity) predicts one affine :math:`\theta_{ij}` per position of
a valid k×k convolution. Each position's k×k window is warped by its :math:`\theta_{ij}`,
sampled bilinearly (one vectorised ``grid_sample`` for all positions), flattened and
classified (linear to ``width``, ReLU, linear to the classes): scores :math:`S_{cij}`.

.. math::
    p(c, i, j) = \operatorname{softmax}_{(c,i,j)} S, \qquad p(c) = \sum_{ij} p(c, i, j),
    \qquad \mathcal L = -\log p(y) + \lambda_\theta \sum_{b,i,j} \lVert I - \theta_{bij}
    \rVert_F^2

The native output is a box (:meth:`CSTNModel.boxes`): the warped window of the most probable
position of the class. :meth:`CSTNModel.cams` gives a map so that MaxBoxAcc and PxAP are
defined: the union of all warped windows, each weighted by :math:`p(i, j \mid c)`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.core.state import frozen
from fcam.core.targets import Targets, parse_targets
from fcam.core.validation import check_images, check_int
from fcam.wsol.model import WSOLModel

__all__ = ["CSTNModel", "ConvSTN", "build_cstn", "window_grid"]

#: Resolution of :meth:`CSTNModel.cams` relative to the STN grid.
RENDER_SCALE = 4


def _base(k: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The k cell centres of ``[-1, 1]``: ``(2a + 1) / k - 1``."""
    return (2 * torch.arange(k, device=device, dtype=dtype) + 1) / k - 1


def window_grid(theta: Tensor, kernel: int, size: tuple[int, int]) -> Tensor:
    r"""``grid_sample`` coordinates of every position's warped k×k window, in one grid.

    Position :math:`(i, j)` maps the cell centres :math:`(u, v)` of ``[-1, 1]²`` through
    :math:`\theta_{ij}` and places them around the window's centre in map pixels:

    .. math::
        (p_x, p_y) = \big(j + \tfrac{k-1}{2},\ i + \tfrac{k-1}{2}\big)
        + \tfrac{k}{2}\,\theta_{ij}\,(u, v, 1)^\top

    then normalises them for ``align_corners=False``. At :math:`\theta = I` the points are the
    pixel centres ``i..i+k-1`` × ``j..j+k-1``: the receptive window of a valid k×k conv.

    Example:
        >>> theta = torch.eye(2, 3).expand(1, 1, 1, 2, 3)     # one position, identity
        >>> window_grid(theta, 2, (2, 2))[0, ..., 0]           # x of the 2x2 window of a 2x2 map
        tensor([[-0.5000,  0.5000],
                [-0.5000,  0.5000]])

    Args:
        theta: ``(B, H', W', 2, 3)`` affine transforms (x row first).
        kernel: window side k.
        size: ``(H, W)`` of the sampled map.

    Returns:
        ``(B, H'·k, W'·k, 2)``: row ``i·k + b``, column ``j·k + a`` holds point ``(a, b)`` of
        position ``(i, j)``.
    """
    b, hp, wp = theta.shape[:3]
    base = _base(kernel, theta.device, theta.dtype)
    v, u = torch.meshgrid(base, base, indexing="ij")
    points = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (k, k, 3): x, y, 1
    offsets = torch.einsum("nijrc,yxc->nijyxr", theta, points) * (kernel / 2)  # (B,H',W',k,k,2)
    half = (kernel - 1) / 2
    rows = torch.arange(hp, device=theta.device, dtype=theta.dtype).view(1, -1, 1, 1, 1) + half
    cols = torch.arange(wp, device=theta.device, dtype=theta.dtype).view(1, 1, -1, 1, 1) + half
    px = (offsets[..., 0] + cols) * 2 / size[1] + 1 / size[1] - 1
    py = (offsets[..., 1] + rows) * 2 / size[0] + 1 / size[0] - 1
    grid = torch.stack([px, py], dim=-1)  # (B, H', W', k, k, 2)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(b, hp * kernel, wp * kernel, 2)


class ConvSTN(nn.Module):
    """The convolutional spatial transformer head (module docstring).

    Example:
        >>> stn = ConvSTN(8, 3, kernel=3, width=16, grid=5)
        >>> out = stn(torch.rand(2, 8, 5, 5))
        >>> out["scores"].shape, out["theta"].shape
        (torch.Size([2, 3, 3, 3]), torch.Size([2, 3, 3, 2, 3]))

    Args:
        in_channels: channels of the STN input.
        num_classes: classes.
        kernel: window side k (7: an 8×8 position grid on a 14×14 map).
        width: hidden width of the patch classifier.
        grid: the STN input is resampled to ``grid × grid`` (14, a 224 px input at stride 16).
    """

    def __init__(self, in_channels: int, num_classes: int, kernel: int = 7, width: int = 1024,
                 grid: int = 14) -> None:
        super().__init__()
        check_int(kernel, "cstn_kernel")
        check_int(grid, "cstn_grid")
        if kernel > grid:
            raise ValueError(f"cstn_kernel ({kernel}) must not exceed cstn_grid ({grid})")
        self.kernel, self.grid = kernel, grid
        self.adapter = nn.Sequential(nn.ReLU(), nn.Conv2d(in_channels, in_channels, 3, padding=1),
                                     nn.BatchNorm2d(in_channels))
        self.localisation = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel, padding="same"), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, 6, kernel, bias=False))
        nn.init.zeros_(self.localisation[-1].weight)  # type: ignore[arg-type]  # θ = I at initialisation
        self.patch = nn.Linear(in_channels * kernel * kernel, width)
        self.classifier = nn.Linear(width, num_classes)

    def stn_input(self, features: Tensor) -> Tensor:
        """The adapted features at ``grid × grid``."""
        x = self.adapter(features)
        if tuple(x.shape[-2:]) != (self.grid, self.grid):
            x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        return x

    def theta(self, x: Tensor) -> Tensor:
        """``(B, H', W', 2, 3)`` transforms: the localisation net's output plus the identity."""
        delta = self.localisation(x).permute(0, 2, 3, 1).unflatten(-1, (2, 3))
        return delta + torch.eye(2, 3, device=x.device, dtype=x.dtype)

    def patches(self, x: Tensor, theta: Tensor) -> Tensor:
        """The warped windows, ``(B, H', W', C·k·k)`` in :func:`torch.nn.functional.unfold`'s order."""
        k = self.kernel
        b, c = x.shape[:2]
        hp, wp = theta.shape[1:3]
        sampled = F.grid_sample(x, window_grid(theta, k, (x.shape[-2], x.shape[-1])), mode="bilinear",
                                padding_mode="zeros", align_corners=False)
        return sampled.view(b, c, hp, k, wp, k).permute(0, 2, 4, 1, 3, 5).reshape(b, hp, wp, c * k * k)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """``scores`` ``(B, K, H', W')``, ``log_joint`` (log p(c, i, j)), ``theta``."""
        x = self.stn_input(features)
        theta = self.theta(x)
        hidden = F.relu(self.patch(self.patches(x, theta)))
        scores = self.classifier(hidden).permute(0, 3, 1, 2)
        log_joint = F.log_softmax(scores.flatten(1), dim=1).view_as(scores)
        return {"scores": scores, "log_joint": log_joint, "theta": theta}


def _corners(theta: Tensor, kernel: int) -> tuple[Tensor, Tensor]:
    """x and y (map pixel-edge coordinates) of the 4 warped corners, ``(B, H', W', 4)`` each."""
    hp, wp = theta.shape[1:3]
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
                           device=theta.device, dtype=theta.dtype)
    warped = torch.einsum("bijrc,nc->bijnr", theta, corners) * (kernel / 2)
    half = (kernel - 1) / 2 + 0.5  # window centre, plus 0.5: pixel p spans [p, p + 1]
    xs = warped[..., 0] + torch.arange(wp, device=theta.device, dtype=theta.dtype).view(1, 1, -1, 1) + half
    ys = warped[..., 1] + torch.arange(hp, device=theta.device, dtype=theta.dtype).view(1, -1, 1, 1) + half
    return xs, ys


class CSTNModel(WSOLModel):
    """A backbone cut at its STN input plus :class:`ConvSTN`; build it with :func:`build_cstn`.

    ``forward`` gives :math:`\\log p(c)` as logits (their softmax is :math:`p(c)`).
    """

    def head_parameters(self) -> list[nn.Parameter]:
        """The new layers trained at 10× the learning rate: all but the localisation net.

        The localisation net stays at the base rate (the paper trains every layer at one
        rate): at 10× its θ jumps and the joint softmax collapses onto a few windows.
        """
        local = {id(p) for p in self.heads.localisation.parameters()}
        return [p for p in self.heads.parameters() if id(p) not in local]

    def outputs(self, images: Tensor) -> dict[str, Tensor]:
        """The head's outputs plus ``logits`` = log p(c)."""
        feats, _ = self.features(images)
        out: dict[str, Tensor] = self.heads(feats)
        out["logits"] = out["log_joint"].flatten(2).logsumexp(dim=2)
        return out

    def forward(self, images: Tensor) -> Tensor:
        """Class log-probabilities ``(B, K)``."""
        return self.outputs(images)["logits"]

    def forward_train(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """``logits``, ``scores``, ``log_joint`` and ``theta``."""
        return self.outputs(images)

    def training_loss(self, images: Tensor, labels: Tensor, options: Any) -> tuple[Tensor, Tensor]:
        """:math:`-\\log p(y) + \\lambda_\\theta \\sum \\lVert I - \\theta\\rVert_F^2` and the logits."""
        out = self.outputs(images)
        eye = torch.eye(2, 3, device=images.device, dtype=out["theta"].dtype)
        reg = (out["theta"] - eye).pow(2).sum()
        return F.nll_loss(out["logits"], labels) + options.cstn_theta_weight * reg, out["logits"]

    def _eval(self, images: Tensor, targets: Targets) -> tuple[dict[str, Tensor], Tensor]:
        check_images(images)
        with frozen(self, requires_grad=True):
            out = self.outputs(images)
        parsed = parse_targets(targets, images.shape[0], self.num_classes)
        wanted = out["logits"].argmax(1) if parsed is None else parsed.to(images.device)
        return out, wanted

    @torch.no_grad()
    def boxes(self, images: Tensor, targets: Targets = None) -> Tensor:
        """CSTN's native output: ``(B, 4)`` boxes ``x0, y0, x1, y1`` in input pixels.

        The warped window of :math:`\\arg\\max_{ij} p(c, i, j)` for the class ``c`` of
        ``targets`` (default the predicted class), clamped to the image.
        """
        out, wanted = self._eval(images, targets)
        rows = torch.arange(images.shape[0], device=images.device)
        joint = out["log_joint"][rows, wanted].flatten(1)  # (B, H'W')
        best = joint.argmax(dim=1)
        xs, ys = _corners(out["theta"], self.heads.kernel)
        xs, ys = xs.flatten(1, 2)[rows, best], ys.flatten(1, 2)[rows, best]  # (B, 4)
        height, width = images.shape[-2:]
        sx, sy = width / self.heads.grid, height / self.heads.grid
        box = torch.stack([xs.amin(1) * sx, ys.amin(1) * sy, xs.amax(1) * sx, ys.amax(1) * sy], dim=1)
        limit = torch.tensor([width, height, width, height], device=box.device, dtype=box.dtype)
        return torch.minimum(box.clamp_min(0), limit).float()

    @torch.no_grad()
    def cams(self, images: Tensor, targets: Targets = None) -> Tensor:
        r"""The union of the warped windows weighted by :math:`p(i, j \mid c)`, ``(B, h, w)``.

        A pixel's value is the probability, over the positions of class ``c``, that its window
        covers the pixel: :math:`M(x) = \sum_{ij} p(i, j \mid c)\,[x \in W_{ij}]`. It is
        rendered at ``RENDER_SCALE ×`` the STN grid (56 × 56 by default).
        """
        out, wanted = self._eval(images, targets)
        rows = torch.arange(images.shape[0], device=images.device)
        joint = out["log_joint"][rows, wanted].flatten(1)
        weights = torch.softmax(joint, dim=1)  # p(i, j | c)
        theta = out["theta"].flatten(1, 2).float()  # (B, P, 2, 3)
        k, grid = self.heads.kernel, self.heads.grid
        hp, wp = out["theta"].shape[1:3]
        centres = torch.stack(torch.meshgrid(
            torch.arange(hp, device=images.device, dtype=torch.float32),
            torch.arange(wp, device=images.device, dtype=torch.float32), indexing="ij"), dim=-1)
        centres = (centres.flatten(0, 1) + (k - 1) / 2).flip(-1)  # (P, 2) as x, y
        size = grid * RENDER_SCALE
        coords = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / RENDER_SCALE - 0.5
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        pixels = torch.stack([xx, yy], dim=-1).view(1, 1, -1, 2)  # pixel-centre map coordinates
        rel = (pixels - centres.view(1, -1, 1, 2)) / (k / 2) - theta[..., :, 2].unsqueeze(2)
        a = theta[..., :2]
        det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
        usable = det.abs() > 1e-6  # a flat window covers no area
        inv = torch.stack([torch.stack([a[..., 1, 1], -a[..., 0, 1]], -1),
                           torch.stack([-a[..., 1, 0], a[..., 0, 0]], -1)], -2)
        inv = inv / torch.where(usable, det, torch.ones_like(det))[..., None, None]
        uv = torch.einsum("bprc,bpnc->bpnr", inv, rel)
        inside = (uv.abs().amax(dim=-1) <= 1) & usable[..., None]
        maps = (weights.float()[..., None] * inside).sum(dim=1)
        return maps.view(-1, size, size)

    @property
    def num_classes(self) -> int:
        """Number of classes of the patch classifier."""
        return int(self.heads.classifier.out_features)


def build_cstn(model: nn.Module, num_classes: int, layer: str, early_layer: str, channels: int,
               *, width: int = 1024, cstn_kernel: int = 7, cstn_grid: int = 14) -> CSTNModel:
    """CSTN on a deep copy of ``model`` reading ``layer`` (called by :func:`fcam.wsol.build`).

    Args:
        model: the classifier.
        num_classes: classes.
        layer: the STN input (the stride-16 stage by default in :func:`fcam.wsol.build`).
        early_layer: the stage before ``layer``.
        channels: channels of ``layer``.
        width: hidden width of the patch classifier.
        cstn_kernel: window side k (7).
        cstn_grid: side of the resampled STN input (14).
    """
    head = ConvSTN(channels, num_classes, cstn_kernel, width, cstn_grid)
    return CSTNModel(copy.deepcopy(model), "cstn", layer, early_layer, head)
