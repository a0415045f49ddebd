"""Configs are data: loading one imports no heavy library, every default
lives in config_lib, and the run-control keys are declared with the keys."""
import json
import os
import subprocess
import sys

import pytest

from kflow_jax import config_lib
from kflow_jax.config_lib import assembly
from kflow_jax.config_lib import sections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("jax", "flax", "diffrax", "dm_pix", "optax", "orbax", "grain",
         "tensorflow", "torch")

# The real loading path of kflow_jax.main: its absl flags, with the config
# file loaded by ml_collections' config_flags as the command line does.
_LOAD = r"""
import json, sys
from kflow_jax import main
main.parse_flags(["kflow_jax.main", "--config=" + sys.argv[1],
                  "--workdir=/tmp/unused"])
config = main._CONFIG.value
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))
print(json.dumps({"heavy": heavy, "input": config.input.name,
                  "restore": config.restore.degradation}))
"""


@pytest.mark.parametrize("config", ["configs/digits.py",
                                    "configs/digits.py:cond,runlocal",
                                    "configs/imagenet.py"])
def test_loading_a_config_imports_no_heavy_library(config):
  env = dict(os.environ, PYTHONPATH=REPO)
  p = subprocess.run([sys.executable, "-c", _LOAD, config, *HEAVY],
                     cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=120)
  assert p.returncode == 0, p.stderr[-3000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  assert out["heavy"] == [], (
      f"loading {config} imported {out['heavy']}: config_lib and configs/ "
      "must stay data (ml_collections only)")
  assert out["restore"] == config_lib.base().restore.degradation


def test_every_run_control_key_is_a_key_of_base():
  base = config_lib.base()
  assert set(config_lib.RUN_CONTROL_KEYS) <= set(base.keys())
  for key in ("total_steps", "sample", "restore", "evals"):
    assert key in config_lib.RUN_CONTROL_KEYS
  # What a run computes is never run control.
  for key in ("seed", "batch_size", "input", "path", "model", "optim"):
    assert key not in config_lib.RUN_CONTROL_KEYS


def test_added_keys_exist_with_the_default_they_were_added_with():
  # The image configs' base() and the molecular-assembly one, as
  # config.json stores them (tuples as lists, which same_value equates).
  flat = config_lib.flatten(json.loads(config_lib.base().to_json_best_effort()))
  flat.update(config_lib.flatten(json.loads(
      assembly.base().to_json_best_effort())))
  for key, default in config_lib.ADDED_KEYS.items():
    assert key in flat, f"ADDED_KEYS names {key}, which no base() holds"
    assert config_lib.same_value(flat[key], default), (key, flat[key],
                                                       default)
  assert not config_lib.same_value([1, 2], (1, 3))


def test_sections_are_the_defaults_of_base():
  base = config_lib.base()
  for name, fn in (("input", sections.input_defaults),
                   ("optim", sections.optim_defaults),
                   ("sample", sections.sample_defaults),
                   ("restore", sections.restore_defaults),
                   ("evals", sections.evals_defaults)):
    assert base[name].to_dict() == fn().to_dict(), name


def test_config_lib_imports_only_ml_collections():
  """The package reads like data: no kflow_jax module above it, nothing
  but ml_collections outside the standard library."""
  import ast  # pylint: disable=g-import-not-at-top
  root = os.path.join(REPO, "kflow_jax", "config_lib")
  for name in os.listdir(root):
    if not name.endswith(".py"):
      continue
    with open(os.path.join(root, name)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module])
        for mod in mods:
          assert mod.split(".")[0] == "ml_collections" or mod.startswith(
              "kflow_jax.config_lib"), f"{name} imports {mod}"


def test_transform_helpers_check_and_select():
  menu = {"identity": {}, "wavelet": dict(wavelet="haar", levels=1)}
  a = config_lib.parse_transform_args("transform=identity", "configs/x.py",
                                      menu, transform="wavelet",
                                      runlocal=False)
  assert a.transform == "identity" and not a.runlocal
  with pytest.raises(ValueError, match=r"configs/x.py: transform='dct'; "
                     r"valid: \['identity', 'wavelet'\]"):
    config_lib.parse_transform_args("transform=dct", "configs/x.py", menu,
                                    transform="wavelet")
  c = config_lib.base()
  config_lib.set_bands(c, "wavelet", 3, **menu["wavelet"])
  assert c.transform.to_dict() == dict(name="wavelet", wavelet="haar",
                                       levels=1)
  assert c.path.num_scales == 3
  config_lib.set_bands(c, "identity", 3)
  assert c.transform.to_dict() == dict(name="identity")
  assert c.path.num_scales == 1


def test_recipe_sets_every_number_it_is_given():
  c = config_lib.base()
  config_lib.recipe(c, total_steps=10, batch_size=8, recipe_devices=2,
                    learning_rate=0.5, warmup_steps=3, grad_clip_norm=0.0,
                    ema_decay=0.99, log_every_steps=1,
                    checkpoint_every_steps=4, sample_every_steps=5,
                    eval_steps=6, sample_batch_size=7)
  assert (c.total_steps, c.batch_size, c.recipe_devices) == (10, 8, 2)
  assert (c.optim.learning_rate, c.optim.warmup_steps,
          c.optim.grad_clip_norm, c.optim.schedule) == (0.5, 3, 0.0,
                                                        "constant")
  assert c.ema_decays == (0.99,)
  assert (c.log_every_steps, c.checkpoint_every_steps, c.sample_every_steps,
          c.eval_steps, c.sample.batch_size) == (1, 4, 5, 6, 7)
  assert c.sample.solver == "dopri5"
