"""The demo's classifier and F-CAM checkpoint as files in the cache, trained when missing.

``fcam app`` with no classifier options opens on these, so that a fresh install shows real
maps: the classifier file of :func:`~fcam.demo.train_classifier` and the F-CAM checkpoint that
``fcam demo`` fits on it (same cache keys, so a previous ``fcam demo`` run is reused).

Example:
    >>> from fcam.demo.cached import cached_models
    >>> classifier, checkpoint = cached_models()        # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from fcam.demo.cache import cache_dir
from fcam.demo.config import DemoConfig

__all__ = ["APP_CAM", "cached_models", "find_cached_models"]

#: Seed CAM of the F-CAM checkpoint the app opens on (one of the demo's default methods).
APP_CAM = "gradcampp"


def _paths(config: DemoConfig, cam: str) -> tuple[Path, Path]:
    classifier = config.classifier_config()
    return (
        cache_dir() / "classifiers" / f"{classifier.arch}-{classifier.key()}.pt",
        cache_dir() / "fcam" / f"{cam}-{config.fcam_key(cam)}.pt",
    )


def find_cached_models(cam: str = APP_CAM) -> tuple[Path, Path] | None:
    """The cached classifier file and F-CAM checkpoint (full preset first, then ``--quick``),
    or ``None`` when neither preset has both files."""
    for config in (DemoConfig(cams=(cam,)), DemoConfig.quick(cams=(cam,))):
        paths = _paths(config, cam)
        if all(path.is_file() for path in paths):
            return paths
    return None


def cached_models(
    cam: str = APP_CAM, *, device: str | None = None, progress: bool = True
) -> tuple[Path, Path]:
    """The cached demo classifier file and F-CAM checkpoint, training them if missing.

    The full ``fcam demo`` preset is used when both of its files are cached; otherwise the
    ``--quick`` preset (a few minutes on a CPU, with progress bars) is loaded or trained.

    Args:
        cam: the F-CAM checkpoint's seed CAM method.
        device: where to train when needed (``None``: CUDA if available).
        progress: show progress bars while training.

    Returns:
        ``(classifier file, F-CAM checkpoint file)``, both in :func:`~fcam.demo.cache_dir`.
    """
    found = find_cached_models(cam)
    if found is not None:
        return found
    from fcam.data.synthetic import SyntheticWSOL
    from fcam.demo.classifier import train_classifier
    from fcam.demo.pipeline import _device, _fit_fcam

    # Train what is missing: a cached classifier is loaded, not retrained.
    config = DemoConfig.quick(cams=(cam,), device=device, progress=progress)
    config.validate()
    torch_device = _device(device)
    model = train_classifier(
        config.classifier_config(), device=torch_device, cache=True, progress=progress
    )
    model.requires_grad_(False)
    train = SyntheticWSOL(config.n_train, size=config.image_size, seed=config.seed, split="train")
    _fit_fcam(model, cam, train, config, torch_device)
    return _paths(config, cam)
