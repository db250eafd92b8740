"""The example images of ``fcam app``: drawn procedurally, no photograph is shipped.

They come from the embedded synthetic dataset (:class:`fcam.data.SyntheticWSOL`, test split),
the data the demo classifier is trained on, one image per class for the first few classes, so
the page opened on the demo's classifier explains images it can recognise.

Example:
    >>> import tempfile
    >>> from fcam.app.examples import example_images
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     paths = example_images(folder, count=2, size=64)
    ...     [p.name for p in paths]
    ['example-ellipse.png', 'example-rectangle.png']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fcam.core.io import atomic_write_png
from fcam.data.synthetic import CLASSES, SyntheticWSOL

__all__ = ["example_images"]

_SEED = 0


def example_images(folder: str | os.PathLike[str], count: int = 3, size: int = 224) -> list[Path]:
    """Write ``count`` example PNGs (one per class, classes in order) to ``folder``.

    Args:
        folder: an existing folder (the app's temporary folder).
        count: number of images, at most ``len(CLASSES)``.
        size: image side in pixels (at least 64).

    Returns:
        The paths, ``example-<class>.png``.
    """
    if not 1 <= count <= len(CLASSES):
        raise ValueError(f"count must be in [1, {len(CLASSES)}], got {count}")
    dataset = SyntheticWSOL(8 * len(CLASSES), size=size, seed=_SEED, split="test")
    wanted = list(range(count))
    paths: list[Path] = []
    for index in range(len(dataset)):
        label = dataset.label_of(index)
        if label in wanted:
            wanted.remove(label)
            raw = dataset[index]["raw"].permute(1, 2, 0).numpy()
            path = Path(folder) / f"example-{CLASSES[label]}.png"
            paths.append(atomic_write_png(path, np.ascontiguousarray(raw)))
        if not wanted:
            break
    return sorted(paths, key=lambda p: CLASSES.index(p.stem.removeprefix("example-")))
