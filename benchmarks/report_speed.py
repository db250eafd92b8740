"""Time and size of :func:`fcam.evaluation.write_report` beyond computing the maps.

Run: ``python benchmarks/report_speed.py [--images 300] [--size 224] [--out /tmp/fcam-report]``.
Draws ``--images`` synthetic test images with masks and boxes (:class:`fcam.data.SyntheticWSOL`)
and two map producers made from their masks without a model (a CAM-like map: the mask pooled to
7 x 7, bicubic-upsampled and min-max normalised; an F-CAM-like map: the mask slightly blurred),
then times ``write_report`` alone (the metrics' sweeps at the protocol's 0.001 step, the
figures, 32 thumbnails, the page) and prints the wall and CPU seconds (CPU time is what a busy
machine cannot inflate) and the size of the folder written.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fcam.core.constants import IMAGENET_MEAN, IMAGENET_STD
from fcam.data import SyntheticWSOL
from fcam.evaluation import write_report

logger = logging.getLogger("benchmarks.report_speed")


def _inputs(count: int, size: int) -> dict[str, object]:
    data = SyntheticWSOL(count, size=size, seed=0, split="test")
    items = [data[i] for i in range(count)]
    masks = torch.stack([it["mask"].float() for it in items])
    low = F.adaptive_avg_pool2d(masks[:, None], 7)
    cam = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    flat = cam.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    cam = (cam - lo) / (hi - lo).clamp(min=1e-8)
    sharp = F.avg_pool2d(masks[:, None], 9, 1, 4)[:, 0].clamp(0, 1)
    return {"images": torch.stack([it["image"] for it in items]), "masks": masks,
            "boxes": [it["box"][None] for it in items], "maps": {"CAM": cam, "F-CAM": sharp},
            "labels": torch.tensor([it["label"] for it in items])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fcam-report-bench"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    inputs = _inputs(args.images, args.size)
    shutil.rmtree(args.out, ignore_errors=True)
    tick, cpu = time.perf_counter(), time.process_time()
    write_report(args.out, inputs["images"], masks=inputs["masks"], boxes=inputs["boxes"],
                 maps=inputs["maps"], title="benchmark", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    seconds, cpu_seconds = time.perf_counter() - tick, time.process_time() - cpu
    files = [p for p in args.out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    logger.info("write_report: %d images at %d px, 2 producers: %.1f s wall, %.1f s CPU "
                "(this process, all threads); %d files, %.2f MB", args.images, args.size, seconds,
                cpu_seconds, len(files), size / 1e6)


if __name__ == "__main__":
    main()
