"""Your own classifier: a hand-written ``nn.Module`` that returns a tuple, with explicit skips.

fcam needs no torchvision model. This script defines a small CNN whose ``forward`` returns
``(logits, embedding)``, trains it on the embedded synthetic data, runs three CAM extractors
on it, and fits F-CAM with the skip connections named explicitly (``skips=[...]``).

Run::

    python examples/02_own_classifier.py
    python examples/02_own_classifier.py --quick
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import fcam
from fcam import cams
from fcam.data import SyntheticWSOL
from fcam.metrics import pxap
from fcam.viz import comparison_grid


def conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ShapeNet(nn.Module):
    """Four stride-2 stages (strides 2, 4, 8, 16), global average pooling, a linear head.

    ``forward`` returns ``(logits, embedding)``: fcam takes the first element of a tuple as the
    logits (``output_fn`` would be needed for anything else).
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = conv_bn(3, width, 2)
        self.stage1 = nn.Sequential(conv_bn(width, 2 * width, 2), conv_bn(2 * width, 2 * width, 1))
        self.stage2 = nn.Sequential(conv_bn(2 * width, 4 * width, 2), conv_bn(4 * width, 4 * width, 1))
        self.stage3 = nn.Sequential(conv_bn(4 * width, 8 * width, 2), conv_bn(8 * width, 8 * width, 1))
        self.classifier = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.stage3(self.stage2(self.stage1(self.stem(x))))
        embedding = features.mean(dim=(2, 3))
        return self.classifier(embedding), embedding


def train(model: nn.Module, data: SyntheticWSOL, epochs: int, device: torch.device) -> None:
    loader = DataLoader(data, batch_size=32, shuffle=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for batch in loader:
            logits, _ = model(batch["image"].to(device))
            loss = F.cross_entropy(logits, batch["label"].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch["label"])
        print(f"classifier epoch {epoch + 1}: loss {total / len(data):.3f}")
    model.eval()


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--out", type=Path, default=Path("fcam_examples_out/own_classifier"))
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    size = 64

    model = ShapeNet(num_classes=len(SyntheticWSOL.classes)).to(device)
    train(model, SyntheticWSOL(100 if args.quick else 1500, size=size, seed=3),
          epochs=1 if args.quick else 10, device=device)

    test = SyntheticWSOL(10 if args.quick else 100, size=size, seed=4, split="test")
    batch = next(iter(DataLoader(test, batch_size=len(test))))
    images, labels = batch["image"].to(device), batch["label"].to(device)

    # CAM extractors: the tuple output is handled; the target layer is named explicitly.
    maps = {}
    for name in ("cam", "gradcampp", "layercam"):
        with cams.create(name, model, target_layer="stage3") as extractor:
            maps[name] = extractor.explain(images, targets=labels)

    # F-CAM with the skips given by name (strides 2, 4 and 8 under the stride-16 head).
    explainer = fcam.FCAM(
        model, target_layer="stage3", cam="gradcampp", skips=["stem", "stage1", "stage2"]
    )
    print(f"decoder skips: {[level.name for level in explainer.pyramid.skips if level]}")
    loader = DataLoader(SyntheticWSOL(40 if args.quick else 800, size=size, seed=5),
                        batch_size=20, shuffle=True)
    explainer.fit(loader, epochs=1 if args.quick else 6, device=device, progress=not args.quick)
    with torch.no_grad():
        maps["F-CAM"] = explainer.explain(images, targets=labels)

    scores = {name: pxap(value, batch["mask"]) for name, value in maps.items()}
    for name, value in scores.items():
        print(f"PxAP {name}: {value:.1f}")
    comparison_grid(batch["raw"][:5], {k: v[:5] for k, v in maps.items()}, gt=batch["mask"][:5],
                    path=args.out / "own_classifier_grid.png")
    print(f"wrote {args.out / 'own_classifier_grid.png'}")
    return scores


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
