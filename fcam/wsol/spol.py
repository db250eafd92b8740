r"""SPOL: shallow feature-aware pseudo supervised object localisation (Wei et al., CVPR 2021).

Two networks of one architecture, the *multiplicative feature fusion* network (MFF-Net): the
three deepest stages of a backbone are re-weighted by a multiplicative channel attention,
reduced to ``width`` channels, brought to the shallowest stage's size and multiplied element
by element, so the product fires only where the deep stage fires while keeping the shallow
stage's edges.

* stage 1 (``"cam"``): the class MFF-Net learns a CAM (a 1×1 conv with ReLU; its logits are
  the spatial means) with :math:`\frac12[\mathrm{CE}(z_5) + \mathrm{H}(\mathrm{sg}(
  \mathrm{softmax}\,z_5), z)]`, where :math:`z_5` reads the deepest stage alone and :math:`z`
  the fused features;
* pseudo masks: the label's CAM, enlarged by Gaussians fitted to its mid band
  (:func:`spol_pseudo_mask`), gives foreground :math:`(\mathrm{CAM} > 0.25) \lor
  (\mathrm{Gaus} > 0.25)`, background :math:`\mathrm{CAM} < 0.01`, the rest ignored;
* stage 2 (``"seg"``): a class-agnostic MFF-Net, started again from the original
  classifier's weights, learns those masks with a weighted BCE. Its sigmoid is the map.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam.core.state import frozen
from fcam.core.targets import Targets, parse_targets
from fcam.core.validation import check_images, check_int, check_number
from fcam.wsol.augment import check_probability
from fcam.wsol.model import WSOLModel

__all__ = ["MFFHead", "SPOLModel", "build_spol", "spol_pseudo_mask"]

#: Variance floor (pixels²) of a fitted Gaussian: a region one pixel thick stays finite.
_MIN_VARIANCE = 1e-6


def spol_pseudo_mask(cam: Tensor, low: float = 0.1, high: float = 0.5, shrink: float = 10.0,
                     *, min_area: float = 20.0) -> Tensor:
    r"""SPOL's Gaussian-prior map of a batch of CAMs.

    Each CAM is divided by its maximum; its mid band :math:`W = \mathrm{CAM}\cdot[\ell \le
    \mathrm{CAM} \le h]` is split into regions (outer OpenCV contours of :math:`W > 0`, filled;
    contours with an area under ``min_area`` pixels are dropped). With the region's weights
    :math:`w = W 1_R / \sum W 1_R`, its weighted moments

    .. math::
        \mu = \sum w\,(x, y), \quad s_x = \sum w\,(x-\mu_x)^2, \quad s_y = \sum w\,(y-\mu_y)^2,
        \quad s_{xy} = \sum w\,(x-\mu_x)(y-\mu_y)

    give a peak-1 Gaussian with the variances shrunk ``shrink`` times and the correlation
    :math:`\rho = s_{xy}/\sqrt{s_x s_y}` kept (:math:`\sigma^2 = s / \mathrm{shrink}`):

    .. math::
        G = \exp\Big(-\frac{1}{2(1-\rho^2)}\Big[\frac{d_x^2}{\sigma_x^2}
        - \frac{2\rho\, d_x d_y}{\sigma_x\sigma_y} + \frac{d_y^2}{\sigma_y^2}\Big]\Big)

    The map is the pixel-wise max over the regions (0 without any). Pixel centres are the
    integer coordinates, ``x`` the column.

    Example:
        >>> cam = torch.zeros(1, 32, 32)
        >>> cam[0, 8:24, 8:24] = 0.3                     # one mid-band square
        >>> cam[0, 15, 15] = 1.0
        >>> g = spol_pseudo_mask(cam)                  # one Gaussian centred on (15.5, 15.5)
        >>> g.shape, bool((g[0, 15:17, 15:17] > 0.8).all()), float(g[0, 0, 0])
        (torch.Size([1, 32, 32]), True, 0.0)

    Args:
        cam: ``(B, H, W)`` or ``(B, 1, H, W)`` non-negative CAMs, any scale.
        low, high: the mid band, ``0 <= low <= high <= 1`` (0.1, 0.5).
        shrink: the variances' divisor, ``> 0`` (10).
        min_area: smallest contour area kept, in pixels (20).

    Returns:
        The Gaussian-prior map, shaped like ``cam``, in ``[0, 1]``, float, on its device.

    Raises:
        ValueError: a threshold outside ``[0, 1]`` or ``low > high``, ``shrink <= 0``, a map
            that is not 3-D/4-D or not finite.
    """
    check_probability(low, "low")
    check_probability(high, "high")
    if low > high:
        raise ValueError(f"`low` ({low}) must not exceed `high` ({high})")
    check_number(shrink, "shrink", positive=True)
    check_number(min_area, "min_area", non_negative=True)
    if not isinstance(cam, Tensor) or cam.ndim not in (3, 4) or (cam.ndim == 4 and cam.shape[1] != 1):
        raise ValueError(f"`cam` must be a (B, H, W) or (B, 1, H, W) tensor, got {getattr(cam, 'shape', cam)}")
    if not torch.isfinite(cam).all():
        raise ValueError("`cam` has NaN or infinite values")
    maps = cam.detach().float().reshape(cam.shape[0], *cam.shape[-2:])
    peak = maps.flatten(1).amax(dim=1).view(-1, 1, 1)
    maps = torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))
    band = torch.where((maps >= low) & (maps <= high), maps, torch.zeros_like(maps))
    height, width = maps.shape[-2:]
    ys = torch.arange(height, device=maps.device, dtype=maps.dtype).view(1, -1, 1)
    xs = torch.arange(width, device=maps.device, dtype=maps.dtype).view(1, 1, -1)
    out = torch.zeros_like(maps)
    binaries = (band > 0).to(torch.uint8).cpu().numpy()
    for b, binary in enumerate(binaries):
        regions = _regions(binary, min_area)
        if regions is None:
            continue
        masks = torch.from_numpy(regions).to(maps.device)[None] == torch.arange(
            1, int(regions.max()) + 1, device=maps.device).view(-1, 1, 1)
        weight = band[b][None] * masks
        weight = weight / weight.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
        mx = (weight * xs).sum(dim=(1, 2)).view(-1, 1, 1)
        my = (weight * ys).sum(dim=(1, 2)).view(-1, 1, 1)
        dx, dy = xs - mx, ys - my
        sxx = (weight * dx * dx).sum(dim=(1, 2)).view(-1, 1, 1).clamp_min(_MIN_VARIANCE)
        syy = (weight * dy * dy).sum(dim=(1, 2)).view(-1, 1, 1).clamp_min(_MIN_VARIANCE)
        sxy = (weight * dx * dy).sum(dim=(1, 2)).view(-1, 1, 1)
        rho = (sxy / (sxx * syy).sqrt()).clamp(-1 + 1e-6, 1 - 1e-6)
        vx, vy = sxx / shrink, syy / shrink
        quad = dx * dx / vx - 2 * rho * dx * dy / (vx * vy).sqrt() + dy * dy / vy
        out[b] = torch.exp(-quad / (2 * (1 - rho * rho))).amax(dim=0)
    return out.reshape(cam.shape)


def _regions(binary: np.ndarray, min_area: float) -> np.ndarray | None:
    """Label image (1..R) of the filled outer contours of ``binary`` with area >= min_area."""
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    kept = [c for c in contours if cv2.contourArea(c) >= min_area]
    if not kept:
        return None
    labels = np.zeros(binary.shape, dtype=np.int32)
    for index, contour in enumerate(kept, start=1):
        cv2.drawContours(labels, [contour], -1, index, thickness=cv2.FILLED)
    return labels if labels.max() > 0 else None


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MFFHead(nn.Module):
    r"""MFF-Net's head on three backbone stages (shallow, middle, deep).

    Channel attention :math:`v = \prod_l \mathrm{ReLU}(\mathrm{BN}(W_l\,\mathrm{GAP}(o_l)))`,
    :math:`o_l \leftarrow \sigma(U_l v) \odot o_l`; reduction :math:`f_l = \mathrm{ReLU}(
    \mathrm{BN}(R_l o_l))` to ``width`` channels; fusion :math:`f = f_3 \odot \uparrow f_4
    \odot \uparrow f_5` (bilinear, aligned corners) with dropout; a 1×1 conv to ``out`` maps.

    Example:
        >>> head = MFFHead((4, 8, 16), out=3, width=8).eval()
        >>> maps = head([torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4), torch.rand(2, 16, 2, 2)])
        >>> maps["map"].shape, maps["map_deep"].shape
        (torch.Size([2, 3, 8, 8]), torch.Size([2, 3, 2, 2]))

    Args:
        channels: channels of the three stages, shallow first.
        out: output maps (the classes, or 1 for the segmentation net).
        width: reduced width (128 in the paper).
        dropout: dropout on the fused features in training (0.5).
        relu: a ReLU on the output maps (the CAM net; the segmentation net gives logits).
    """

    def __init__(self, channels: Sequence[int], out: int, width: int = 128, dropout: float = 0.5,
                 relu: bool = True) -> None:
        super().__init__()
        self.attention = nn.ModuleList(_conv_bn_relu(c, width) for c in channels)
        self.expand = nn.ModuleList(nn.Conv2d(width, c, 1) for c in channels)
        self.reduce = nn.ModuleList(_conv_bn_relu(c, width) for c in channels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(width, out, 1)
        self.relu = relu

    def _out(self, features: Tensor) -> Tensor:
        maps = self.classifier(features)
        return F.relu(maps) if self.relu else maps

    def forward(self, stages: Sequence[Tensor]) -> dict[str, Tensor]:
        """``map`` from the fused features, ``map_deep`` from the deepest stage alone."""
        v = torch.stack([att(o.mean(dim=(-2, -1), keepdim=True))
                         for att, o in zip(self.attention, stages)]).prod(dim=0)
        reduced = [red(torch.sigmoid(exp(v)) * o) for red, exp, o in zip(self.reduce, self.expand, stages)]
        size = reduced[0].shape[-2:]
        fused = reduced[0]
        for f in reduced[1:]:
            fused = fused * F.interpolate(f, size=size, mode="bilinear", align_corners=True)
        return {"map": self._out(self.dropout(fused)), "map_deep": self._out(reduced[-1])}


class _Stop(Exception):
    """Ends a backbone's forward at its deepest stage."""


def _stages(backbone: nn.Module, layers: Sequence[str], images: Tensor) -> list[Tensor]:
    """Outputs of ``layers`` (shallow first) in one forward of ``backbone``, stopped at the last."""
    modules = dict(backbone.named_modules())
    captured: dict[str, Tensor] = {}

    def keep(name: str, last: bool) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            captured[name] = output
            if last:
                raise _Stop
        return hook

    handles = [modules[name].register_forward_hook(keep(name, i == len(layers) - 1))
               for i, name in enumerate(layers)]
    try:
        backbone(images)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in layers if name not in captured]
    if missing:
        raise RuntimeError(f"stages {missing} did not run in the backbone's forward")
    return [captured[name] for name in layers]


class SPOLModel(WSOLModel):
    """SPOL's two MFF-Nets (see the module docstring); build it with :func:`build_spol`.

    ``forward`` gives the class MFF-Net's logits; :meth:`cams` the segmentation net's sigmoid
    (class-agnostic: ``targets`` is checked, then ignored); :meth:`class_cams` stage 1's CAM.

    Attributes:
        layers: the three backbone stages (shallow, middle, deep = ``feature_layer``).
        seg_backbone: the segmentation net's own copy of the original classifier.
        heads: ``{"cam": MFFHead(K classes), "seg": MFFHead(1 map)}``.
        stage: ``"cam"`` or ``"seg"``, the stage :meth:`training_loss` trains (set by
            :func:`fcam.wsol.train`).
    """

    def __init__(self, backbone: nn.Module, layers: Sequence[str], seg_backbone: nn.Module,
                 heads: nn.ModuleDict) -> None:
        super().__init__(backbone, "spol", layers[-1], layers[-2], heads)
        self.layers = list(layers)
        self.seg_backbone = seg_backbone
        self.stage = "cam"

    def _class_maps(self, images: Tensor) -> dict[str, Tensor]:
        return self.heads["cam"](_stages(self.backbone, self.layers, images))  # type: ignore[no-any-return]

    def seg_logits(self, images: Tensor) -> Tensor:
        """The segmentation net's ``(B, 1, h, w)`` logits (at the shallow stage's size)."""
        return self.heads["seg"](_stages(self.seg_backbone, self.layers, images))["map"]  # type: ignore[no-any-return]

    def forward(self, images: Tensor) -> Tensor:
        """Class logits ``(B, K)``: the spatial means of the fused CAM."""
        return self._class_maps(images)["map"].mean(dim=(-2, -1))

    def forward_train(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """Stage 1's outputs: ``logits`` (fused), ``logits_deep`` and ``class_map``."""
        maps = self._class_maps(images)
        return {"logits": maps["map"].mean(dim=(-2, -1)), "class_map": maps["map"],
                "logits_deep": maps["map_deep"].mean(dim=(-2, -1))}

    @torch.no_grad()
    def class_cams(self, images: Tensor, targets: Targets = None) -> Tensor:
        """Stage 1's ``(B, h, w)`` CAM of ``targets`` (default the predicted class), eval mode."""
        check_images(images)
        with frozen(self, requires_grad=True):
            maps = self._class_maps(images)["map"]
            parsed = parse_targets(targets, images.shape[0], self.num_classes)
            wanted = maps.mean(dim=(-2, -1)).argmax(1) if parsed is None else parsed.to(images.device)
            return maps[torch.arange(images.shape[0], device=images.device), wanted].float()

    @torch.no_grad()
    def cams(self, images: Tensor, targets: Targets = None) -> Tensor:
        """The segmentation net's sigmoid, ``(B, h, w)`` at the shallow stage's size."""
        check_images(images)
        parse_targets(targets, images.shape[0], self.num_classes)
        with frozen(self, requires_grad=True):
            return torch.sigmoid(self.seg_logits(images))[:, 0].float()

    def training_loss(self, images: Tensor, labels: Tensor, options: Any) -> tuple[Tensor, Tensor]:
        """The loss of :attr:`stage` and the class logits (module docstring)."""
        if images.shape[0] < 2:
            raise ValueError("SPOL trains on batches of at least 2 images (batch norm on pooled features)")
        if self.stage == "cam":
            out = self.forward_train(images)
            soft = F.softmax(out["logits_deep"].detach(), dim=1)
            distil = -(soft * F.log_softmax(out["logits"], dim=1)).sum(dim=1).mean()
            return (F.cross_entropy(out["logits_deep"], labels) + distil) / 2, out["logits"]
        if self.stage != "seg":
            raise ValueError(f"SPOL `stage` must be 'cam' or 'seg', got {self.stage!r}")
        size = tuple(images.shape[-2:])
        with torch.no_grad(), frozen(self.backbone), frozen(self.heads["cam"]):
            maps = self._class_maps(images)["map"]
            logits = maps.mean(dim=(-2, -1))
            cam = maps[torch.arange(images.shape[0], device=images.device), labels][:, None]
            cam = F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False)
            cam = cam / cam.flatten(1).amax(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)
            gaus = spol_pseudo_mask(cam, options.spol_low, options.spol_high, options.spol_shrink)
            foreground = (cam > options.spol_foreground) | (gaus > options.spol_foreground)
            valid = (foreground | (cam < options.spol_background)).to(images.dtype)
        seg = F.interpolate(self.seg_logits(images), size=size, mode="bilinear", align_corners=False)
        loss = F.binary_cross_entropy_with_logits(seg, foreground.to(seg.dtype), weight=valid)
        return loss, logits

    @property
    def num_classes(self) -> int:
        """Number of classes of the class MFF-Net."""
        return int(self.heads["cam"].classifier.out_channels)


def build_spol(model: nn.Module, num_classes: int, layers: Sequence[str], channels: Sequence[int],
               *, spol_width: int = 128, spol_dropout: float = 0.5) -> SPOLModel:
    """SPOL on ``model``: two deep copies (class and segmentation nets) and their MFF heads.

    Called by :func:`fcam.wsol.build` (which seeds the heads and finds the stages).

    Args:
        model: the classifier.
        num_classes: classes of the class net.
        layers: three stage names of ``model``, shallow first.
        channels: their channels.
        spol_width: MFF-Net's reduced width (128).
        spol_dropout: dropout on the fused features (0.5).
    """
    check_int(spol_width, "spol_width")
    check_probability(spol_dropout, "spol_dropout")
    heads = nn.ModuleDict({
        "cam": MFFHead(channels, num_classes, spol_width, spol_dropout, relu=True),
        "seg": MFFHead(channels, 1, spol_width, spol_dropout, relu=False),
    })
    return SPOLModel(copy.deepcopy(model), layers, copy.deepcopy(model), heads)
