"""The package layout is the architecture: imports only go downward.

Each package of kflow_jax is a layer; a module may import modules of its own
layer or of a lower one, never of a higher one. The table is the one place
the order is written down (WORKSPACE.md draws it).
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "kflow_jax"

# Lowest first. A top-level module is its own name; tools/ sit on top.
# config_lib is data (every key's default, ml_collections only), so every
# layer may read it.
LAYERS = [
    ("config_lib",),
    ("infra",),
    ("kamp",),
    ("models",),
    ("data",),
    ("flow",),
    ("generate",),
    ("run",),
    ("evaluators",),
    ("modes",),
    ("main", "tools", "__init__"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
MAX_TOP_LEVEL_MODULES = 6
MAX_LINES = 450


def _module_name(path):
  rel = path.relative_to(ROOT.parent).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _layer(module):
  """kflow_jax.flow.paths -> 'flow'; kflow_jax.main -> 'main'."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _imports(path):
  module = _module_name(path)
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
      else:
        name = node.module
      for alias in node.names:
        yield f"{name}.{alias.name}"


def _sources():
  return sorted(ROOT.rglob("*.py"))


def test_every_package_has_a_layer():
  packages = {p.name for p in ROOT.iterdir()
              if p.is_dir() and (p / "__init__.py").exists()}
  modules = {p.stem for p in ROOT.glob("*.py")}
  missing = sorted((packages | modules) - set(RANK))
  assert not missing, (f"{missing} have no layer: add them to LAYERS in "
                       "tests/layers_test.py and to WORKSPACE.md")


def test_imports_only_go_downward():
  violations = []
  for path in _sources():
    own = _layer(_module_name(path))
    for name in _imports(path):
      if not name.startswith("kflow_jax."):
        continue
      other = _layer(name)
      if other in RANK and RANK[other] > RANK[own]:
        violations.append(f"{path.relative_to(ROOT.parent)} imports {name} "
                          f"({own} is below {other})")
  assert not violations, "\n".join(violations)


def test_top_level_stays_small():
  modules = sorted(p.name for p in ROOT.glob("*.py"))
  assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_too_long(path):
  lines = len(path.read_text().splitlines())
  assert lines <= MAX_LINES, f"{path.name} has {lines} lines (at most {MAX_LINES}): split it by what it owns"
