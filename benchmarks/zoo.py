"""Every torchvision classification family (and timm's, when installed) with default F-CAM.

For each family's smallest builder (random weights) this prints the CAM layer that
``FCAM(model)`` chose, the pyramid strides (head first, ``-`` for a gap, ``t`` for token and
``c`` for channels-last features, ``a->b`` for a ViT block resampled from stride a to b), the
decoder, the ``explain`` time of one image (median of ``--repeats`` runs, after one fit step)
and the F-CAM decoder's parameter count.

    python benchmarks/zoo.py                 # 128 px inputs (224 for models that need it)
    python benchmarks/zoo.py --size 224 --repeats 5 --timm
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision.models as tvm

from fcam import FCAM

NOAUX = {"init_weights": False, "aux_logits": False}
# family -> (builder, kwargs, fixed input side or None)
TORCHVISION = {
    "alexnet": ("alexnet", {}, None),
    "vgg": ("vgg11", {}, None),
    "squeezenet": ("squeezenet1_1", {}, None),
    "resnet": ("resnet18", {}, None),
    "resnext": ("resnext50_32x4d", {}, None),
    "wide_resnet": ("wide_resnet50_2", {}, None),
    "densenet": ("densenet121", {}, None),
    "inception_v3": ("inception_v3", NOAUX, None),
    "googlenet": ("googlenet", NOAUX, None),
    "mobilenet_v2": ("mobilenet_v2", {}, None),
    "mobilenet_v3": ("mobilenet_v3_small", {}, None),
    "mnasnet": ("mnasnet0_5", {}, None),
    "shufflenet_v2": ("shufflenet_v2_x0_5", {}, None),
    "efficientnet": ("efficientnet_b0", {}, None),
    "efficientnet_v2": ("efficientnet_v2_s", {}, None),
    "regnet": ("regnet_x_400mf", {}, None),
    "convnext": ("convnext_tiny", {}, None),
    "vit": ("vit_b_16", {}, 224),
    "swin": ("swin_t", {}, None),
    "swin_v2": ("swin_v2_t", {}, None),
    "maxvit": ("maxvit_t", {}, 224),
}
TIMM = {
    "timm resnet": ("resnet18", None),
    "timm efficientnet": ("efficientnet_b0", None),
    "timm convnext": ("convnext_atto", None),
    "timm vit": ("vit_tiny_patch16_224", 224),
    "timm deit": ("deit_tiny_distilled_patch16_224", 224),
    "timm swin": ("swin_tiny_patch4_window7_224", 224),
}


def strides(fc: FCAM) -> str:
    def one(f: object) -> str:
        if f is None:
            return "-"
        mark = {"nchw": "", "nhwc": "c", "tokens": "t"}[f.layout]  # type: ignore[attr-defined]
        if f.grid_level is not None and f.grid_level != f.level:  # type: ignore[attr-defined]
            return f"{2 ** f.grid_level}->{2 ** f.level}{mark}"  # type: ignore[attr-defined]
        return f"{2 ** f.level}{mark}"  # type: ignore[attr-defined]

    return " ".join(one(f) for f in [fc.pyramid.head, *fc.pyramid.skips])


def measure(model: torch.nn.Module, side: int, repeats: int) -> tuple[FCAM, float]:
    gen = torch.Generator().manual_seed(0)
    fc = FCAM(model)
    fc.fit([torch.randn(2, 3, side, side, generator=gen)], epochs=1, progress=False)
    x = torch.randn(1, 3, side, side, generator=gen)
    fc.explain(x)  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fc.explain(x)
        times.append(time.perf_counter() - tic)
    return fc, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input side (default 128)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timm", action="store_true", help="also the timm families")
    parser.add_argument("--only", nargs="*", help="family names to run")
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    rows: list[tuple[str, ...]] = []
    jobs: list[tuple[str, object, int]] = []
    for family, (builder, kwargs, fixed) in TORCHVISION.items():
        jobs.append((family, lambda b=builder, k=kwargs: getattr(tvm, b)(weights=None, **k), fixed or args.size))
    if args.timm:
        import timm

        for family, (name, fixed) in TIMM.items():
            jobs.append((family, lambda n=name: timm.create_model(n, pretrained=False), fixed or args.size))
    header = ("family", "layer", "strides", "decoder", "explain ms", "F-CAM params")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for family, make, side in jobs:
        if args.only and family not in args.only:
            continue
        torch.manual_seed(0)
        model = make().eval()  # type: ignore[operator]
        try:
            fc, seconds = measure(model, side, args.repeats)
        except Exception as exc:  # report and go on: this is a survey
            rows.append((family, "ERROR", str(exc)[:80], "", "", ""))
            print(" | ".join(rows[-1]), flush=True)
            continue
        params = sum(p.numel() for p in fc.decoder.parameters())
        rows.append((f"{family} ({side} px)", fc.target_name, strides(fc), type(fc.decoder).__name__,
                     f"{seconds * 1000:.1f}", f"{params / 1e6:.2f} M"))  # fmt: skip
        print(" | ".join(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
