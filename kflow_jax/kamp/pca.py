"""PCA transform: c = U^T x with U the eigenvectors of the data's second moment.

U holds the orthonormal eigenvectors of E[x x^T] (no centering: the mean is
part of the signal the flow has to produce, and K-Flow's coarse band should
carry it), sorted by eigenvalue, largest first; the coefficient of rank r
gets kappa = r / (D - 1), so the top principal directions flow first.

Full PCA needs a D x D basis (D = H * W * C). For larger inputs, patch PCA
cuts the image into non-overlapping p x p patches and shares one
(p*p*C)^2 basis between them, so the cost stays linear in the pixels.
Coefficient layouts: full [B, D]; patch [B, H/p, W/p, p*p*C].

The basis comes from `fit_basis` (a pure streaming pass over batches that
accumulates X^T X in float64) via `python -m kflow_jax.tools.fit_pca`, is
saved as .npz with the shape and patch it was fitted for, and is loaded once
per process (`kamp.get("pca", shape, basis="basis.npz")`).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from kflow_jax import kamp

# Full PCA keeps a D x D float64 accumulator: 64 x 64 x 3 is 1.2 GB already.
MAX_FULL_DIM = 12288
_ORTHO_TOL = 1e-3
_CACHE: dict = {}


def _patch_vectors(x, patch):
  """[B, H, W, C] -> [B, H/p, W/p, p*p*C] (row-major within a patch)."""
  b, h, w, c = x.shape
  p = patch
  x = x.reshape(b, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)  # numpy and jax arrays alike
  return x.reshape(b, h // p, w // p, p * p * c)


def _check_patch(patch, shape):
  if patch is None or patch == 0:
    return None
  if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) \
      or patch < 1:
    raise ValueError(f"patch must be a positive int or None, got {patch!r}.")
  h, w, _ = shape
  if h % patch or w % patch:
    raise ValueError(
        f"patch={patch} must divide H and W, got shape {shape}; use a patch "
        f"size dividing both (e.g. {np.gcd(h, w)}) or a shape such as "
        f"({-(-h // patch) * patch}, {-(-w // patch) * patch}, {shape[2]}).")
  return int(patch)


def _dim(shape, patch):
  h, w, c = shape
  return patch * patch * c if patch else h * w * c


def fit_basis(batches, *, patch=None, max_examples=None):
  """Fits the PCA basis from an iterable of batches in one streaming pass.

  Args:
    batches: iterable of float arrays [B, H, W, C] (or dicts with "image"
      and optionally "mask", whose False rows are padding and skipped).
    patch: None for full PCA, or p for shared p x p patch PCA.
    max_examples: stop after this many images (None: exhaust `batches`).

  Returns:
    dict with basis float64 [D, D] (columns = eigenvectors, largest
    eigenvalue first, sign fixed so each column's largest entry is
    positive), eigenvalues float64 [D], shape (H, W, C), patch (0 = full)
    and count (images seen).
  """
  gram, shape, count = None, None, 0
  for batch in batches:
    if isinstance(batch, dict):
      x = np.asarray(batch["image"], np.float64)
      if "mask" in batch:  # finite-mode pipelines pad the last batch
        x = x[np.asarray(batch["mask"], bool)]
    else:
      x = np.asarray(batch, np.float64)
    if max_examples is not None:
      x = x[:max(0, max_examples - count)]
    if x.shape[0] == 0:
      break
    if x.ndim != 4:
      raise ValueError(f"PCA batches must be [B, H, W, C], got {x.shape}.")
    if shape is None:
      shape = tuple(int(s) for s in x.shape[1:])
      patch = _check_patch(patch, shape)
      dim = _dim(shape, patch)
      if dim > MAX_FULL_DIM:
        raise ValueError(
            f"PCA on {shape} needs a {dim} x {dim} basis; the limit is "
            f"D <= {MAX_FULL_DIM}. Use patch PCA, e.g. patch=8 (D = "
            f"{64 * shape[2]}).")
      gram = np.zeros((dim, dim), np.float64)
    elif tuple(x.shape[1:]) != shape:
      raise ValueError(
          f"PCA batches changed shape from {shape} to {tuple(x.shape[1:])}.")
    vec = _patch_vectors(x, patch) if patch else x
    vec = vec.reshape(-1, gram.shape[0])
    gram += vec.T @ vec
    count += x.shape[0]
  if count == 0:
    raise ValueError("fit_basis got no data: the batch iterator was empty.")
  per_image = (shape[0] // patch) * (shape[1] // patch) if patch else 1
  eigvals, eigvecs = np.linalg.eigh(gram / (count * per_image))
  order = np.argsort(eigvals)[::-1]
  eigvals, eigvecs = np.maximum(eigvals[order], 0.0), eigvecs[:, order]
  # eigh's signs are arbitrary; fix them so refits are reproducible.
  lead = eigvecs[np.argmax(np.abs(eigvecs), axis=0), np.arange(len(order))]
  eigvecs = eigvecs * np.where(lead < 0, -1.0, 1.0)
  return {"basis": eigvecs, "eigenvalues": eigvals, "shape": shape,
          "patch": patch or 0, "count": count}


def save_basis(path, fitted):
  """Writes a `fit_basis` result as .npz (basis stored as float32)."""
  np.savez(path, basis=np.asarray(fitted["basis"], np.float32),
           eigenvalues=np.asarray(fitted["eigenvalues"], np.float64),
           shape=np.asarray(fitted["shape"], np.int64),
           patch=np.int64(fitted["patch"] or 0),
           count=np.int64(fitted.get("count", 0)))


def load_basis(path) -> dict:
  """Loads a basis .npz once per process (cached by path and mtime)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(
        f"PCA basis file {path!r} does not exist; fit one with "
        "`python -m kflow_jax.tools.fit_pca --config=... --out=basis.npz`.")
  key = (os.path.realpath(path), os.stat(path).st_mtime_ns)
  if key not in _CACHE:
    with np.load(path) as data:
      missing = {"basis", "shape", "patch"} - set(data.files)
      if missing:
        raise ValueError(
            f"{path!r} is not a PCA basis file: missing {sorted(missing)} "
            "(write it with kamp.pca.save_basis or tools/fit_pca).")
      _CACHE[key] = {k: data[k] for k in data.files}
  return _CACHE[key]


def _as_record(basis, patch):
  """Normalizes the `basis` argument to a dict of arrays."""
  if basis is None:
    raise ValueError(
        "kamp 'pca' needs basis='basis.npz' (from tools/fit_pca) or "
        "basis=<[D, D] array> / a kamp.pca.fit_basis result.")
  if isinstance(basis, (str, os.PathLike)):
    record = dict(load_basis(basis))
  elif isinstance(basis, dict):
    record = dict(basis)
  else:
    record = {"basis": basis}
  saved = record.get("patch")
  saved = int(saved) if saved is not None else None
  if patch is not None and saved is not None and int(patch) != saved:
    raise ValueError(
        f"the PCA basis was fitted with patch={saved or None}, got "
        f"patch={patch}; drop the patch option or refit.")
  record["patch"] = saved if saved is not None else patch
  return record


def _check_fit_shape(record, shape, patch, dim):
  """A basis only works for the shape (full) or channels/patch it was fit on."""
  fitted = record.get("shape")
  fitted = tuple(int(s) for s in fitted) if fitted is not None else None
  if patch:
    ok = fitted is None or fitted[2] == shape[2]
    works = (f"any (k*{patch}, m*{patch}, {fitted[2] if fitted else '?'})"
             f" shape (fitted on {fitted})")
  else:
    ok = fitted is None or fitted == shape
    works = f"shape {fitted}"
  basis = np.asarray(record["basis"])
  if not ok or basis.shape != (dim, dim):
    raise ValueError(
        f"this PCA basis ({basis.shape[0]} x {basis.shape[-1]}, patch="
        f"{patch}) works for {works if fitted else f'D = {basis.shape[0]}'}"
        f", not shape {shape} (D = {dim}); refit it with tools/fit_pca for "
        "this shape.")
  gram = basis.astype(np.float64).T @ basis.astype(np.float64)
  if np.abs(gram - np.eye(dim)).max() > _ORTHO_TOL:
    raise ValueError(
        "the PCA basis is not orthonormal (U^T U != I); pass the "
        "eigenvector matrix from kamp.pca.fit_basis.")


def needs_fit(options: dict) -> bool:
  """True when the options name no basis, so one must be fitted first."""
  return not options.get("basis")


def prepare(options: dict, *, batches, out: str,
            max_examples: int = 2048) -> dict:
  """The registry's `prepare` hook: fits a basis on `batches()` into `out`
  unless options name one (or `out` already holds the fit), and returns
  the options with `basis` set. The fit is deterministic, so every process
  of a multi-host run may fit its own copy instead of waiting for a file.
  """
  options = dict(options)
  if not needs_fit(options):
    return options
  if not os.path.exists(out):
    save_basis(out, fit_basis(batches(), patch=options.get("patch"),
                              max_examples=max_examples))
  options["basis"] = out
  return options


@kamp.register("pca", prepare=prepare, needs_preparation=needs_fit)
def build(shape, basis=None, patch=None):
  record = _as_record(basis, patch)
  patch = _check_patch(record["patch"], shape)
  dim = _dim(shape, patch)
  _check_fit_shape(record, shape, patch, dim)
  u = jnp.asarray(np.asarray(record["basis"], np.float32))
  h, w, c = shape
  rank = np.arange(dim, dtype=np.float32) / max(dim - 1, 1)
  coef_shape = (h // patch, w // patch, dim) if patch else (dim,)
  kappa = np.broadcast_to(rank, coef_shape).astype(np.float32)
  # HIGHEST: TPUs otherwise run float32 matmuls in bf16 passes, which would
  # break the 1e-5 round trip.
  hi = jax.lax.Precision.HIGHEST

  def forward(x):
    kamp.check_input(x, shape, "pca")
    x = x.astype(jnp.float32)
    vec = _patch_vectors(x, patch) if patch else x.reshape(x.shape[0], dim)
    return jnp.matmul(vec, u, precision=hi)

  def inverse(coef):
    if tuple(coef.shape[1:]) != coef_shape:
      raise ValueError(
          f"kamp 'pca' inverse expects coefficients [B, {coef_shape}], got "
          f"{tuple(coef.shape)}.")
    # Contract with U's second axis directly (no transposed copy of U).
    vec = jnp.einsum("...k,dk->...d", coef.astype(jnp.float32), u,
                     precision=hi)
    if not patch:
      return vec.reshape(-1, h, w, c)
    p = patch
    x = vec.reshape(-1, h // p, w // p, p, p, c)
    return jnp.transpose(x, (0, 1, 3, 2, 4, 5)).reshape(-1, h, w, c)

  return kamp.KTransform(
      forward=forward, inverse=inverse, kappa=kappa,
      weight=np.ones(coef_shape, np.float32), name="pca", shape=shape,
      orthonormal=True)
