r"""Runs a notebook headless and saves it with its outputs.

    python notebooks/execute.py notebooks/quickstart.ipynb
    python notebooks/execute.py notebooks/transforms.ipynb --out=/tmp/t.ipynb \
        --param=STEPS=4

The cell tagged `parameters` holds the notebook's size; each --param NAME=VALUE
(a Python literal) is set in a cell inserted right after it, as papermill does,
so CI runs the committed notebooks tiny. Without --out the notebook is
rewritten in place: that is how the committed outputs are made, at the
notebook's default size.
"""
import argparse
import ast
import os
import sys
import time

import nbclient
import nbformat

PARAMETERS_TAG = "parameters"


def inject(nb, params: dict):
  """Inserts `NAME = value` lines after the cell tagged `parameters`."""
  if not params:
    return nb
  index = [i for i, c in enumerate(nb.cells)
           if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
  if len(index) != 1:
    raise ValueError(
        f"a notebook needs exactly one cell tagged {PARAMETERS_TAG!r} to take "
        f"parameters; found {len(index)}.")
  source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
  cell = nbformat.v4.new_code_cell("# Injected parameters\n" + source)
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(index[0] + 1, cell)
  return nb


def execute(path: str, params=None, *, out=None, timeout=1800, env=None,
            cwd=None):
  """Executes the notebook at `path` with `params`; returns the notebook.

  Writes it to `out` when given. A failing cell raises
  nbclient.exceptions.CellExecutionError naming the cell and the error.
  """
  nb = inject(nbformat.read(path, as_version=4), dict(params or {}))
  client = nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name="python3",
      resources={"metadata": {"path": cwd or os.path.dirname(
          os.path.abspath(path))}})
  client.execute(env=dict(os.environ if env is None else env))
  if out:
    nbformat.write(nb, out)
  return nb


def _literal(text):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebook")
  parser.add_argument("--out", default=None,
                      help="where to save (default: in place)")
  parser.add_argument("--param", action="append", default=[],
                      help="NAME=VALUE, set after the parameters cell")
  parser.add_argument("--timeout", type=int, default=3600,
                      help="seconds per cell")
  args = parser.parse_args(argv)
  params = {}
  for p in args.param:
    name, eq, value = p.partition("=")
    if not eq:
      parser.error(f"--param takes NAME=VALUE, got {p!r}")
    params[name.strip()] = _literal(value.strip())
  start = time.time()
  execute(args.notebook, params, out=args.out or args.notebook,
          timeout=args.timeout)
  print(f"executed {args.notebook} in {time.time() - start:.0f} s -> "
        f"{args.out or args.notebook}")


if __name__ == "__main__":
  sys.exit(main())
