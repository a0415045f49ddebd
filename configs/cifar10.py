r"""CIFAR-10 32x32 in pixel space, unconditional, U-Net: the one-GPU benchmark.

Not an experiment of the paper (K-Flow, arXiv 2504.19353, reports latent
ImageNet, CelebA-HQ and LSUN Church only): the small benchmark on which
K-Flow can be compared with plain flow matching on one GPU, with the same
network, budget and sampler, in pixel space.

Arguments (`--config=configs/cifar10.py:<args>`, comma separated):
  transform=NAME  fourier (default: 2 radial-frequency bands), dct (2 bands
                  of DCT frequency), wavelet (db6, 1 level: approximation
                  then detail), identity (one band: plain flow matching)
  runlocal        seconds on a CPU (tests, smoke runs)

Expected FID-50k (against the training set, dopri5):
  identity  about 3.5-3.7: the torchcfm CIFAR-10 flow-matching runs
            (atong01/conditional-flow-matching) report 3.5 to 3.7 with this
            U-Net and recipe
  fourier, dct, wavelet  no published number: this benchmark is how to
            measure one

The recipe is the torchcfm CIFAR-10 recipe (the paper is silent, and LFM
has no CIFAR-10 run): the DDPM U-Net (128 channels, multipliers
1, 2, 2, 2, two residual blocks per level, attention at 16x16; 36M
parameters), Adam at learning rate 2e-4 with a 5000-step linear
warm-up and then constant, gradient clipping at 1.0, batch 128, 400k
steps, EMA 0.9999, random horizontal flips, adaptive dopri5 sampling. Our
own choices: 2 bands with uniform band times for the K-Flow variants, the
wavelet's db6 at 1 level, float32 compute. One difference: torchcfm uses
dropout 0.1 in the U-Net; our training step does not pass a dropout rng
yet, so dropout is 0 here (set model.dropout once it does).

Hardware: one GPU (recipe_devices=1). About 2e18 training FLOPs (~12 GFLOPs
forward per image, x3, x 51M examples): a few hours on an A100 or H100,
a day or two on a consumer GPU (an estimate from FLOPs, not a
measurement).

Steps:
  1. Prepare CIFAR-10 once (downloads from the TFDS sources):
     tfds build cifar10 --data_dir=/data/tfds --file_format=array_record
  2. Train:
     python -m kflow_jax.main --config=configs/cifar10.py:transform=fourier \
       --config.input.data_dir=/data/tfds --workdir=/runs/cifar10_fourier
     (or `sbatch --nodes=1 --gpus-per-node=1 launch/slurm_gpu.sh` with the
     same flags)
  3. FID-50k:
     python -m kflow_jax.main --config=configs/cifar10.py:transform=fourier \
       --config.input.data_dir=/data/tfds --workdir=/runs/cifar10_fourier \
       --mode=eval --config.evals.<...>   # the FID keys of the evaluation section
     FID needs the Inception weights file pt_inception-2015-12-05-6726825d.pth
     and a reference statistics file of the CIFAR-10 training images; no
     file is downloaded at run time.

Without the prepared data set this stops at once with the data-set error.
"""

from kflow_jax import config_lib

# Options of each transform on 32x32x3 images.
TRANSFORMS = {
    "identity": {}, "fourier": {}, "dct": {},
    "wavelet": dict(wavelet="db6", levels=1),
}


def get_config(arg=None):
  a = config_lib.parse_transform_args(arg, "configs/cifar10.py", TRANSFORMS,
                                      transform="fourier", runlocal=False)
  c = config_lib.base()
  c.input.name = "cifar10"
  c.input.num_workers = 4
  config_lib.set_bands(c, a.transform, 2, **TRANSFORMS[a.transform])
  c.path.gamma = 0.0
  c.model = config_lib.model_section("unet", size="cifar", dtype="float32")
  # torchcfm's recipe (see the docstring).
  config_lib.recipe(c, total_steps=400_000, batch_size=128, recipe_devices=1,
                    learning_rate=2e-4, warmup_steps=5000, grad_clip_norm=1.0,
                    ema_decay=0.9999, log_every_steps=100,
                    checkpoint_every_steps=10000, sample_every_steps=20000,
                    eval_steps=20, sample_batch_size=500)
  if a.runlocal:
    c = config_lib.runlocal(c)
    # Keep the U-Net path (runlocal's default backbone is a DiT), tiny.
    c.model = config_lib.model_section("unet", keep=c.model, size="mu",
                                       dtype="float32")
    c.input.num_workers = 0
    # dopri5 (diffrax) compiles for tens of seconds on the CPU.
    c.sample.solver = "euler"
  return c
