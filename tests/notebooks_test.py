"""The notebooks in notebooks/ run headless, top to bottom, at a tiny size.

Each is executed with nbclient in a fresh kernel (as a user's "Run all"),
with tiny values injected after its `parameters` cell, and must produce its
pictures. The committed notebooks hold the outputs of a run at their
default size (`python notebooks/execute.py notebooks/<name>.ipynb`).
"""
import importlib.util
import os

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")
_spec = importlib.util.spec_from_file_location(
    "notebook_execute", os.path.join(NOTEBOOKS, "execute.py"))
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)

# name -> (tiny parameters, least number of pictures it must show)
TINY = {
    "quickstart": (dict(STEPS=4, BATCH=16, NUM_SAMPLES=8), 3),
    "transforms": (dict(SIZE=16, SCALES=2, PCA_PATCH=4), 5),
    "steering": (dict(STEPS=4, BATCH=16, NUM_SAMPLES=10, NUM_IMAGES=2,
                      SAMPLE_STEPS=8, CLASSIFIER_STEPS=5, RUNLOCAL=True), 7),
    "multi_condition": (dict(STEPS=4, BATCH=16, NUM_SAMPLES=6,
                             SAMPLE_STEPS=8, ROWS=2, RUNLOCAL=True), 4),
}


def test_every_notebook_is_run_below():
  names = {f[:-6] for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb")}
  assert names == set(TINY), names ^ set(TINY)


def _pictures(nb) -> int:
  return sum(1 for c in nb.cells for o in c.get("outputs", [])
             if any(k.startswith("image/") for k in o.get("data", {})))


@pytest.mark.parametrize("name", sorted(TINY))
def test_committed_notebook_has_outputs_and_parameters(name):
  nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
  tagged = [c for c in nb.cells
            if "parameters" in c.get("metadata", {}).get("tags", [])]
  assert len(tagged) == 1
  for key in TINY[name][0]:
    assert f"{key} = " in tagged[0].source, key
  assert _pictures(nb) >= TINY[name][1]  # saved from a real run
  errors = [o for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]
  assert not errors


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_headless_at_tiny_size(name, tmp_path):
  params, pictures = TINY[name]
  params = dict(params)
  if name in ("quickstart", "steering", "multi_condition"):
    params["WORKDIR"] = str(tmp_path / "runs")
  # One CPU device in the kernel (the tests' 8 fake devices only slow it).
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  nb = execute.execute(os.path.join(NOTEBOOKS, f"{name}.ipynb"), params,
                       timeout=900, env=env, cwd=str(tmp_path))
  assert _pictures(nb) >= pictures
  injected = [c for c in nb.cells
              if "injected-parameters" in c.metadata.get("tags", [])]
  assert len(injected) == 1 and "# Injected parameters" in injected[0].source


def test_inject_needs_one_parameters_cell():
  nb = nbformat.v4.new_notebook()
  nb.cells = [nbformat.v4.new_code_cell("STEPS = 10")]
  with pytest.raises(ValueError, match="tagged 'parameters'"):
    execute.inject(nb, {"STEPS": 1})
  nb.cells[0].metadata["tags"] = ["parameters"]
  out = execute.inject(nb, {"STEPS": 1, "NAME": "x"})
  assert out.cells[1].source.splitlines()[1:] == ["STEPS = 1", "NAME = 'x'"]
