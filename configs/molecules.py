r"""Molecular assembly on the offline proxy: 17-molecule clusters cut from
the organic crystals of pyxtal's database (read from the installed wheel,
no download; `pip install --no-deps pyxtal==1.1.5`), each crystal with
`draws` seeded weakly correlated starts, split over crystals
(kflow_jax/data/assembly_sets.py). The task of COD-Cluster17 at CPU scale:
predict the packing (a rigid motion per molecule) from the start.

Arguments (`--config=configs/molecules.py:<args>`, comma separated):
  method=NAME  kflow (default): four graph-Fourier bands over the molecules
               (eigen-indices {0}, {1..3}, {4..8}, {9..16}) turned from the
               start to the packing one after another; fm: one band, plain
               rigid flow matching (AssembleFlow's path); regression: the
               same network predicting the packing from the start in one
               call (trained at band time 0 only)
  runlocal     seconds on a CPU (tests, smoke runs)

  python -m kflow_jax.main --config=configs/molecules.py --workdir=/tmp/mol
  python -m kflow_jax.main --config=configs/molecules.py --workdir=/tmp/mol \
      --mode=eval    # AssembleFlow's metrics on the test split, .xyz files
"""
from kflow_jax import config_lib
from kflow_jax.config_lib import assembly


def get_config(arg=None):
  a = config_lib.parse_args(arg, method="kflow", runlocal=False)
  c = assembly.base()
  assembly.set_method(c, a.method, "configs/molecules.py")
  c.total_steps = 3000
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100
  if a.runlocal:
    c.data.draws = 2
    c.data.limit = 20
    assembly.runlocal(c)
  return c
