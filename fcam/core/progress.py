"""Progress bars: one policy for every tqdm bar fcam shows.

A bar is shown when ``enabled`` and its stream is a terminal or a Jupyter notebook (with
ipywidgets); when the stream is redirected to a file or a pipe (a log, CI), it is off, so logs
do not fill with carriage-return redraws. This is tqdm's own ``disable=None`` rule, which
``tqdm.notebook`` reads as "shown".
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

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
    return tqdm(iterable, disable=None if enabled else True, **kwargs)
