"""Pictures of what a transformer does: the sampling grid drawn on the input, and
the output next to it (as Table 1, right, of the STN paper)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["draw_grid", "to_uint8", "transformer_sheet"]

_RED = (230, 60, 40)


def to_uint8(image: np.ndarray, zoom: int) -> Image.Image:
    """``[H, W, C]`` in [0, 1] (C = 1 or 2) enlarged ``zoom`` times, as RGB."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 2:  # two channels: magenta and green
        image = np.stack([image[..., 0], image[..., 1], image[..., 0]], -1)
    else:
        image = np.repeat(image[..., :1], 3, -1)
    big = np.repeat(np.repeat(image, zoom, 0), zoom, 1)
    return Image.fromarray((big * 255).astype(np.uint8))


def draw_grid(
    image: np.ndarray, coords: np.ndarray, zoom: int, every: int = 6
) -> Image.Image:
    """The input, enlarged, with the sampling grid's border and some of its lines.

    Args:
        image: ``[H, W, C]`` in [0, 1].
        coords: ``[H', W', 2]`` normalised source coordinates of the output pixels
            (corner-aligned, ``(x, y)``).
        zoom: pixels per input pixel.
        every: draw every ``every``-th grid line (plus the border).
    """
    picture = to_uint8(image, zoom)
    draw = ImageDraw.Draw(picture)
    h, w = image.shape[:2]
    pixels = (coords + 1) / 2 * np.array(
        [w - 1, h - 1]
    ) * zoom + zoom / 2  # [H', W', 2]
    rows = sorted({0, *range(0, len(pixels), every), len(pixels) - 1})
    cols = sorted({0, *range(0, pixels.shape[1], every), pixels.shape[1] - 1})
    for r in rows:
        draw.line([tuple(p) for p in pixels[r]], fill=_RED, width=1)
    for c in cols:
        draw.line([tuple(p) for p in pixels[:, c]], fill=_RED, width=1)
    return picture


def transformer_sheet(
    images: np.ndarray,
    coords: np.ndarray,
    outputs: np.ndarray,
    captions: list[str] | None = None,
    zoom: int = 4,
    title: str = "",
) -> Image.Image:
    """Pairs (input with grid, transformer output), laid out in rows of four pairs.

    Args:
        images: ``[N, H, W, C]`` inputs in [0, 1].
        coords: ``[N, H', W', 2]`` the transformer's sampling grids.
        outputs: ``[N, H', W', C]`` the transformer's outputs.
        captions: one line under each pair (e.g. label and prediction).
        zoom: pixels per input pixel.
        title: text above.
    """
    pad, caption_h, header = 6, 14, 20 if title else 0
    h, w = images.shape[1:3]
    oh, ow = outputs.shape[1:3]
    out_zoom = max(1, round(zoom * h / oh))
    pair_w = w * zoom + pad + ow * out_zoom
    pair_h = max(h * zoom, oh * out_zoom) + caption_h
    columns = min(4, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new(
        "RGB",
        (columns * (pair_w + 2 * pad) + pad, header + rows * (pair_h + pad) + pad),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title, fill="black")
    for i in range(len(images)):
        x0 = pad + (i % columns) * (pair_w + 2 * pad)
        y0 = header + pad + (i // columns) * (pair_h + pad)
        sheet.paste(draw_grid(images[i], coords[i], zoom), (x0, y0))
        sheet.paste(to_uint8(outputs[i], out_zoom), (x0 + w * zoom + pad, y0))
        if captions:
            draw.text((x0, y0 + pair_h - caption_h + 1), captions[i], fill="black")
    return sheet
