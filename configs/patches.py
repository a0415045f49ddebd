r"""Natural-image patches 16x16 RGB (skimage's photos, embedded).

K-Flow runs get three bands with uniform band times and band I/O (the
network sees only the bands started at t and moves only the active ones,
docs/method.md#band-io); plain flow matching has one band. Energy-aware
band times (`--config.path.gamma=0.5`, the earlier default: the energetic
coarse bands get more of the time axis) leave the finest band about 4 % of
t and its noise in the samples (docs/results/recipe.md: fine-spectrum
error 5.37 against 2.23 with uniform times, less with band I/O).

Arguments (`--config=configs/patches.py:<args>`):
  transform=NAME  identity (plain flow matching), fourier (default), dct,
                  wavelet (db4, 2 levels), pca (fitted at the first start)
  runlocal        seconds on a CPU

  python -m kflow_jax.main --config=configs/patches.py --workdir=/tmp/patches
  python -m kflow_jax.main --config=configs/patches.py:transform=identity \
      --workdir=/tmp/patches_fm
"""
from kflow_jax import config_lib

TRANSFORMS = {
    "identity": {}, "fourier": {}, "dct": {}, "pca": {},
    "wavelet": dict(wavelet="db4", levels=2),
}


def get_config(arg=None):
  a = config_lib.parse_transform_args(arg, "configs/patches.py", TRANSFORMS,
                                      transform="fourier", runlocal=False)
  c = config_lib.base()
  c.input.name = "natural_patches"
  c.input.image_size = 16
  config_lib.set_bands(c, a.transform, 3, **TRANSFORMS[a.transform])
  # Uniform band times: the recipe study's replacement for gamma 0.5
  # (docs/results/recipe.md, natural_patches).
  c.path.gamma = 0.0
  if a.transform != "identity":
    # docs/results/recipe.md, natural_patches: band I/O on top.
    c.path.hide_input = True
    c.path.project_output = True
  c.total_steps = 3000
  c.batch_size = 64
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 200
  return config_lib.runlocal(c) if a.runlocal else c
