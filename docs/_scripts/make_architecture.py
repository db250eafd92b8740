"""Draw the F-CAM architecture diagram used in ``docs/concepts/fcam.md``.

Run from the repository root::

    python docs/_scripts/make_architecture.py            # writes docs/_static/fcam_architecture.png

Only Pillow is needed. The picture is committed; re-run this script after editing it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1280, 700
FROZEN = (200, 205, 214)
TRAINABLE = (250, 176, 92)
CAM_COLOUR = (146, 200, 240)
LOSS_COLOUR = (240, 150, 150)
INK = (30, 30, 30)
SKIP = (60, 130, 60)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _box(draw: ImageDraw.ImageDraw, xy: tuple[int, int, int, int], fill: tuple[int, int, int],
         text: str, size: int = 15) -> None:
    draw.rounded_rectangle(xy, radius=8, fill=fill, outline=INK, width=2)
    x0, y0, x1, y1 = xy
    draw.multiline_text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=INK, font=_font(size),
                        anchor="mm", align="center", spacing=3)


def _arrow(draw: ImageDraw.ImageDraw, points: list[tuple[int, int]], colour: tuple[int, int, int] = INK,
           width: int = 3, dashed: bool = False) -> None:
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        if dashed:
            length = max(abs(xb - xa), abs(yb - ya))
            for start in range(0, length, 14):
                end = min(start + 8, length)
                draw.line([(xa + (xb - xa) * start / length, ya + (yb - ya) * start / length),
                           (xa + (xb - xa) * end / length, ya + (yb - ya) * end / length)],
                          fill=colour, width=width)
        else:
            draw.line([(xa, ya), (xb, yb)], fill=colour, width=width)
    (xa, ya), (xb, yb) = points[-2], points[-1]
    dx, dy = xb - xa, yb - ya
    norm = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    ux, uy = dx / norm, dy / norm
    head = [(xb, yb), (xb - 12 * ux + 6 * uy, yb - 12 * uy - 6 * ux),
            (xb - 12 * ux - 6 * uy, yb - 12 * uy + 6 * ux)]
    draw.polygon(head, fill=colour)


def draw_architecture() -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    title = _font(20)
    draw.text((20, 14), "F-CAM: a trainable U-Net decoder on a frozen classifier", fill=INK,
              font=title)

    # Input image.
    _box(draw, (20, 90, 125, 230), (235, 235, 235), "image x\n3 x H x W")

    # Encoder: feature pyramid f1..f5 of the frozen classifier (shrinking blocks).
    enc_x = [160, 300, 440, 580, 720]
    heights = [150, 124, 100, 80, 64]
    labels = ["f1\nH/2", "f2\nH/4", "f3\nH/8", "f4\nH/16", "f5 = target\nlayer, H/32"]
    centre_y = 160
    enc_boxes = []
    for x, h, label in zip(enc_x, heights, labels):
        box = (x, centre_y - h // 2, x + 110, centre_y + h // 2)
        _box(draw, box, FROZEN, label)
        enc_boxes.append(box)
    _arrow(draw, [(125, centre_y), (enc_x[0], centre_y)])
    for left, right in zip(enc_boxes, enc_boxes[1:]):
        _arrow(draw, [(left[2], centre_y), (right[0], centre_y)])
    draw.text((160, 62), "frozen classifier encoder (requires_grad=False, eval-mode BN)",
              fill=INK, font=_font(15))

    # Classifier head and CAM branch.
    _box(draw, (880, 110, 1010, 210), FROZEN, "GAP + FC\n(frozen)\nlogits")
    _arrow(draw, [(enc_boxes[-1][2], centre_y), (880, centre_y)])
    _box(draw, (1050, 90, 1260, 230), CAM_COLOUR, "CAM extractor\n(CAM, Grad-CAM++, ...)\nclass c = label\nlow-res map")
    _arrow(draw, [(1010, centre_y), (1050, centre_y)])

    # Decoder: grows back to full resolution (trainable), right to left.
    dec_y = 450
    dec_x = [580, 440, 300, 160, 20]
    dec_labels = ["D1\nH/16", "D2\nH/8", "D3\nH/4", "D4\nH/2", "D5\nH"]
    dec_heights = [70, 88, 108, 130, 150]
    dec_boxes = []
    for x, h, label in zip(dec_x, dec_heights, dec_labels):
        box = (x, dec_y - h // 2, x + 110, dec_y + h // 2)
        _box(draw, box, TRAINABLE, label)
        dec_boxes.append(box)
    # f5 (head) feeds the first decoder block.
    head_x = (enc_boxes[-1][0] + enc_boxes[-1][2]) // 2
    _arrow(draw, [(head_x, enc_boxes[-1][3]), (head_x, dec_y), (dec_boxes[0][2], dec_y)])
    for right, left in zip(dec_boxes, dec_boxes[1:]):
        _arrow(draw, [(right[0], dec_y), (left[2], dec_y)])
    # Skips: f4 -> D1, f3 -> D2, f2 -> D3, f1 -> D4 (concatenated after 2x upsampling).
    for enc_box, dec_box in zip(enc_boxes[3::-1], dec_boxes[:4]):
        x = (enc_box[0] + enc_box[2]) // 2
        _arrow(draw, [(x, enc_box[3]), (x, dec_box[1])], colour=SKIP, width=3, dashed=True)
    draw.text((232, 250), "skip connections (detached features)", fill=SKIP, font=_font(15))
    draw.text((160, 540), "trainable U-Net decoder: upsample x2, concat skip, 2 x (conv3x3-BN-ReLU)",
              fill=INK, font=_font(15))

    # Segmentation head and output.
    _box(draw, (20, 580, 170, 680), TRAINABLE, "seg. head: conv3x3\n2-channel logits\nH x W")
    _arrow(draw, [(75, dec_boxes[-1][3]), (75, 580)])
    _box(draw, (220, 580, 400, 680), (255, 240, 200), "F-CAM map\nsoftmax(.)[fg]\nfull resolution")
    _arrow(draw, [(170, 630), (220, 630)])

    # Losses.
    _box(draw, (900, 330, 1260, 400), LOSS_COLOUR,
         "seed loss: CE on pseudo-labels\n(Otsu + erosion -> fg, lowest CAM -> bg)")
    _box(draw, (900, 420, 1260, 490), LOSS_COLOUR, "dense CRF loss\n(colour + position affinities on x)")
    _box(draw, (900, 510, 1260, 580), LOSS_COLOUR, "size loss: log-barrier\nkeeps fg and bg non-empty")
    _arrow(draw, [(1155, 230), (1155, 330)])
    draw.text((1165, 270), "seeds", fill=INK, font=_font(15))
    _arrow(draw, [(75, 230), (75, 300), (870, 300), (870, 455), (900, 455)], colour=(120, 120, 120))
    draw.text((420, 282), "raw image for the CRF term", fill=(90, 90, 90), font=_font(14))
    _arrow(draw, [(400, 660), (880, 660), (880, 545), (900, 545)], colour=(120, 120, 120))
    draw.text((430, 640), "decoder probabilities feed all three losses", fill=(90, 90, 90),
              font=_font(14))
    draw.text((900, 600), "L = seed + CRF + size;\nonly the decoder is updated", fill=INK,
              font=_font(15))
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "_static" / "fcam_architecture.png"
    parser.add_argument("--output", type=Path, default=default)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    draw_architecture().save(args.output)


if __name__ == "__main__":
    main()
