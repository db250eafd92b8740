"""fcam.core.progress: bars on terminals, none in redirected logs, none when switched off."""

from __future__ import annotations

import io

import pytest

from fcam.core.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream: io.StringIO, enabled: bool) -> str:
    assert list(progress_bar(range(3), enabled=enabled, file=stream, desc="steps")) == [0, 1, 2]
    return stream.getvalue()


def test_bar_is_drawn_on_a_terminal() -> None:
    assert "steps" in _run(_Terminal(), enabled=True) and "3/3" in _run(_Terminal(), enabled=True)


def test_no_bar_in_a_redirected_stream() -> None:
    assert _run(io.StringIO(), enabled=True) == ""


def test_no_bar_when_switched_off() -> None:
    assert _run(_Terminal(), enabled=False) == ""


def test_manual_bar_and_bad_keyword() -> None:
    stream = _Terminal()
    bar = progress_bar(total=2, enabled=True, file=stream, unit="img")
    bar.update(2)
    bar.close()
    assert "2/2" in stream.getvalue()
    with pytest.raises(TypeError, match="enabled="):
        progress_bar(range(2), disable=True)


def test_text_bar_is_drawn_in_a_jupyter_kernel_without_ipywidgets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Outside a kernel tqdm.auto is the text bar; a loaded ipykernel shell module is what
    # tqdm.auto itself looks for, and the kernel's stream is no terminal.
    import sys
    import types

    from tqdm.notebook import tqdm_notebook

    from fcam.core import progress

    assert not issubclass(progress.tqdm, tqdm_notebook)
    monkeypatch.setitem(sys.modules, "ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))
    assert "3/3" in _run(io.StringIO(), enabled=True)
    assert _run(io.StringIO(), enabled=False) == ""
