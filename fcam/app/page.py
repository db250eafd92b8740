"""The Gradio page of ``fcam app``: a thin layer over :func:`fcam.app.core.explain_image`.

Gradio is an optional extra (``pip install "fcam[app]"``) imported only by :func:`build_page`
and :func:`serve`. Every handler turns a ``ValueError`` from the core into a message on the
page; an unexpected error is logged on the server and shown in one line, never as a trace.

Files: uploads, the example images, Gradio's cache and the map downloads all live in one
temporary folder, which :func:`serve` removes when the server stops (Ctrl-C, SIGTERM).

Example:
    >>> from fcam.app.page import AppConfig, serve              # doctest: +SKIP
    >>> serve(AppConfig(model, spec, fcam=explainer), port=7860)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import ipaddress
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fcam.app.core import (
    MAX_PIXELS,
    Explanation,
    applicable_methods,
    explain_image,
    load_checkpoint,
    method_label,
    shrink_image,
)
from fcam.app.examples import example_images
from fcam.core.io import atomic_write_bytes, atomic_write_png

__all__ = ["INSTALL_HINT", "AppConfig", "build_page", "is_loopback", "require_gradio", "serve"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'the app needs Gradio: pip install "fcam[app]"'
#: Longer side of the overlays shown on the page (downloads keep the image's resolution).
DISPLAY_SIDE = 512
_DEFAULT_METHODS = ("gradcam",)
#: Browser sessions whose last result is kept (for the threshold slider); a local page rarely
#: has more, and each holds an uploaded image.
_SESSIONS = 32


@dataclass
class AppConfig:
    """What the page explains.

    Attributes:
        model: the classifier (eval mode, frozen).
        spec: its :class:`~fcam.models.ClassifierSpec`.
        fcam: a fitted :class:`~fcam.FCAM` for ``model`` or ``None`` (one can be uploaded).
        class_names: labels of the classes (default ``class k``).
        title: what the page says it shows (e.g. the classifier file's name).
        max_pixels: largest image accepted (:data:`fcam.app.core.MAX_PIXELS`).
        methods: CAM methods offered; default: every one that applies to ``model``.
    """

    model: nn.Module
    spec: Any
    fcam: Any = None
    class_names: Sequence[str] | None = None
    title: str = "classifier"
    max_pixels: int = MAX_PIXELS
    methods: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.methods:
            self.methods = applicable_methods(self.model, self.spec)


def require_gradio() -> Any:
    """``import gradio``, or ``ImportError`` with :data:`INSTALL_HINT` (and the cause)."""
    try:
        import gradio
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from None
    return gradio


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _message(text: str, error: bool = True) -> str:
    return f"**{'Cannot explain this' if error else 'Note'}:** {text}" if text else ""


def _release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's ``malloc_trim``; a no-op elsewhere),
    so the server's resident memory follows its live data instead of its peak."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Handlers:
    """The page's callbacks; each returns values for its outputs, never raises.

    Every model call runs on one worker thread: the model's hooks and modes are shared by all
    requests, and memory allocated by one thread stays in one malloc arena (Gradio's pool
    threads would each grow their own, and the server's memory with them).
    """

    def __init__(self, config: AppConfig, folder: Path) -> None:
        self.config, self.folder = config, folder
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcam-app")

    def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        def job() -> Any:
            try:
                return fn(*args)
            finally:
                _release_memory()

        return self.worker.submit(job).result()

    def explain(self, path: str | None, target: Any, methods: list[str], threshold: float,
                session: str) -> tuple[Any, ...]:
        gr = require_gradio()
        keep = (gr.skip(),) * 5
        if not path:
            return (*keep, "")
        config = self.config
        try:
            result, tiles, files = self._on_worker(self._explain, path, target, methods,
                                                   threshold, session)
        except ValueError as exc:
            return (None, [], gr.update(choices=[], value=None), gr.skip(), [], _message(str(exc)))
        except Exception as exc:
            logger.exception("fcam app: internal error")
            return (*keep, _message(f"internal error ({type(exc).__name__}: {exc})"))
        choices = [(f"{_named(p.label, p.index)}: {100 * p.probability:.1f} %", p.index)
                   for p in result.predictions]
        shown = result.target if any(p.index == result.target for p in result.predictions) else None
        note = "" if methods or config.fcam is not None else _message(
            "choose at least one CAM method", error=False)
        return (result, tiles, gr.update(choices=choices, value=shown), result.target, files, note)

    def _explain(self, path: str, target: Any, methods: list[str], threshold: float,
                 session: str) -> tuple[Explanation, list[tuple[Any, str]], list[str]]:
        config = self.config
        result = explain_image(
            path, None if target in (None, "") else target, methods or [], config.model,
            config.spec, fcam=config.fcam, threshold=threshold, class_names=config.class_names,
            max_pixels=config.max_pixels,
        )
        return result, self._tiles(result, threshold), self._write_maps(result, session)

    def redraw(self, result: Explanation | None, threshold: float) -> Any:
        gr = require_gradio()
        return gr.skip() if result is None else self._on_worker(self._tiles, result, threshold)

    def load_checkpoint(self, path: str | None) -> str:
        if not path:
            return ""
        try:
            explainer = self._on_worker(load_checkpoint, path, self.config.model)
        except ValueError as exc:
            return _message(str(exc))
        self.config.fcam = explainer
        return _message(f"F-CAM checkpoint {Path(path).name} loaded", error=False)

    def _tiles(self, result: Explanation, threshold: float) -> list[tuple[Any, str]]:
        tiles: list[tuple[Any, str]] = [(shrink_image(result.image, DISPLAY_SIDE), "image")]
        for name, seconds in result.seconds.items():
            tile = result.overlay(name, threshold, max_side=DISPLAY_SIDE)
            tiles.append((tile, f"{method_label(name)} · {1000 * seconds:.0f} ms"))
        return tiles

    def _write_maps(self, result: Explanation, session: str) -> list[str]:
        """Each map at the image's resolution as an 8-bit PNG and a float32 ``.npy``, in a
        per-session folder emptied first (so the disk use does not grow with uploads)."""
        folder = self.folder / "maps" / ("".join(c for c in session if c.isalnum())[:64] or "anon")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = []
        for name in result.maps:
            full = result.full_map(name)
            stem = f"{name}-class{result.target}"
            pixels = np.clip(np.rint(full * 255.0), 0, 255).astype(np.uint8)
            files.append(str(atomic_write_png(folder / f"{stem}.png", pixels)))
            buffer = io.BytesIO()
            np.save(buffer, full)
            files.append(str(atomic_write_bytes(folder / f"{stem}.npy", buffer.getvalue())))
        return files


def _named(label: str, index: int) -> str:
    return label if label == f"class {index}" else f"{label} (class {index})"


def build_page(config: AppConfig, folder: str | os.PathLike[str]) -> Any:
    """The ``gradio.Blocks`` page; ``folder`` receives the example images and downloads."""
    gr = require_gradio()
    folder = Path(folder)
    handlers = _Handlers(config, folder)
    examples = example_images(folder / "examples", count=3, size=max(config.spec.size, 64))
    checkpoint = "with F-CAM" if config.fcam is not None else "no F-CAM checkpoint loaded"
    with gr.Blocks(title="fcam app", analytics_enabled=False, delete_cache=(300, 600)) as page:
        gr.Markdown(
            f"## fcam: where does the classifier look?\n{config.title} · input "
            f"{config.spec.size} px · {checkpoint}. Upload an image or pick an example."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Image", type="filepath", elem_id="upload")
                gr.Examples([[str(p)] for p in examples], inputs=[upload], label="Examples")
                methods = gr.CheckboxGroup(
                    [(method_label(m), m) for m in config.methods],
                    value=[m for m in _DEFAULT_METHODS if m in config.methods][:1]
                    or config.methods[:1],
                    label="CAM methods", elem_id="methods",
                )
                top5 = gr.Radio([], label="Top-5 predictions (choose one to explain it)",
                                elem_id="top5")
                target = gr.Number(None, label="Class explained (empty: the top prediction)",
                                   precision=0, elem_id="target")
                threshold = gr.Slider(0, 1, 0.5, step=0.01, elem_id="threshold",
                                      label="Box threshold (share of each map's maximum)")
                fcam_file = gr.File(label="F-CAM checkpoint (.pt, optional)", type="filepath")
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(label="Overlays", columns=4, format="png", height="auto",
                                     object_fit="contain", elem_id="overlays")
                downloads = gr.File(label="Maps at the image's resolution (PNG and .npy)",
                                    file_count="multiple", interactive=False, elem_id="downloads")
        state = gr.State(None)

        def run(path: str | None, cls: Any, names: list[str], tau: float,
                request: Any) -> tuple[Any, ...]:
            return handlers.explain(path, cls, names, tau, request.session_hash or "anon")

        def run_new(path: str | None, names: list[str], tau: float,
                    request: Any) -> tuple[Any, ...]:
            return run(path, None, names, tau, request)  # a new image: its top prediction

        # Gradio injects the request by the parameter's type, set here because Gradio is
        # imported in this function only.
        run.__annotations__["request"] = run_new.__annotations__["request"] = gr.Request
        outputs = [state, gallery, top5, target, downloads, status]
        upload.change(run_new, [upload, methods, threshold], outputs)
        for event in (methods.change, target.submit):
            event(run, [upload, target, methods, threshold], outputs)
        top5.input(run, [upload, top5, methods, threshold], outputs)
        threshold.release(handlers.redraw, [state, threshold], [gallery])
        fcam_file.upload(handlers.load_checkpoint, [fcam_file], [status]).then(
            run, [upload, target, methods, threshold], outputs)
    return page


def serve(config: AppConfig, host: str = "127.0.0.1", port: int | None = None,
          ready: Any = None) -> int:
    """Serve the page until Ctrl-C or SIGTERM, then remove the temporary folder.

    Args:
        config: what to explain.
        host: address to listen on; anything but a loopback address is warned about (the page
            has no authentication).
        port: TCP port (``None``: Gradio picks a free one from 7860).
        ready: called with the page's URL once it is served.

    Returns:
        0 once stopped.
    """
    folder = Path(tempfile.mkdtemp(prefix="fcam-app-"))
    # Uploads and Gradio's cache go to the folder: Gradio reads GRADIO_TEMP_DIR when imported.
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    tempfile.tempdir = str(folder)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    page = None
    try:
        gr = require_gradio()
        if not is_loopback(host):
            logger.warning("listening on %s: the page has no authentication, anyone who can "
                           "reach this address can use the model and upload files", host)
        page = build_page(config, folder)
        theme = gr.themes.Default(font=["system-ui", "sans-serif"],
                                  font_mono=["ui-monospace", "monospace"])  # no web fonts
        _, url, _ = page.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
            share=False, show_error=False, footer_links=[], enable_monitoring=False,
            run_history=False, mcp_server=False, ssr_mode=False, theme=theme,
            allowed_paths=[str(folder)], max_file_size=max(config.max_pixels * 4, 1 << 20),
            state_session_capacity=_SESSIONS,
        )
        print(f"fcam app: serving {url} (Ctrl-C to stop)", flush=True)
        if ready is not None:
            ready(url)
        while not stop.wait(0.5):
            pass
    finally:
        if page is not None:
            page.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        tempfile.tempdir = None
        shutil.rmtree(folder, ignore_errors=True)
    print("fcam app: stopped", flush=True)
    return 0
