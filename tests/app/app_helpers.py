"""Helpers of the ``fcam app`` tests: a tiny classifier file with a fitted F-CAM, and a
server started as a real ``fcam app`` process on a free loopback port."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fcam import FCAM
from fcam.data import SyntheticWSOL
from fcam.demo import build_classifier, save_classifier

SIZE = 64
REPO = Path(__file__).resolve().parents[2]


def write_tiny_models(folder: Path, classifier: Path | None = None,
                      checkpoint: Path | None = None) -> tuple[Path, Path]:
    """A random 5-class resnet18 classifier file (64 px) and an F-CAM fitted on it briefly."""
    classifier = classifier or folder / "classifier.pt"
    checkpoint = checkpoint or folder / "fcam.pt"
    torch.manual_seed(0)
    model = build_classifier(5).eval()
    classifier.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_classifier(model, classifier, arch="resnet18", image_size=SIZE)
    fc = FCAM(model, target_layer="layer4", cam="gradcampp")
    fc.fit(DataLoader(SyntheticWSOL(4, size=SIZE, seed=1), batch_size=4), epochs=1,
           progress=False)
    fc.save(checkpoint)
    return classifier, checkpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AppProcess:
    """``python -m fcam app ARGS`` with its own TMPDIR; :meth:`wait_ready` returns the URL."""

    def __init__(self, args: list[str], tmpdir: Path, env: dict[str, str] | None = None) -> None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        self.tmpdir = tmpdir
        self.port = free_port()
        full_env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO),
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fcam", "app", *args, "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
            cwd=tmpdir,
        )
        self.output: list[str] = []

    def wait_ready(self, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                if not line and self.proc.poll() is not None:
                    break
                self.output.append(line)
                if line.startswith("fcam app: serving "):
                    return line.split()[3]
            elif self.proc.poll() is not None:
                break
        raise AssertionError(f"fcam app did not start:\n{''.join(self.output)}")

    def stop(self, sig: int = 2, timeout: float = 60.0) -> str:
        """Send ``sig`` (SIGINT by default) and return the rest of the output."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rest, _ = self.proc.communicate(timeout=timeout)
        return "".join(self.output) + rest

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
