"""Settings of the ``fcam demo`` job (importable without torch, so ``fcam --help`` is fast)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fcam import __version__
from fcam.demo.cache import config_key

if TYPE_CHECKING:
    from fcam.demo.classifier import ClassifierConfig

__all__ = ["DEMO_CAMS", "TARGET_LAYER", "DemoConfig"]

# Display names of the seed CAM methods; any name of fcam.cams.available() is accepted.
DEMO_CAMS: dict[str, str] = {
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "smoothgradcampp": "Smooth Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "scorecam": "Score-CAM",
    "sscam": "SS-CAM",
    "iscam": "IS-CAM",
}
TARGET_LAYER = "layer4"


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo`; :meth:`quick` gives the ``--quick`` preset.

    Attributes:
        out_dir: output folder (created).
        image_size: synthetic image side.
        n_train: training images (classifier and F-CAM).
        n_test: test images (evaluation).
        seed: seed of the data, the classifier and F-CAM.
        cams: seed CAM methods (names of :func:`fcam.cams.available`).
        classifier_epochs: classifier training epochs.
        fcam_epochs: F-CAM epochs per CAM method.
        fcam_train: images of the train split used to fit F-CAM (the first ones).
        fcam_batch_size: F-CAM batch size.
        fcam_lr: F-CAM learning rate; ``None``: :meth:`fcam.FCAM.fit`'s default (F-CAM is
            trained with fit's default schedule).
        fcam_options: extra keyword arguments for :class:`fcam.FCAM` (e.g. loss weights).
        eval_batch_size: evaluation batch size.
        num_examples: test images shown in the overlays and the grid.
        cam_curve_interval: metric threshold step.
        device: ``None`` picks CUDA when available.
        cache: reuse cached classifier and F-CAM weights.
        progress: tqdm progress bars.
        report: write the HTML evaluation report to ``out_dir/report``
            (:func:`fcam.evaluation.write_report`; skipped with a warning without matplotlib).
    """

    out_dir: Path = Path("fcam-demo")
    image_size: int = 128
    n_train: int = 1500
    n_test: int = 300
    seed: int = 0
    cams: tuple[str, ...] = ("cam", "gradcampp")
    classifier_epochs: int = 6
    fcam_epochs: int = 3
    fcam_train: int = 600
    fcam_batch_size: int = 16
    fcam_lr: float | None = None
    fcam_options: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 50
    num_examples: int = 8
    cam_curve_interval: float = 0.001
    device: str | None = None
    cache: bool = True
    progress: bool = True
    report: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """The ``--quick`` preset: smaller data and fewer epochs (a few minutes on a CPU)."""
        preset: dict[str, Any] = {
            "n_train": 600,
            "n_test": 100,
            "classifier_epochs": 5,
            "fcam_epochs": 4,
            "fcam_train": 256,
            # Smaller batches give F-CAM more SGD steps (128 per method) for the same compute.
            "fcam_batch_size": 8,
        }
        return cls(**{**preset, **overrides})

    def validate(self) -> None:
        """Raise ``ValueError`` on a setting that cannot work."""
        from fcam.cams import available

        for name in (
            "image_size",
            "n_train",
            "n_test",
            "classifier_epochs",
            "fcam_epochs",
            "fcam_train",
            "fcam_batch_size",
            "eval_batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.image_size < 64:
            raise ValueError(f"image_size must be >= 64 (a ResNet needs it), got {self.image_size}")
        if not self.cams:
            raise ValueError("cams must name at least one CAM method")
        unknown = [c for c in self.cams if c not in available()]
        if unknown:
            raise ValueError(f"unknown CAM method(s) {unknown}; available: {available()}")
        if self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples}")
        if self.fcam_lr is not None and not self.fcam_lr > 0:
            raise ValueError(f"fcam_lr must be > 0, got {self.fcam_lr}")

    def classifier_config(self) -> ClassifierConfig:
        """The :class:`~fcam.demo.ClassifierConfig` this demo trains (or loads) its model with."""
        from fcam.demo.classifier import ClassifierConfig

        return ClassifierConfig(
            image_size=self.image_size,
            n_train=self.n_train,
            data_seed=self.seed,
            epochs=self.classifier_epochs,
            seed=self.seed,
        )

    def fcam_key(self, cam: str) -> str:
        """Cache key of the F-CAM fitted for ``cam`` (depends on the classifier too, and on
        F-CAM's default options, so a changed default never reuses stale weights)."""
        from fcam.explainer.config import FCAMConfig  # deferred: this module is torch-free
        from fcam.explainer.trainer import DEFAULT_LR, DEFAULT_LR_SCHEDULE

        return config_key(
            {
                "classifier": self.classifier_config().key(),
                "cam": cam,
                "epochs": self.fcam_epochs,
                "n": min(self.fcam_train, self.n_train),
                "batch_size": self.fcam_batch_size,
                "lr": DEFAULT_LR if self.fcam_lr is None else self.fcam_lr,
                "lr_schedule": DEFAULT_LR_SCHEDULE,
                "options": self.fcam_options,
                "seed": self.seed,
                "fcam": __version__,
                "defaults": FCAMConfig().to_dict(),
            }
        )
