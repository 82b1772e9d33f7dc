"""Pictures of what transformers do: the sampling grids drawn on the input, and
the outputs next to it (as Table 1, right, of the STN paper; with several
transformers or glimpses, as Table 4 right of the STN paper and Figure 3 of the
RNN-SPN paper: one colour per transformer)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLOURS", "draw_grid", "image_sheet", "to_uint8", "transformer_sheet"]

_RED = (230, 60, 40)
COLOURS = (_RED, (40, 120, 255), (30, 170, 60), (240, 160, 0), (170, 60, 200))


def to_uint8(image: np.ndarray, zoom: int) -> Image.Image:
    """``[H, W, C]`` in [0, 1] (C = 1, 2 or 3) enlarged ``zoom`` times, as RGB."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 2:  # two channels: magenta and green
        image = np.stack([image[..., 0], image[..., 1], image[..., 0]], -1)
    elif image.shape[-1] != 3:
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
            (corner-aligned, ``(x, y)``), or ``[K, H', W', 2]`` for K grids: each is
            drawn in its colour of ``COLOURS``, border only.
        zoom: pixels per input pixel.
        every: draw every ``every``-th grid line (plus the border).
    """
    picture = to_uint8(image, zoom)
    draw = ImageDraw.Draw(picture)
    h, w = image.shape[:2]
    coords = np.asarray(coords)
    grids = coords if coords.ndim == 4 else coords[None]
    if len(grids) > 1:
        every = max(grids.shape[1:3])  # borders only: K grids of lines are a mess
    for k, grid in enumerate(grids):
        colour = COLOURS[k % len(COLOURS)]
        pixels = (grid + 1) / 2 * np.array([w - 1, h - 1]) * zoom + zoom / 2
        rows = sorted({0, *range(0, len(pixels), every), len(pixels) - 1})
        cols = sorted({0, *range(0, pixels.shape[1], every), pixels.shape[1] - 1})
        for r in rows:
            draw.line([tuple(p) for p in pixels[r]], fill=colour, width=1)
        for c in cols:
            draw.line([tuple(p) for p in pixels[:, c]], fill=colour, width=1)
    return picture


def transformer_sheet(
    images: np.ndarray,
    coords: np.ndarray,
    outputs: np.ndarray,
    captions: list[str] | None = None,
    zoom: int = 4,
    title: str = "",
) -> Image.Image:
    """Input with grids, then the transformers' outputs; in rows of up to four.

    Args:
        images: ``[N, H, W, C]`` inputs in [0, 1].
        coords: ``[N, H', W', 2]`` the transformer's sampling grids, or
            ``[N, K, H', W', 2]`` for K transformers (or glimpses).
        outputs: ``[N, H', W', C]`` the transformer's outputs (``[N, K, H', W', C]``),
            framed in their grid's colour when K > 1. One output with K grids
            (transformers in a chain, ST-CNN Multi) shows the K grids and the one
            output.
        captions: one line under each group (e.g. label and prediction).
        zoom: pixels per input pixel.
        title: text above.
    """
    pad, caption_h, header = 6, 14, 20 if title else 0
    outputs, coords = np.asarray(outputs), np.asarray(coords)
    if outputs.ndim == 4:  # one output (and one grid, or K chained grids)
        outputs = outputs[:, None]
        coords = coords[:, None] if coords.ndim == 4 else coords
    k = outputs.shape[1]
    h, w = images.shape[1:3]
    oh, ow = outputs.shape[2:4]
    out_zoom = max(1, round(zoom * h / oh / (1 if k == 1 else 2)))
    pair_w = w * zoom + k * (pad + ow * out_zoom)
    pair_h = max(h * zoom, oh * out_zoom) + caption_h
    columns = min(4 if k == 1 else 2, len(images))
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
        for j in range(k):
            x = x0 + w * zoom + pad + j * (ow * out_zoom + pad)
            sheet.paste(to_uint8(outputs[i, j], out_zoom), (x, y0))
            if k > 1:
                box = (x - 1, y0 - 1, x + ow * out_zoom, y0 + oh * out_zoom)
                draw.rectangle(box, outline=COLOURS[j % len(COLOURS)])
        if captions:
            draw.text((x0, y0 + pair_h - caption_h + 1), captions[i], fill="black")
    return sheet


def image_sheet(
    images: np.ndarray, captions: list[str], zoom: int = 4, title: str = ""
) -> Image.Image:
    """Inputs with a caption under each, in rows of up to eight: a model with no
    transformer to draw (its predictions in the captions).

    Args:
        images: ``[N, H, W, C]`` in [0, 1].
        captions: one line under each image.
        zoom: pixels per input pixel.
        title: text above.
    """
    pad, caption_h, header = 6, 14, 20 if title else 0
    h, w = images.shape[1:3]
    columns = min(8, len(images))
    rows = -(-len(images) // columns)
    sheet = Image.new(
        "RGB",
        (
            pad + columns * (w * zoom + pad),
            header + pad + rows * (h * zoom + caption_h + pad),
        ),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title, fill="black")
    for i, image in enumerate(images):
        x0 = pad + (i % columns) * (w * zoom + pad)
        y0 = header + pad + (i // columns) * (h * zoom + caption_h + pad)
        sheet.paste(to_uint8(image, zoom), (x0, y0))
        draw.text((x0, y0 + h * zoom + 1), captions[i], fill="black")
    return sheet
