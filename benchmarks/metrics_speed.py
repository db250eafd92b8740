"""Speed of fcam's MaxBoxAcc / PxAP against the per-threshold loop of the protocol.

Run: ``python benchmarks/metrics_speed.py [--images 50] [--size 224]``. Prints ms per image for
the fast path (contours once per distinct uint8 cut, one IoU call per image), for the naive
loop over all 1,000 thresholds, and for PxAP, and checks that both box paths agree.
"""

from __future__ import annotations

import argparse
import logging
import time

import cv2
import numpy as np

from fcam.metrics import BoxEvaluator, box_iou, boxes_at_thresholds, cam_thresholds, pxap

logger = logging.getLogger("benchmarks.metrics_speed")


def _cams(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Bicubic-upsampled 7 x 7 random CAMs, min-max normalised (the wsolevaluation recipe)."""
    rng = np.random.default_rng(seed)
    maps = np.stack(
        [
            cv2.resize(
                rng.random((7, 7)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC
            )
            for _ in range(count)
        ]
    )
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low)


def _naive(maps: np.ndarray, boxes: list[np.ndarray], interval: float) -> float:
    taus = cam_thresholds(interval)
    correct = np.zeros((3, len(taus)))
    for scoremap, gt in zip(maps, boxes, strict=True):
        for t, tau in enumerate(taus):
            est = boxes_at_thresholds(scoremap, [tau], multi_contour=True)[0]
            best = box_iou(est, gt).max()
            correct[:, t] += best >= np.array([0.3, 0.5, 0.7])
    return float(np.mean((correct * 100 / len(maps)).max(axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--interval", type=float, default=0.001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    maps = _cams(args.images, args.size)
    side = args.size
    boxes = [np.array([[side // 4, side // 4, 3 * side // 4, 3 * side // 4]])] * args.images

    start = time.perf_counter()
    evaluator = BoxEvaluator(version=2, cam_curve_interval=args.interval)
    evaluator.update(maps, boxes)
    fast = evaluator.compute().value
    fast_ms = (time.perf_counter() - start) * 1000 / args.images

    start = time.perf_counter()
    naive = _naive(maps, boxes, args.interval)
    naive_ms = (time.perf_counter() - start) * 1000 / args.images

    masks = np.zeros(maps.shape, dtype=bool)
    masks[:, side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = True
    start = time.perf_counter()
    pxap(maps, masks, cam_curve_interval=args.interval)
    pxap_ms = (time.perf_counter() - start) * 1000 / args.images

    logger.info("MaxBoxAccV2 fast : %8.2f ms/image  (value %.4f)", fast_ms, fast)
    logger.info("MaxBoxAccV2 naive: %8.2f ms/image  (value %.4f)", naive_ms, naive)
    logger.info("PxAP             : %8.2f ms/image", pxap_ms)
    if abs(fast - naive) > 1e-9:
        raise SystemExit(f"fast and naive paths disagree: {fast} != {naive}")


if __name__ == "__main__":
    main()
