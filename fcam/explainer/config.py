"""The one definition of F-CAM's options: :class:`FCAMConfig` (with nested :class:`SeedOptions`).

The constructor of :class:`fcam.FCAM`, :meth:`fcam.FCAM.save` and :meth:`fcam.FCAM.load` all
derive from these dataclasses (their fields, defaults and checks), so an option cannot be
accepted by one and silently dropped by another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.core.validation import check_bool, check_int, check_number
from fcam.losses.crf import CRF_NORMALIZATIONS
from fcam.losses.seeds import check_colour_options

__all__ = [
    "CRF_REFERENCE_PIXELS", "DEFAULT_CAM_EXPONENT", "DEFAULT_CAM_MIX", "DEFAULT_REFERENCE_CRF_WEIGHT",
    "FCAMConfig", "SeedOptions",
]

#: Pixel count of the image size the user-facing ``crf_weight`` refers to (224×224).
CRF_REFERENCE_PIXELS = 224 * 224
#: Default :attr:`FCAMConfig.crf_weight`, *defined at the 224² reference* and rescaled per batch
#: by ``(224² / (H·W))²`` (unlike :data:`fcam.losses.DEFAULT_CRF_WEIGHT`, an absolute weight of
#: the loss itself), for the default affinity-normalised CRF (``crf_normalize="affinity"``:
#: every image's affinity scaled to unit mean entry). Twice the paper's exact-kernel weight; with
#: the unnormalised CRF (mean affinity ≈ 0.1) it is ~15× weaker than the first default 3e-8,
#: which let the CRF dominate the seeds and run away to all-foreground on cluttered backgrounds;
#: 1e-9 left blobs larger than the objects after fit's default 10 epochs, and 3e-9 shrinks the
#: maps below the objects. Measurements in docs/notes/crf_weight.md.
DEFAULT_REFERENCE_CRF_WEIGHT = 2e-9


#: Default :attr:`FCAMConfig.cam_exponent`. It was 0.25 (the decoder's probability times
#: cam ** 0.25, so that a look-alike distractor the decoder marks as confidently as the object
#: ranks below it); since the colour-weighted seeds, :data:`DEFAULT_CAM_MIX` does that better on
#: the tuned domains, and the exponent now costs PxAP there (docs/concepts/fcam.md).
DEFAULT_CAM_EXPONENT = 0.0

#: Default :attr:`FCAMConfig.cam_mix`: the map is ``0.98 * p_fg + 0.02 * cam``. The small CAM
#: share breaks the ties of the near-binary decoder (object vs look-alike inside its mask) and
#: ranks the pixels it calls background, while a threshold above 0.02 sees the decoder's edges.
#: Chosen on the tuned domains (texture64, photo80) by re-scoring the same fits: 0.02 and 0.05
#: tie, 0.1 and up lose; measurements in docs/concepts/fcam.md.
DEFAULT_CAM_MIX = 0.02


@dataclass(frozen=True)
class SeedOptions:
    """Seed sampling of :func:`fcam.losses.sample_seeds`.

    The defaults draw 60 + 60 seeds per image, each dilated to a 5 × 5 patch (the original
    code's config draws 10 + 10 3 × 3 patches, the paper's run 1 + 1: on real photographs,
    the sparse seeds left the decoder free to spill over background of the object's colours,
    docs/notes/real_photos.md), and the background seeds from the lowest half of the CAM (paper: 10 %),
    so that the background around the object is supervised too, and never from the CAM's own
    (Otsu) region, where that half would reach into an object filling the frame. Both kinds of
    seed are also drawn in proportion to how well their colour agrees with their side
    (``colour_bins``, ``colour_mode``), so that the foreground seeds stay mostly off the
    background the CAM's blob spills onto (docs/concepts/fcam.md).

    Attributes:
        sl_max: foreground seeds per image, drawn from the top of the CAM.
        sl_min: background seeds per image, drawn from the bottom of the CAM.
        sl_ksz: side of the square each seed is dilated to.
        sl_min_p: share of the lowest CAM pixels that background seeds come from.
        fg_erode_k: erosion kernel applied to the foreground region before sampling.
        fg_erode_iter: erosion iterations.
        bg_outside_roi: background seeds only outside the CAM's Otsu region, so an object
            covering more than ``1 - sl_min_p`` of the image gets no background seed on it.
        colour_bins: when positive, the seeds follow the image's colours (levels per channel
            of the per-image colour histograms of the CAM's region and of the background
            candidates, see ``colour_mode``); 0 = the CAM alone decides.
        colour_mode: ``"filter"`` drops the candidates whose colour disagrees, ``"weight"``
            draws candidates in proportion to how much their colour agrees. Both assume the
            object's colours are rarer around it than on it; for objects that share their
            colours with their surroundings, ``colour_bins=0``.
    """

    sl_max: int = 60
    sl_min: int = 60
    sl_ksz: int = 5
    sl_min_p: float = 0.5
    fg_erode_k: int = 11
    fg_erode_iter: int = 1
    bg_outside_roi: bool = True
    colour_bins: int = 4
    colour_mode: str = "weight"

    def __post_init__(self) -> None:
        for name in ("sl_max", "sl_min", "sl_ksz", "fg_erode_k"):
            object.__setattr__(self, name, check_int(getattr(self, name), name))
        object.__setattr__(self, "fg_erode_iter", check_int(self.fg_erode_iter, "fg_erode_iter", 0))
        object.__setattr__(self, "sl_min_p", check_number(self.sl_min_p, "sl_min_p", positive=True, maximum=1.0))
        check_bool(self.bg_outside_roi, "bg_outside_roi")
        object.__setattr__(self, "colour_bins", check_colour_options(self.colour_bins, self.colour_mode))


@dataclass(frozen=True)
class FCAMConfig:
    r"""Every option of :class:`fcam.FCAM` that is saved with it.

    Attributes:
        target_layer: CAM layer = decoder head (dotted name); ``None`` until resolved.
        cam: name of the seed CAM (:func:`fcam.cams.available`), or ``None`` for an extractor
            instance or a callable (:attr:`cam_ref` then names it when it is importable).
        cam_ref: ``"package.module:qualname"`` of a custom seed-CAM callable, if importable.
        upscaler: decoder type (:func:`fcam.upscalers.available`; default ``"unet-lite"``,
            :class:`~fcam.upscalers.LiteUNetDecoder`; ``"unet"`` is F-CAM's published decoder).
        skips: explicit skip layers instead of the automatic pyramid (names).
        widths: decoder widths, deepest first; ``None`` until :class:`fcam.FCAM` resolves it to
            the decoder's own default (:func:`fcam.upscalers.default_widths`: ``(128, 64, 32,
            16, 8)`` for ``"unet-lite"``, F-CAM's ``(256, 128, 64, 32, 16)`` for ``"unet"``).
        crf_weight: CRF weight at the 224² reference, rescaled per batch by
            :math:`(224^2 / HW)^2` (the CRF sums over all pixel pairs).
        sigma_rgb: CRF colour bandwidth (RGB in [0, 255]).
        sigma_xy: CRF spatial bandwidth in pixels.
        crf_scale: evaluate the CRF on images downscaled by this factor in (0, 1].
        crf_normalize: ``None`` (published CRF) or ``"affinity"``: every image's affinity is
            scaled to unit mean entry (:func:`fcam.losses.dense_crf_loss`), so the CRF's
            strength no longer depends on the image's colour statistics or clutter.
        size_weight: weight of the size log-barrier (paper: 0.1).
        size_min_share: ``None`` (published log-barrier on absolute sizes, which pushes every
            map towards a 50/50 split) or the minimal share of each class, enforced by a
            penalty that is zero while it holds (:func:`fcam.losses.size_loss`).
        seed_weight: weight of the seed cross-entropy (paper: 1.0).
        cam_exponent: :math:`\gamma` of the map :meth:`fcam.FCAM.explain` returns (see
            ``cam_mix``): the decoder's foreground probability :math:`p_{fg}` weighted by the
            seed CAM of the explained class :math:`c` to this power (default 0: unweighted).
            :math:`\gamma > 0` ranks regions the decoder marks with equal confidence (e.g. the
            object and a look-alike distractor) by the CAM, at the cost of computing the seed
            CAM (a backward through the layers after ``target_layer`` for gradient CAMs).
            Training does not use it.
        cam_mix: :math:`\alpha \in [0, 1]`, the seed CAM's share in the map:
            :math:`(1 - \alpha)\, p_{fg} \cdot \mathrm{cam}_c^{\gamma} + \alpha\,
            \mathrm{cam}_c`. A small share orders the pixels the near-binary decoder scores
            alike (inside its mask: object vs look-alike; outside: how close to the object)
            and leaves every threshold above :math:`\alpha` to the decoder's edges. ``0`` with
            :math:`\gamma = 0` needs no seed CAM at explain time. Training does not use it.
        class_head: give the decoder a :class:`~fcam.upscalers.ClassConditionalHead`: the
            shared foreground/background head plus a zero-initialised residual per class, trained
            on the images of that class, so the map is the one of the explained class and
            objects of other classes can stay background. ``False``: F-CAM's class-agnostic
            head (checkpoints written before the option existed load with ``False``).
        init_t, max_t, mulcoef: log-barrier schedule (paper: 1, 10, 1.01 per epoch).
        seeds: seed sampling (:class:`SeedOptions`).
        mean, std: normalisation of the loader's images, undone to get the CRF's raw RGB when a
            batch carries no ``"raw"``/``"raw_image"`` entry.
        output_fn_ref: ``"package.module:qualname"`` of ``output_fn``, if importable.
        input_size: ``(H, W)`` the structure probe runs at; needed for classifiers that only
            accept one input size (``None``: try 320×288, the model's declared size, 224²).
        seed: seeds the decoder initialisation and the seed sampling generator.

    Example:
        >>> FCAMConfig.from_options(crf_weight=1e-8, sl_max=2).seeds.sl_max
        2
    """

    target_layer: str | None = None
    cam: str | None = "gradcampp"
    cam_ref: str | None = None
    upscaler: str = "unet-lite"
    skips: tuple[str, ...] | None = None
    widths: tuple[int, ...] | None = None
    crf_weight: float = DEFAULT_REFERENCE_CRF_WEIGHT
    sigma_rgb: float = 15.0
    sigma_xy: float = 100.0
    crf_scale: float = 1.0
    crf_normalize: str | None = "affinity"
    size_weight: float = 0.1
    size_min_share: float | None = None
    seed_weight: float = 1.0
    cam_exponent: float = DEFAULT_CAM_EXPONENT
    cam_mix: float = DEFAULT_CAM_MIX
    class_head: bool = True
    init_t: float = 1.0
    max_t: float = 10.0
    mulcoef: float = 1.01
    seeds: SeedOptions = field(default_factory=SeedOptions)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    output_fn_ref: str | None = None
    input_size: tuple[int, int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("crf_weight", "size_weight", "seed_weight", "cam_exponent"):
            set_(self, name, check_number(getattr(self, name), name, non_negative=True))
        for name in ("sigma_rgb", "sigma_xy", "init_t", "max_t", "mulcoef"):
            set_(self, name, check_number(getattr(self, name), name, positive=True))
        set_(self, "cam_mix", check_number(self.cam_mix, "cam_mix", non_negative=True, maximum=1.0))
        check_bool(self.class_head, "class_head")
        set_(self, "crf_scale", check_number(self.crf_scale, "crf_scale", positive=True, maximum=1.0))
        if self.crf_normalize not in CRF_NORMALIZATIONS:
            raise ValueError(
                f"crf_normalize must be one of {list(CRF_NORMALIZATIONS)}, got {self.crf_normalize!r}"
            )
        if self.size_min_share is not None:
            set_(self, "size_min_share",
                 check_number(self.size_min_share, "size_min_share", positive=True, maximum=0.5))
        if not isinstance(self.upscaler, str):
            raise TypeError(f"upscaler must be a name, got {type(self.upscaler).__name__}")
        if self.widths is not None:
            widths = tuple(self.widths) if not isinstance(self.widths, (int, str)) else ()
            if not widths:
                raise ValueError(f"widths must be a non-empty sequence of positive ints, got {self.widths!r}")
            set_(self, "widths", tuple(check_int(w, "widths") for w in widths))
        if self.skips is not None:
            set_(self, "skips", tuple(str(s) for s in self.skips))
        set_(self, "seed", check_int(self.seed, "seed", 0))
        if self.input_size is not None:
            given: Any = self.input_size
            size = (given, given) if isinstance(given, int) else tuple(given)
            if len(size) != 2:
                raise ValueError(f"input_size must be an int or an (H, W) pair, got {self.input_size!r}")
            set_(self, "input_size", tuple(check_int(v, "input_size") for v in size))
        set_(self, "mean", tuple(check_number(v, "mean") for v in self.mean))
        set_(self, "std", tuple(check_number(v, "std", positive=True) for v in self.std))
        if isinstance(self.seeds, Mapping):
            set_(self, "seeds", SeedOptions(**self.seeds))

    # ------------------------------------------------------------------ conversions
    @classmethod
    def option_names(cls) -> list[str]:
        """Keyword options accepted by :class:`fcam.FCAM` (seed options flattened)."""
        own = [f.name for f in fields(cls) if f.name not in ("seeds", "cam_ref", "output_fn_ref")]
        return own + [f.name for f in fields(SeedOptions)]

    @classmethod
    def from_options(cls, **options: Any) -> FCAMConfig:
        """Build a config from flat keyword options (``sl_max=2`` goes into :attr:`seeds`).

        Raises:
            TypeError: for an unknown option (the message lists the known ones).
        """
        seed_names = {f.name for f in fields(SeedOptions)}
        own = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - seed_names - own)
        if unknown:
            raise TypeError(f"unknown F-CAM option(s) {unknown}; known options: {cls.option_names()}")
        seeds = {k: options.pop(k) for k in list(options) if k in seed_names}
        base = options.pop("seeds", SeedOptions())
        base = SeedOptions(**base) if isinstance(base, Mapping) else base
        return cls(seeds=dataclasses.replace(base, **seeds), **options)

    def replace(self, **options: Any) -> FCAMConfig:
        """A copy with flat keyword options changed (seed options included)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self)}
        flat.update(options)
        return FCAMConfig.from_options(**flat)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python (lists, numbers, strings, None): what a checkpoint stores."""
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FCAMConfig:
        """Inverse of :meth:`to_dict`; keys a checkpoint lacks take their defaults.

        Raises:
            ValueError: for keys this version does not know (a newer checkpoint).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"checkpoint config has unknown keys {unknown}; upgrade fcam to read it")
        # A key a checkpoint lacks was not an option when it was written: it takes the value
        # that reproduces what that version did (no seed CAM in the map, F-CAM's class-agnostic
        # head, seeds from the CAM alone), so the checkpoint explains and resumes as it did.
        data = dict(data)
        if isinstance(data.get("seeds"), Mapping):
            data["seeds"] = {"colour_bins": 0, **data["seeds"]}
        return cls(**{"cam_exponent": 0.0, "cam_mix": 0.0, "class_head": False, **data})
