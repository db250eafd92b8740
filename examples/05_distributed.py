"""Distributed F-CAM training with ``torchrun`` (gloo on CPU, nccl on GPUs).

Run::

    torchrun --nproc_per_node=2 examples/05_distributed.py            # two processes
    torchrun --nproc_per_node=2 examples/05_distributed.py --quick
    python examples/05_distributed.py --quick                         # also works alone

Every process holds the same frozen classifier; :meth:`fcam.FCAM.fit` sees that
``torch.distributed`` is initialised and wraps the decoder in ``DistributedDataParallel``.
Each rank reads its own shard through a ``DistributedSampler`` (``sampler.set_epoch`` is
passed as ``on_epoch_start`` so every epoch reshuffles). Only rank 0 shows progress, writes
the per-epoch checkpoint and the final file. At the end the script checks that all ranks hold
bit-identical decoder weights.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

import fcam
from fcam.data import SyntheticWSOL
from fcam.demo import ClassifierConfig, train_classifier
from fcam.metrics import pxap


def setup() -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun; return (rank, world, device)."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def decoder_checksum(explainer: fcam.FCAM) -> torch.Tensor:
    return torch.stack([p.detach().double().sum() for p in explainer.decoder.parameters()]).sum()


def main(argv: list[str] | None = None) -> float | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    parser.add_argument("--out", type=Path, default=Path("fcam_examples_out/distributed"))
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    rank, world, device = setup()
    distributed = world > 1
    torch.manual_seed(0)
    size = 64 if args.quick else 128

    # The same classifier on every rank: rank 0 trains (or loads) it into the cache first.
    config = ClassifierConfig(image_size=size, n_train=100, epochs=2, batch_size=25) if args.quick \
        else ClassifierConfig(image_size=size)
    if rank == 0:
        model = train_classifier(config, device=device, progress=not args.quick)
    if distributed:
        dist.barrier()
    if rank != 0:
        model = train_classifier(config, device=device, progress=False)

    train = SyntheticWSOL(40 if args.quick else 1000, size=size, seed=2, split="train")
    sampler = DistributedSampler(train, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(train, batch_size=10 if args.quick else 32, sampler=sampler,
                        shuffle=sampler is None)
    explainer = fcam.FCAM(model, target_layer="layer4", cam="gradcampp")
    explainer.fit(
        loader,
        epochs=args.epochs or (1 if args.quick else 5),
        device=device,
        checkpoint_dir=args.out / "checkpoints",
        progress=not args.quick,
        on_epoch_start=sampler.set_epoch if sampler is not None else None,
    )

    if distributed:
        sums = [torch.zeros((), dtype=torch.float64) for _ in range(world)]
        dist.all_gather(sums, decoder_checksum(explainer).cpu())
        if len({float(s) for s in sums}) != 1:
            raise RuntimeError(f"decoders differ across ranks: {sums}")
    score = None
    if rank == 0:
        if distributed:
            print(f"decoder weights identical on all {world} ranks")
        test = SyntheticWSOL(20 if args.quick else 200, size=size, seed=1, split="test")
        batch = next(iter(DataLoader(test, batch_size=len(test))))
        with torch.no_grad():
            maps = explainer.explain(batch["image"].to(device), targets=batch["label"].to(device))
        score = pxap(maps, batch["mask"])
        print(f"F-CAM PxAP on the test split ({world} process(es)): {score:.1f}")
        explainer.save(args.out / "fcam_distributed.pt")
        print(f"wrote {args.out / 'fcam_distributed.pt'}")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return score


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()
