"""Device-side running sums of one training epoch, read back once per interval.

A float read of a CUDA tensor (``float(loss)``, ``.item()``, ``.cpu()``) waits for the GPU to
finish every queued kernel. The trainer used to read the loss, each of its terms and the
foreground shares after every step (nine such reads). :class:`EpochMeter` keeps the sums and
the per-image shares on the training device and reads them back once every
:data:`SYNC_EVERY` steps (for the progress bar) and at the end of the epoch. One read per step
remains: whether every loss term is finite, so that a non-finite step raises *before* the
optimiser applies it (an exact rollback point, and no NaN decoder running on for an interval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["SYNC_EVERY", "EpochMeter"]

#: Steps between two reads of the running sums for the progress bar.
SYNC_EVERY = 25


class EpochMeter:
    """Running, batch-size weighted means of the loss and its terms, kept on the device.

    Args:
        parts: names of the loss terms, in the order :meth:`add` receives them.
        epoch: 0-based epoch index, for error messages.

    Example:
        >>> meter = EpochMeter(("seed", "crf"), epoch=0)
        >>> meter.add(torch.tensor(3.0), {"seed": torch.tensor(1.0), "crf": torch.tensor(2.0)}, 2,
        ...           torch.zeros(2), torch.ones(2))
        >>> meter.means()
        {'loss': 3.0, 'seed': 1.0, 'crf': 2.0}
    """

    def __init__(self, parts: Sequence[str], epoch: int) -> None:
        self.names = ("loss", *parts)
        self.epoch = epoch
        self.steps = 0
        self.images = 0
        self._sums: torch.Tensor | None = None
        self._shares: list[torch.Tensor] = []
        self._cam_shares: list[torch.Tensor] = []

    def add(self, total: torch.Tensor, parts: Mapping[str, torch.Tensor], n: int,
            share: torch.Tensor, cam_share: torch.Tensor) -> None:
        """Record one step of ``n`` images; ``FloatingPointError`` naming the first non-finite
        loss term (the step's one host read)."""
        values = torch.stack([total.detach().float(), *(parts[k].detach().float() for k in self.names[1:])])
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            # Name a loss term when one is non-finite; the total only when the terms are finite.
            term = next((t for t in bad if t > 0), bad[0])
            raise FloatingPointError(
                f"F-CAM loss term {self.names[term]!r} is {float(values[term])} at epoch "
                f"{self.epoch + 1}, step {self.steps + 1}; no checkpoint was written for this epoch"
            )
        # float64 sums as the Python floats they replace (MPS has no float64: float32 there).
        weighted = values.to(torch.float32 if values.device.type == "mps" else torch.float64) * n
        self._sums = weighted if self._sums is None else self._sums + weighted
        self._shares.append(share.detach())
        self._cam_shares.append(cam_share.detach())
        self.steps += 1
        self.images += n

    def due(self) -> bool:
        """Whether this step ends an interval of :data:`SYNC_EVERY` steps (a progress read)."""
        return self.steps % SYNC_EVERY == 0

    def means(self) -> dict[str, float]:
        """Batch-size weighted means over the epoch so far (one host read)."""
        if self._sums is None:
            return dict.fromkeys(self.names, 0.0)
        sums = (self._sums / self.images).tolist()
        return dict(zip(self.names, sums, strict=True))

    def shares(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image foreground shares of the decoder's maps and of the seed CAM, on the CPU."""
        return torch.cat(self._shares).float().cpu(), torch.cat(self._cam_shares).float().cpu()
