"""The confusion matrix of the model card as a PNG heat map, for the web page's Model panel.

Drawn here with Pillow (already a server dependency) because the server image ships without matplotlib; the
training report draws the same matrix with matplotlib (training/report.py).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 44  # px per cell: room for a four-digit count at FONT_SIZE
FONT_SIZE = 14
MARGIN = 8
LOW, HIGH = np.array([255, 255, 255]), np.array([23, 73, 160])  # white to a dark version of the page's blue
INK, PAPER = (16, 24, 40), (255, 255, 255)


def matrix_of(card_metrics: dict[str, Any], num_classes: int) -> np.ndarray | None:
    """The card's ``confusion_matrix`` as a (K, K) count array, or None when it has none (a card written before
    the matrix was recorded, or a run with no test split) or it does not fit the classes."""
    try:
        matrix = np.asarray(card_metrics.get("confusion_matrix"), dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if matrix.shape != (num_classes, num_classes) or (matrix < 0).any():
        return None
    return matrix


def _font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (Pillow >= 10.1)
    except TypeError:  # Pillow 10.0: its fixed bitmap font
        return ImageFont.load_default()


def _text_width(font: Any, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def _vertical_label(text: str, font: Any, height: int) -> Image.Image:
    """``text`` read bottom to top from the bottom of a line-wide strip ``height`` tall."""
    strip = Image.new("RGB", (height, FONT_SIZE + 6), PAPER)
    ImageDraw.Draw(strip).text((2, 2), text, font=font, fill=INK)
    return strip.rotate(90, expand=True)


def confusion_png(matrix: np.ndarray, class_names: list[str]) -> bytes:
    """Rows: true class; columns: predicted. Colour: the share of the row, so every class reads alike."""
    font = _font()
    size = len(class_names)
    label_width = max(_text_width(font, name) for name in class_names) + 2 * MARGIN
    left, top = label_width + FONT_SIZE + MARGIN, label_width + FONT_SIZE + MARGIN
    image = Image.new("RGB", (left + size * CELL + MARGIN, top + size * CELL + MARGIN), PAPER)
    draw = ImageDraw.Draw(image)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    for (row, column), count in np.ndenumerate(matrix):
        x, y = left + column * CELL, top + row * CELL
        fill = tuple(int(v) for v in LOW + (HIGH - LOW) * shares[row, column])
        draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=fill, outline=(208, 213, 221))
        text = str(count)
        ink = PAPER if shares[row, column] > 0.5 else INK
        draw.text(
            (x + (CELL - _text_width(font, text)) // 2, y + (CELL - FONT_SIZE) // 2 - 1), text, font=font, fill=ink
        )
    for index, name in enumerate(class_names):
        row_y = top + index * CELL + (CELL - FONT_SIZE) // 2 - 1
        draw.text((left - MARGIN - _text_width(font, name), row_y), name, font=font, fill=INK)
        image.paste(
            _vertical_label(name, font, label_width - MARGIN),
            (left + index * CELL + (CELL - FONT_SIZE) // 2 - 3, FONT_SIZE + MARGIN),
        )
    draw.text((left, 0), "predicted class", font=font, fill=INK)
    image.paste(_vertical_label("true class", font, _text_width(font, "true class") + 2), (0, top))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
