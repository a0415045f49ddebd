"""Small line plots as uint8 images, drawn with Pillow (no matplotlib).

    img = plots.line_plot([("data", k, p), ("samples", k, q)],
                          title="radial power", log_x=True, log_y=True)
    plots.save_png("spectrum.png", img)

Enough for the training-time diagnostics (radial spectra, per-band loss
curves): axes with a few labelled ticks, one colour per series, a legend,
optional vertical marker lines (band cut-offs). Non-finite points and,
on log axes, non-positive ones are skipped. `atom_panel` draws a
molecular cluster's atoms on a plane, for the assembly pictures.
"""
import math
import os
from typing import Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
          (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127))
_MARGIN = (58, 28, 16, 40)  # left, top, right, bottom


def _ticks(lo: float, hi: float, log: bool) -> list:
  """Tick positions in plot coordinates (log10 units on log axes)."""
  if log:
    a, b = math.floor(lo), math.ceil(hi)
    # Under two decades, 2x and 5x ticks too, so the axis has a scale.
    mult = (1, 2, 5) if hi - lo < 2 else (1,)
    ticks = [e + math.log10(m) for e in range(a, b + 1) for m in mult]
    return [v for v in ticks if lo - 1e-9 <= v <= hi + 1e-9]
  span = hi - lo
  step = 10 ** math.floor(math.log10(span / 4)) if span > 0 else 1.0
  for m in (1, 2, 5, 10):
    if span / (m * step) <= 6:
      step *= m
      break
  first = math.ceil(lo / step) * step
  return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _label(v: float, log: bool) -> str:
  return f"{10 ** v:.3g}" if log else f"{v:g}"


def line_plot(series: Sequence[Tuple[str, Sequence[float], Sequence[float]]],
              *, title: str = "", xlabel: str = "", log_x: bool = False,
              log_y: bool = False, vlines: Sequence[float] = (),
              size: Tuple[int, int] = (520, 340)) -> np.ndarray:
  """uint8 [H, W, 3] plot of (label, x, y) series."""
  tx = (lambda v: np.log10(v)) if log_x else (lambda v: v)
  ty = (lambda v: np.log10(v)) if log_y else (lambda v: v)
  pts = []
  for label, x, y in series:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if log_x:
      ok &= x > 0
    if log_y:
      ok &= y > 0
    pts.append((label, tx(x[ok]), ty(y[ok])))
  xs = np.concatenate([p[1] for p in pts] + [np.zeros(0)])
  ys = np.concatenate([p[2] for p in pts] + [np.zeros(0)])
  w, h = size
  img = Image.new("RGB", size, (255, 255, 255))
  draw = ImageDraw.Draw(img)
  left, top, right, bottom = _MARGIN
  draw.text((left, 6), title, fill=(0, 0, 0))
  draw.rectangle((left, top, w - right, h - bottom), outline=(0, 0, 0))
  if xs.size == 0:
    draw.text((left + 10, top + 10), "no finite data", fill=(0, 0, 0))
    return np.asarray(img)
  x0, x1 = float(xs.min()), float(xs.max())
  y0, y1 = float(ys.min()), float(ys.max())
  x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
  pad = 0.05 * (y1 - y0)
  y0, y1 = y0 - pad, y1 + pad
  px = lambda v: left + (v - x0) / (x1 - x0) * (w - left - right)
  py = lambda v: h - bottom - (v - y0) / (y1 - y0) * (h - top - bottom)
  for v in _ticks(x0, x1, log_x):
    draw.line((px(v), h - bottom, px(v), h - bottom + 4), fill=(0, 0, 0))
    draw.text((px(v) - 10, h - bottom + 6), _label(v, log_x), fill=(0, 0, 0))
  for v in _ticks(y0, y1, log_y):
    draw.line((left - 4, py(v), left, py(v)), fill=(0, 0, 0))
    draw.text((4, py(v) - 6), _label(v, log_y), fill=(0, 0, 0))
  draw.text((w // 2 - 3 * len(xlabel), h - 16), xlabel, fill=(0, 0, 0))
  for v in vlines:
    if (not log_x or v > 0) and x0 <= tx(v) <= x1:
      x = px(tx(v))
      for y in range(top, h - bottom, 8):
        draw.line((x, y, x, min(y + 4, h - bottom)), fill=(150, 150, 150))
  for i, (label, x, y) in enumerate(pts):
    color = COLORS[i % len(COLORS)]
    xy = [(px(a), py(b)) for a, b in zip(x, y)]
    if len(xy) > 1:
      draw.line(xy, fill=color, width=2)
    for a, b in xy if len(xy) <= 40 else ():
      draw.ellipse((a - 2, b - 2, a + 2, b + 2), fill=color)
    ly = top + 6 + 14 * i
    draw.line((w - right - 120, ly + 6, w - right - 100, ly + 6), fill=color,
              width=3)
    draw.text((w - right - 96, ly), label, fill=(0, 0, 0))
  return np.asarray(img)


def atom_panel(x, molecule, title: str, axes, box: float,
               size: int = 240) -> np.ndarray:
  """One cluster's atoms [N, 3] drawn as discs on the plane of `axes`
  [2, 3] (e.g. the principal axes of the true cluster, so panels of one
  cluster share a view), one colour per molecule, farther atoms first;
  `box`: half the width shown (angstrom)."""
  img = Image.new("RGB", (size, size + 16), (255, 255, 255))
  draw = ImageDraw.Draw(img)
  draw.text((4, 2), title, fill=(0, 0, 0))
  x = np.asarray(x, np.float64)
  ok = np.all(np.isfinite(x), axis=1)
  xy = x[ok] @ np.asarray(axes).T
  depth = x[ok] @ np.cross(axes[0], axes[1])
  mol = np.asarray(molecule)[ok]
  scale = (size / 2 - 6) / max(box, 1e-6)
  for k in np.argsort(depth):
    px = size / 2 + scale * xy[k, 0]
    py = 16 + size / 2 - scale * xy[k, 1]
    color = COLORS[int(mol[k]) % len(COLORS)]
    draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color,
                 outline=(0, 0, 0))
  return np.asarray(img)


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
  """Images of equal height next to each other."""
  return np.concatenate(list(images), axis=1)


def save_png(path: str, image: np.ndarray) -> str:
  """Writes uint8 [H, W, 3] (write then rename)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.png"
  Image.fromarray(np.asarray(image, np.uint8)).save(tmp)
  os.replace(tmp, path)
  return path
