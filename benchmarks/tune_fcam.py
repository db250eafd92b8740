"""Tune F-CAM on SyntheticWSOL: PxAP of the interpolated seed CAM vs F-CAM for one option set.

Uses the demo's cached classifier (``--quick`` preset by default: resnet18, 128 px, 600 images,
5 epochs; trained and cached on first use). Prints one ``RESULT {json}`` line and writes
``maps_<tag>.png`` (rows: image, mask, CAM, F-CAM) to ``$FCAM_TUNE_OUT`` (default: cwd).

Usage (the measurements quoted in the fcam.explainer package docstring)::

    python benchmarks/tune_fcam.py '{"tag": "w3e-8", "crf_weight": 3e-8, "n_train": 192, "epochs": 2}'
"""
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from fcam import FCAM
from fcam.data import SyntheticWSOL
from fcam.demo import train_classifier
from fcam.demo.pipeline import DemoConfig
from fcam.metrics import pxap

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
opts = json.loads(sys.argv[1])
tag = opts.pop("tag")
n_train = opts.pop("n_train", 200); epochs = opts.pop("epochs", 2); bs = opts.pop("bs", 16)
lr = opts.pop("lr", 0.01); cam = opts.pop("cam", "gradcampp"); n_test = opts.pop("n_test", 100)
clf_cfg = opts.pop("clf", "quick")
cfg = (DemoConfig.quick() if clf_cfg == "quick" else DemoConfig()).classifier_config()
model = train_classifier(cfg, device="cpu", progress=False)
train = SyntheticWSOL(cfg.n_train, size=cfg.image_size, seed=cfg.data_seed, split="train")
test = SyntheticWSOL(n_test, size=cfg.image_size, seed=0, split="test")
torch.manual_seed(0)
loader = DataLoader(Subset(train, range(n_train)), batch_size=bs, shuffle=True, drop_last=True)
fc = FCAM(model, "layer4", cam=cam, **opts)
t0 = time.time()
hist = fc.fit(loader, epochs=epochs, lr=lr, progress=False)
fit_s = time.time() - t0
maps, cams, masks = [], [], []
for b in DataLoader(test, batch_size=50):
    m, c = fc.explain(b["image"], targets=b["label"], return_cam=True)
    maps.append(m); cams.append(c); masks.append(b["mask"])
maps, cams, masks = torch.cat(maps), torch.cat(cams), torch.cat(masks)
res = {"tag": tag, "cam_pxap": pxap(cams, masks), "fcam_pxap": pxap(maps, masks), "fit_s": round(fit_s),
       "hist": [{k: round(v, 4) for k, v in h.items()} for h in hist]}
print("RESULT", json.dumps(res), flush=True)
# Picture: rows = raw, mask, cam, fcam for 8 test images.
raw = torch.stack([test[i]["raw"] for i in range(8)]).permute(0, 2, 3, 1).numpy()
def gray(x): return (np.repeat(x[..., None], 3, -1) * 255).astype(np.uint8)
rows = [np.concatenate(list(raw), 1), np.concatenate([gray(masks[i].float().numpy()) for i in range(8)], 1),
        np.concatenate([gray(cams[i].numpy()) for i in range(8)], 1), np.concatenate([gray(maps[i].numpy()) for i in range(8)], 1)]
Image.fromarray(np.concatenate(rows, 0)).save(os.path.join(os.environ.get("FCAM_TUNE_OUT", "."), f"maps_{tag}.png"))
