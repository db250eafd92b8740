"""Progress bars: one policy for every tqdm bar fcam shows.

A bar is shown when ``enabled`` and its stream is a terminal or a Jupyter notebook; when the
stream is redirected to a file or a pipe (a log, CI), it is off, so logs do not fill with
carriage-return redraws. This is tqdm's own ``disable=None`` rule, which ``tqdm.notebook`` reads
as "shown". In a Jupyter kernel without ipywidgets, ``tqdm.auto`` falls back to the text bar,
whose rule would hide it (the kernel's stream is no terminal), so there it is forced on.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm
from tqdm.notebook import tqdm_notebook

__all__ = ["progress_bar"]


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)``, off unless ``enabled`` and on a terminal/notebook.

    Args:
        iterable: what to wrap (``None`` for a manual bar updated with ``update``).
        enabled: the caller's ``progress`` option; ``False`` always hides the bar.
        **kwargs: passed to tqdm (``desc``, ``total``, ``unit``, ``leave``...).

    Example:
        >>> sum(progress_bar(range(3), enabled=False, desc="count"))
        3
    """
    if "disable" in kwargs:
        raise TypeError("progress_bar takes enabled=, not disable=")
    disable: bool | None = None if enabled else True
    if enabled and _text_bar_in_kernel():
        disable = False
    return tqdm(iterable, disable=disable, **kwargs)


def _text_bar_in_kernel() -> bool:
    """Whether ``tqdm.auto`` fell back to the text bar inside a Jupyter kernel."""
    return not issubclass(tqdm, tqdm_notebook) and "ipykernel.zmqshell" in sys.modules
