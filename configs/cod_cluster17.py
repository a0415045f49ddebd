r"""Molecular assembly on COD-Cluster17 (AssembleFlow's data set, ICLR
2025), the paper's molecular result: 17 copies of one molecule, from a
weakly correlated start to the crystal-like packing.

The data is downloaded by hand (huggingface.co/datasets/chao1224/
CrystalFlow, folder COD/) into a folder holding raw/FinalPositions and
raw/InitialPositions (and processed_5000/ / processed_10000/ for the
subsets); kflow_jax/data/cod_cluster17.py reads it with AssembleFlow's
filters and its seeded 80/10/10 split.

Arguments (`--config=configs/cod_cluster17.py:<args>`, comma separated):
  subset=NAME  full (default), 5k or 10k (AssembleFlow's id lists)
  method=NAME  kflow (default), fm or regression (configs/molecules.py)
  root=DIR     the data folder (or --config.data.root=DIR)
  runlocal     seconds on a CPU (tests, smoke runs)

  python -m kflow_jax.main --config=configs/cod_cluster17.py:root=/data/COD \
      --workdir=/tmp/cod
"""
from kflow_jax import config_lib
from kflow_jax.config_lib import assembly

SUBSETS = {"full": -1, "5k": 5000, "10k": 10000}


def get_config(arg=None):
  a = config_lib.parse_args(arg, subset="full", method="kflow", root="",
                            runlocal=False)
  if a.subset not in SUBSETS:
    raise ValueError(f"configs/cod_cluster17.py: subset={a.subset!r} is "
                     f"not one of {sorted(SUBSETS)}.")
  c = assembly.base()
  assembly.set_method(c, a.method, "configs/cod_cluster17.py")
  c.data.source = "cod_cluster17"
  c.data.root = a.root
  c.data.subset = SUBSETS[a.subset]
  c.batch_size = 32
  c.total_steps = 100000
  c.model.hidden = 128
  c.model.depth = 4
  c.checkpoint_every_steps = 2000
  c.log_every_steps = 100
  if a.runlocal:
    assembly.runlocal(c)
  return c
