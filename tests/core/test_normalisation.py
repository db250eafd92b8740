"""fcam.core.normalisation: raw RGB to classifier inputs, RGB and grey."""

from __future__ import annotations

import pytest
import torch

from fcam.core.normalisation import LUMA_WEIGHTS, normalise_raw


def test_rgb_statistics_per_channel_by_hand() -> None:
    raw = torch.tensor([51, 102, 255], dtype=torch.uint8).view(3, 1, 1)
    out = normalise_raw(raw, (0.2, 0.4, 0.5), (0.1, 0.2, 0.25))
    # (51/255 - 0.2)/0.1 = 0, (102/255 - 0.4)/0.2 = 0, (1 - 0.5)/0.25 = 2
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.0, 2.0]))


def test_grey_statistics_give_the_luma_channel() -> None:
    raw = torch.tensor([[[200]], [[100]], [[50]]], dtype=torch.uint8).expand(2, 3, 2, 2)
    out = normalise_raw(raw, (0.5,), (0.25,))
    luma = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert out.shape == (2, 1, 2, 2)
    torch.testing.assert_close(out, torch.full((2, 1, 2, 2), (luma - 0.5) / 0.25))
    assert sum(LUMA_WEIGHTS) == pytest.approx(1.0)


def test_a_grey_picture_keeps_its_value() -> None:
    grey = torch.arange(0, 256, 51, dtype=torch.uint8).view(1, 1, -1).expand(3, 1, -1)
    torch.testing.assert_close(
        normalise_raw(grey, (0.0,), (1.0,))[0], grey[0].float() / 255, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    ("shape", "stats", "match"),
    [((1, 4, 4), ((0.5,), (0.5,)), "RGB"), ((3, 4, 4), ((0.5,) * 2, (0.5,) * 2), "1 \\(grey\\) or 3"),
     ((3, 4, 4), ((0.5,), (0.5,) * 3), "1 \\(grey\\) or 3")],
)
def test_bad_input(shape: tuple[int, ...], stats: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalise_raw(torch.zeros(shape, dtype=torch.uint8), *stats)
