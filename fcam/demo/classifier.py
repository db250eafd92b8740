"""A torchvision classifier trained from scratch on :class:`~fcam.data.SyntheticWSOL`, cached.

The demo and the F-CAM tuning scripts need the same frozen classifier; training it takes a few
minutes on a CPU, so :func:`train_classifier` stores the weights in the user cache directory
(:func:`fcam.demo.cache.cache_dir`) under a hash of :class:`ClassifierConfig` and reloads
them on the next call.

Example:
    >>> from fcam.demo import ClassifierConfig, train_classifier
    >>> model = train_classifier(ClassifierConfig(epochs=1, n_train=50))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from fcam.core.progress import progress_bar
from fcam.data.synthetic import GENERATOR_VERSION, SyntheticWSOL
from fcam.demo.cache import cache_dir, config_key
from fcam.demo.config import TARGET_LAYER
from fcam.models import ClassifierSpec, build_model, read_classifier_file
from fcam.models import save_classifier as save_model_file

__all__ = [
    "ClassifierConfig",
    "build_classifier",
    "evaluate_accuracy",
    "load_classifier",
    "save_classifier",
    "train_classifier",
]

logger = logging.getLogger(__name__)

_ARCHS = ("resnet18", "resnet34", "resnet50")


def build_classifier(num_classes: int, arch: str = "resnet18") -> nn.Module:
    """A torchvision ResNet with random weights (no download) and ``num_classes`` outputs.

    Args:
        num_classes: number of output logits.
        arch: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.

    Example:
        >>> build_classifier(5).fc.out_features
        5
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if arch not in _ARCHS:
        raise ValueError(f"arch must be one of {list(_ARCHS)}, got {arch!r}")
    return build_model(ClassifierSpec(arch, num_classes=num_classes))


def save_classifier(
    model: nn.Module, path: str | Path, *, arch: str, image_size: int | None = None
) -> Path:
    """Write a demo ResNet as an fcam classifier file (:func:`fcam.models.save_classifier`).

    The spec records ``arch``, the class count (from ``fc.weight``), the target layer
    ``layer4``, ``image_size`` and ImageNet normalisation; the file loads with
    :func:`load_classifier`, :func:`fcam.models.load_classifier` and ``fcam ... --classifier``.
    """
    if arch not in _ARCHS:
        raise ValueError(f"arch must be one of {list(_ARCHS)}, got {arch!r}")
    fc_weight = model.state_dict().get("fc.weight")
    if fc_weight is None:
        raise ValueError("model has no `fc` layer: not a torchvision ResNet")
    spec = ClassifierSpec(
        arch,
        num_classes=int(fc_weight.shape[0]),
        target_layer=TARGET_LAYER,
        input_size=image_size,
    )
    return save_model_file(model, spec, path)


def load_classifier(
    path: str | Path, *, arch: str | None = None, device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, object]]:
    """Rebuild a demo ResNet classifier from a file.

    Accepts the files written by :func:`save_classifier` (now and in earlier fcam versions)
    and bare torchvision ResNet state dicts or checkpoints holding one (then ``arch`` says
    which ResNet, ``resnet18`` by default); the number of classes is read from ``fc.weight``.
    Any other classifier: :func:`fcam.models.load_classifier` / :func:`fcam.models.load_model`.

    Returns:
        ``(model in eval mode on device, metadata)`` where metadata holds ``arch``,
        ``num_classes`` and ``image_size`` (``None`` when unknown).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a ResNet checkpoint.
    """
    spec, state_dict = read_classifier_file(path)
    if "fc.weight" not in state_dict:
        raise ValueError(f"{path} is not a torchvision ResNet checkpoint (no fc.weight)")
    arch = arch or (spec.model if spec is not None else "resnet18")
    num_classes = int(state_dict["fc.weight"].shape[0])
    model = build_classifier(num_classes, arch)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match a {arch}: {str(exc).splitlines()[0]}") from None
    size = spec.input_size if spec is not None else None
    meta = {"arch": arch, "num_classes": num_classes, "image_size": size}
    return model.to(_device(device)).eval(), meta


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything that determines the trained weights (and therefore the cache key).

    Attributes:
        arch: torchvision ResNet name.
        image_size: synthetic image side in pixels.
        n_train: number of synthetic training images.
        data_seed: seed of the synthetic training split.
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak AdamW learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
        seed: torch seed for the initialisation and the shuffling.
    """

    arch: str = "resnet18"
    image_size: int = 128
    n_train: int = 2000
    data_seed: int = 0
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def key(self) -> str:
        """Cache key: a hash of the fields and of the synthetic generator's version."""
        return config_key({**dataclasses.asdict(self), "generator": GENERATOR_VERSION})


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, dataset: SyntheticWSOL, batch_size: int = 128, progress: bool = False
) -> float:
    """Top-1 accuracy (in %) of ``model`` on ``dataset``, on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        loader = DataLoader(dataset, batch_size=batch_size)
        for batch in progress_bar(loader, enabled=progress, desc="accuracy", leave=False):
            logits = model(batch["image"].to(device))
            correct += int((logits.argmax(1).cpu() == batch["label"]).sum())
    finally:
        model.train(was_training)
    return 100.0 * correct / len(dataset)


def _fit(model: nn.Module, config: ClassifierConfig, device: torch.device, progress: bool) -> None:
    dataset = SyntheticWSOL(config.n_train, size=config.image_size, seed=config.data_seed)
    generator = torch.Generator().manual_seed(config.seed)
    # Drop a ragged last batch (BatchNorm dislikes tiny ones) unless it is the only one.
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(dataset) > config.batch_size,
        generator=generator,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * len(loader))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    model.train()
    bar = progress_bar(total=steps, enabled=progress, desc=f"train {config.arch}", unit="step")
    for epoch in range(config.epochs):
        running, seen = 0.0, 0
        for batch in loader:
            images = batch["image"].to(device)
            labels = batch["label"].to(device)
            # Horizontal flips only: every shape class is closed under them.
            flip = torch.rand(images.shape[0], generator=generator) < 0.5
            images[flip.to(device)] = images[flip.to(device)].flip(-1)
            loss = nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * images.shape[0]
            seen += images.shape[0]
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / seen:.3f}")
        logger.info("epoch %d/%d: train loss %.4f", epoch + 1, config.epochs, running / seen)
    bar.close()
    if not math.isfinite(running / max(seen, 1)):
        raise RuntimeError("classifier training diverged (non-finite loss)")


def train_classifier(
    config: ClassifierConfig | None = None,
    *,
    device: str | torch.device | None = None,
    cache: bool = True,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> nn.Module:
    """Train (or load from the cache) a classifier on the synthetic training split.

    Args:
        config: training configuration; defaults to :class:`ClassifierConfig()`.
        device: where to train; ``None`` picks CUDA when available.
        cache: reuse and store weights in the cache directory.
        cache_root: override of :func:`~fcam.demo.cache.cache_dir`.
        progress: show tqdm progress bars.

    Returns:
        The model in eval mode on ``device``, with ``requires_grad`` left on.
    """
    config = config or ClassifierConfig()
    if not isinstance(config, ClassifierConfig):
        raise TypeError(f"config must be a ClassifierConfig, got {type(config).__name__}")
    device = _device(device)
    path = Path(cache_root or cache_dir()) / "classifiers" / f"{config.arch}-{config.key()}.pt"
    if cache and path.is_file():
        logger.info("loading cached classifier %s", path)
        return load_classifier(path, device=device)[0]
    torch.manual_seed(config.seed)
    model = build_classifier(len(SyntheticWSOL.classes), config.arch).to(device)
    _fit(model, config, device, progress)
    model.eval()
    if cache:
        save_classifier(model, path, arch=config.arch, image_size=config.image_size)
        logger.info("cached classifier at %s", path)
    return model
