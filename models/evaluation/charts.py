"""Small charts drawn with Pillow for the evaluation reports (no plotting library needed)."""

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75)]


def load_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (760, 420),
    x_ticks: dict[float, str] | None = None,
) -> Image.Image:
    """One line per series over shared axes, with a legend; y starts at 0. ``x_ticks``: where the
    x axis is labelled, and with what (default: five evenly spaced numbers)."""
    width, height = size
    left, right, top, bottom = 60, 20, 40, 110
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, small = load_font(14), load_font(11)
    xs = [x for points in series.values() for x, _ in points] or [0, 1]
    ys = [y for points in series.values() for _, y in points] or [0, 1]
    x_max, y_max = max(max(xs), 1), max(max(ys) * 1.1, 1e-6)
    plot_w, plot_h = width - left - right, height - top - bottom

    def at(x: float, y: float) -> tuple[float, float]:
        return left + plot_w * x / x_max, top + plot_h * (1 - y / y_max)

    draw.text((width / 2, 18), title, fill="black", font=font, anchor="mm")
    draw.rectangle((left, top, left + plot_w, top + plot_h), outline="black")
    for tick in np.linspace(0, y_max, 5):
        _, y = at(0, tick)
        draw.line((left, y, left + plot_w, y), fill=(230, 230, 230))
        draw.text((left - 6, y), f"{tick:.2f}", fill="black", font=small, anchor="rm")
    for tick, label in (x_ticks or {float(t): f"{int(t):,}" for t in np.linspace(0, x_max, 5)}).items():
        x, _ = at(tick, 0)
        draw.text((x, top + plot_h + 12), label, fill="black", font=small, anchor="mm")
    draw.text((left + plot_w / 2, top + plot_h + 30), x_label, fill="black", font=small, anchor="mm")
    draw.text((8, top - 24), y_label, fill="black", font=small)
    for n, (name, points) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        if len(points) >= 2:
            draw.line([at(x, y) for x, y in points], fill=colour, width=3 if n == 0 else 2)
        for x, y in points:
            cx, cy = at(x, y)
            draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        legend_y = top + plot_h + 48 + 16 * (n // 2)
        legend_x = left + (n % 2) * plot_w / 2
        draw.line((legend_x, legend_y, legend_x + 24, legend_y), fill=colour, width=3)
        draw.text((legend_x + 30, legend_y), name, fill="black", font=small, anchor="lm")
    return image
