r"""CelebA-HQ 256, unconditional, on SD-VAE latents (32x32x4), DiT-L/2.

The paper's unconditional face setting (K-Flow, arXiv 2504.19353): the
30k CelebA-HQ images at 256 px as stabilityai/sd-vae-ft-mse latents (the
latent space of the LFM baseline), a DiT-L/2 backbone, no labels.

Arguments (`--config=configs/celebahq.py:<args>`, comma separated):
  transform=NAME  wavelet (default: db6, 1 level, 2 bands: approximation
                  then detail), fourier (2 radial-frequency bands), pca (a
                  4096-d basis fitted on the latents at the first start;
                  2 bands of eigenvalue rank), identity (one band: plain
                  latent flow matching, the LFM baseline)
  runlocal        seconds on a CPU (tests, smoke runs)

Expected FID (the paper's camera-ready Table 1; recall in brackets):
  wavelet   4.99 (0.46), the paper's best CelebA-HQ result ("Wave-DiT")
  fourier   5.11 (0.47)
  pca       5.19 (0.48)
  identity  LFM DiT-L/2: 5.28 as the K-Flow paper quotes it (0.48); LFM's
            own repository reports 5.26

The recipe. The paper gives none of the optimisation, so this is the LFM
recipe for DiT-L/2 on CelebA-HQ 256 (VinAIResearch/LFM, bash_scripts/
run.sh): one GPU (recipe_devices=1), batch 32, AdamW (0.9, 0.999),
weight decay 0, learning rate 2e-4 constant (no decay, warm-up or
clipping), 500 epochs = 468,750 steps (LFM reports its epoch-475
checkpoint, ~445k steps), sampling with adaptive dopri5 at atol = rtol =
1e-5. Our own choices: 2 bands with uniform band times (the paper reports
that 3 bands are worse than 2 on CelebA-HQ; its cut-offs are not given),
the wavelet at 1 level (so each band is one level of the pyramid), random
horizontal flips (stored flipped latents), an EMA of 0.9999 for sampling
(LFM keeps none), bfloat16 compute with float32 master weights.

Hardware: about 7e18 training FLOPs (~160 GFLOPs forward per latent, x3,
x 15M examples): roughly 16 h on one A100 or 5 h on one H100 at 40 %
utilisation (an estimate from FLOPs, not a measurement).

Steps:
  1. Prepare CelebA-HQ for TFDS (manual download, see the TFDS catalog page
     of celeb_a_hq; then `tfds build celeb_a_hq/256 --data_dir=/data/tfds
     --file_format=array_record`) and encode it once with the SD-VAE:
     python -m kflow_jax.tools.encode_latents \
       --config=configs/celebahq.py --config.input.name=celeb_a_hq \
       --config.input.image_size=256 --config.input.data_dir=/data/tfds \
       --vae_weights=/models/sd-vae-ft-mse/diffusion_pytorch_model.safetensors \
       --out=/data/celebahq256_sdvae_latents --splits=train --flip
     (CelebA-HQ has only a train split; LFM and K-Flow train on all 30k, and
     the loss evaluation reads the train split too.)
  2. Train on one GPU, like the recipe:
     python -m kflow_jax.main --config=configs/celebahq.py:transform=wavelet \
       --config.input.path=/data/celebahq256_sdvae_latents \
       --workdir=/runs/celebahq_wavelet
     (or `sbatch --nodes=1 --gpus-per-node=1 launch/slurm_gpu.sh ...` with
     the same flags; on a TPU, `launch/tpu_pod.sh run ... -- <flags>`).
  3. FID (50k samples decoded by the VAE, dopri5):
     python -m kflow_jax.main --config=configs/celebahq.py:transform=wavelet \
       --config.input.path=/data/celebahq256_sdvae_latents \
       --workdir=/runs/celebahq_wavelet --mode=eval \
       --config.evals.<...>   # the FID keys of the evaluation section
     FID needs the Inception weights file pt_inception-2015-12-05-6726825d.pth
     and a reference statistics file of the CelebA-HQ 256 training images;
     no file is downloaded at run time.

Without the encoded latents this stops at once with the data-set error.
"""

from kflow_jax import config_lib

TRANSFORMS = config_lib.LATENT_TRANSFORMS


def get_config(arg=None):
  a = config_lib.parse_transform_args(arg, "configs/celebahq.py", TRANSFORMS,
                                      transform="wavelet", runlocal=False)
  c = config_lib.base()
  config_lib.lfm_latent_recipe(c, "/data/celebahq256_sdvae_latents",
                               total_steps=468_750, batch_size=32,
                               learning_rate=2e-4, recipe_devices=1)
  # Only a train split exists (see the docstring).
  c.input.eval_split = "train"
  config_lib.set_bands(c, a.transform, 2, **TRANSFORMS[a.transform])
  # 4x the 4096 latent dimensions, so the fitted covariance has full rank.
  c.pca_examples = 16384
  return config_lib.runlocal_latent(c) if a.runlocal else c
