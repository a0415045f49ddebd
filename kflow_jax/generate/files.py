"""Sample images on disk: PNG grids, the band strip, and .npz arrays.

Images are float arrays [N, H, W, C] in [-1, 1] (the data convention);
C is 1 (grey) or 3 (RGB). Anything else (e.g. 4-channel latents that were
not decoded) is shown channel by channel as grey tiles, so a PNG can always
be written. Pillow does the encoding.
"""
import io
import math
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont


def to_uint8(images, truncate: bool = False) -> np.ndarray:
  """[-1, 1] floats (or uint8, kept) -> uint8 [N, H, W, C], C in {1, 3}.

  Rounded to the nearest level (image savers, torchvision's save_image);
  truncate=True floors instead, as ADM's sampler does
  (((x + 1) * 127.5).clamp(0, 255).to(uint8)), for the "adm" FID protocol.
  """
  x = np.asarray(images)
  if x.dtype != np.uint8:
    x = x.astype(np.float32)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(
        f"images must be [N, H, W, C] (or [N, H, W]), got shape {x.shape}.")
  if x.dtype != np.uint8 and not np.all(np.isfinite(x)):
    raise ValueError("images contain NaN or inf; the sampler diverged.")
  if x.shape[-1] not in (1, 3):
    # Latents or other channel counts: one grey tile per channel, side by
    # side, so the PNG still shows what the model produced.
    n, h, w, c = x.shape
    x = np.transpose(x, (0, 1, 3, 2)).reshape(n, h, w * c, 1)
  if x.dtype == np.uint8:
    return x
  x = np.clip((x + 1.0) * np.float32(127.5) + (0.0 if truncate else 0.5),
              0, 255)
  return x.astype(np.uint8)


def grid(images, ncol: Optional[int] = None, pad: int = 1,
         scale: int = 1) -> np.ndarray:
  """Tiles images into one uint8 [rows*H, ncol*W, C] array."""
  x = to_uint8(images)
  n, h, w, c = x.shape
  if n == 0:
    raise ValueError("grid needs at least one image.")
  ncol = int(ncol or math.ceil(math.sqrt(n)))
  if ncol < 1:
    raise ValueError(f"ncol must be >= 1, got {ncol}.")
  nrow = math.ceil(n / ncol)
  out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255,
                np.uint8)
  for i in range(n):
    r, col = divmod(i, ncol)
    y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
    out[y0:y0 + h, x0:x0 + w] = x[i]
  if scale > 1:
    out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
  return out


def class_positions(labels, num_classes: int) -> np.ndarray:
  """(row, col) int [N, 2] of each sample in a one-class-per-row grid.

  Row = label; col = how many earlier samples had the same label, so the
  order inside a row is the sample order (labels 0..K-1 repeated give
  column j = repeat j).
  """
  y = np.asarray(labels)
  if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D int array, got {y.dtype} "
                     f"{y.shape}.")
  if int(num_classes) < 1 or (y.size and (y.min() < 0 or
                                          y.max() >= int(num_classes))):
    raise ValueError(
        f"labels must lie in [0, num_classes={num_classes}); got range "
        f"[{y.min() if y.size else '-'}, {y.max() if y.size else '-'}]. "
        "The null class is not a row of the grid.")
  cols = np.zeros(y.shape, np.int64)
  seen = np.zeros(int(num_classes), np.int64)
  for i, label in enumerate(y):
    cols[i] = seen[label]
    seen[label] += 1
  return np.stack([y.astype(np.int64), cols], axis=1)


def class_grid(images, labels, num_classes: int, pad: int = 1,
               scale: int = 1) -> np.ndarray:
  """Tiles images into uint8 [K*(H+pad)+pad, ncol*(W+pad)+pad, C] with
  row k holding the samples of class k (see class_positions); classes
  with fewer samples leave white tiles."""
  x = to_uint8(images)
  n, h, w, c = x.shape
  if n == 0:
    raise ValueError("class_grid needs at least one image.")
  if len(labels) != n:
    raise ValueError(f"{n} images but {len(labels)} labels; one label per "
                     "image.")
  pos = class_positions(labels, num_classes)
  nrow, ncol = int(num_classes), int(pos[:, 1].max()) + 1
  out = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255,
                np.uint8)
  for i, (r, col) in enumerate(pos):
    y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
    out[y0:y0 + h, x0:x0 + w] = x[i]
  if scale > 1:
    out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
  return out


def _auto_scale(h: int) -> int:
  # Tiny images (8x8 digits) are unreadable at 1:1; upscale (nearest) to at
  # least 64 px.
  return max(1, -(-64 // max(h, 1)))


def _write_png(path: str, array: np.ndarray) -> str:
  mode = "L" if array.shape[-1] == 1 else "RGB"
  img = Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # Write then rename, so a reader never sees a half-written PNG.
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(buf.getvalue())
  os.replace(tmp, path)
  return path


def save_grid(path: str, images, ncol: Optional[int] = None,
              scale: Optional[int] = None, labels=None,
              num_classes: Optional[int] = None) -> str:
  """Writes images [N, H, W, C] in [-1, 1] as one PNG grid; with labels
  and num_classes, one class per row (class_grid) instead of ncol columns."""
  x = np.asarray(images)
  scale = _auto_scale(x.shape[1]) if scale is None else int(scale)
  if (labels is None) != (num_classes is None):
    raise ValueError("pass both labels and num_classes for a class-row grid, "
                     "or neither.")
  if labels is not None:
    if ncol is not None:
      raise ValueError("ncol is set by the class counts in a class-row grid; "
                       "drop ncol or the labels.")
    return _write_png(path, class_grid(x, labels, num_classes, scale=scale))
  return _write_png(path, grid(x, ncol=ncol, scale=scale))


def _text_size(draw, text, font):
  left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
  return right - left, bottom - top


def label_grid(array: np.ndarray, tile_w: int, tile_h: int, pad: int,
               col_labels: Sequence[str] = (),
               row_labels: Sequence[str] = ()) -> np.ndarray:
  """Adds column labels above and row labels left of a uint8 grid.

  array: [rows*(tile_h+pad)+pad, cols*(tile_w+pad)+pad, C] as `grid` makes
  it (already scaled: tile_w, tile_h, pad in output pixels). Labels may
  hold newlines. PIL's default font, black on white.
  """
  font = ImageFont.load_default()
  probe = ImageDraw.Draw(Image.new("L", (1, 1)))
  size = lambda t: _text_size(probe, t, font) if t else (0, 0)
  line_h = max(size("Ag")[1], 8) + 3
  n_lines = max([len(str(t).split("\n")) for t in col_labels] or [0])
  top = n_lines * line_h + 4 if col_labels else 0
  left = (max(size(str(t))[0] for t in row_labels) + 8) if row_labels else 0
  h, w, c = array.shape
  mode = "L" if c == 1 else "RGB"
  canvas = Image.new(mode, (w + left, h + top), 255 if c == 1 else
                     (255, 255, 255))
  canvas.paste(Image.fromarray(array[..., 0] if c == 1 else array, mode),
               (left, top))
  draw = ImageDraw.Draw(canvas)
  ink = 0 if c == 1 else (0, 0, 0)
  for j, text in enumerate(col_labels):
    for k, line in enumerate(str(text).split("\n")):
      lw = size(line)[0]
      x = left + pad + j * (tile_w + pad) + (tile_w - lw) // 2
      draw.text((x, 2 + k * line_h), line, fill=ink, font=font)
  for i, text in enumerate(row_labels):
    y = top + pad + i * (tile_h + pad) + (tile_h - size(str(text))[1]) // 2
    draw.text((4, y), str(text), fill=ink, font=font)
  out = np.asarray(canvas)
  return out[..., None] if out.ndim == 2 else out


def fold_rows(images, col_labels: Sequence[str], max_rows: int):
  """[R, K, ...] with R > max_rows -> [max_rows, B*K + B-1, ...]: blocks of
  max_rows rows side by side, a blank column between blocks, so that a
  figure of many examples is a compact grid rather than one long strip.
  Each block's first column label says which examples (rows) it holds.
  Returns (images, col_labels)."""
  x = np.asarray(images)
  r, k = x.shape[:2]
  blocks = math.ceil(r / max_rows)
  blank = np.ones((max_rows, 1) + x.shape[2:], x.dtype)  # white in [-1, 1]
  x = np.concatenate([x, np.ones((blocks * max_rows - r,) + x.shape[1:],
                                 x.dtype)])
  parts, labels = [], []
  for b in range(blocks):
    if b:
      parts.append(blank)
      labels.append("")
    parts.append(x[b * max_rows:(b + 1) * max_rows])
    first, last = b * max_rows, min(r, (b + 1) * max_rows) - 1
    names = list(col_labels) or [""] * k
    labels += [f"#{first}-{last}\n{names[0]}"] + names[1:]
  return np.concatenate(parts, axis=1), labels


def save_labelled_grid(path: str, images, col_labels: Sequence[str] = (),
                       row_labels: Sequence[str] = (),
                       scale: Optional[int] = None, pad: int = 1,
                       max_rows: Optional[int] = None) -> str:
  """Writes images [R, K, H, W, C] in [-1, 1] as an R x K PNG grid with a
  label above each column and left of each row (either may be empty).
  With max_rows and R > max_rows, the rows are folded into blocks side by
  side (fold_rows) and the row labels are replaced by each block's range."""
  x = np.asarray(images)
  if x.ndim != 5:
    raise ValueError(f"images must be [rows, cols, H, W, C], got {x.shape}.")
  r, k, h, w = x.shape[:4]
  for what, labels, n in (("col_labels", col_labels, k),
                          ("row_labels", row_labels, r)):
    if labels and len(labels) != n:
      raise ValueError(f"{what} has {len(labels)} entries for {n} "
                       f"{what[:3]}s; give one per {what[:3]} or none.")
  if max_rows is not None and r > max_rows:
    x, col_labels = fold_rows(x, col_labels, max_rows)
    row_labels = ()
    r, k = x.shape[:2]
  scale = _auto_scale(min(h, w)) if scale is None else int(scale)
  g = grid(x.reshape((r * k,) + x.shape[2:]), ncol=k, pad=pad, scale=scale)
  return _write_png(path, label_grid(g, w * scale, h * scale, pad * scale,
                                     col_labels, row_labels))


def band_strip_labels(tau: Sequence[float]) -> list:
  """Column labels of the band strip: the time and which band is done.

  Column s is at t = tau_s, when bands 0..s-1 have finished flowing (no
  overlap); column 0 is the noise. The training run's strip gives each
  sample two rows: the state, and its projection on the finished bands.
  """
  out = []
  for s, t in enumerate(tau):
    done = "noise" if s == 0 else (f"band {s - 1} done" if s < len(tau) - 1
                                   else f"all {s} done")
    out.append(f"t={t:.2f}\n{done}")
  return out


def save_band_strip(path: str, rows: Sequence, tau: Sequence[float],
                    scale: Optional[int] = None,
                    row_labels: Sequence[str] = ()) -> str:
  """Writes the band strip: one column per band boundary tau_s, labelled
  with t and the band finished there (band_strip_labels).

  Args:
    path: PNG file to write.
    rows: sequence of arrays [S+1, H, W, C], one row each (e.g. the sample
      state x(tau_s), and its band-limited clean part), columns ordered
      coarse to fine (tau_0 = 0 ... tau_S = 1).
    tau: the S+1 band time edges, to check the column count.
    scale: integer upscaling (default: to at least 64 px per image, nearest,
      so small images stay readable next to the labels).
    row_labels: optional text left of each row.
  """
  tau = [float(v) for v in tau]
  rows = [np.asarray(r) for r in rows]
  if not rows:
    raise ValueError("save_band_strip needs at least one row.")
  for r in rows:
    if r.shape[0] != len(tau):
      raise ValueError(
          f"each band-strip row needs one image per tau edge ({len(tau)}), "
          f"got {r.shape[0]}.")
  return save_labelled_grid(path, np.stack(rows), band_strip_labels(tau),
                            row_labels, scale=scale)


def save_npz(path: str, images, **extra) -> str:
  """Writes float32 samples (and any extra arrays, e.g. labels) as .npz."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, images=np.asarray(images, np.float32),
           **{k: np.asarray(v) for k, v in extra.items()})
  os.replace(tmp, path)
  return path
