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
  cond            class-conditional on the source photo (plan E3's data):
                  the colour photos `E3_COLOUR` then the grey textures
                  `E3_TEXTURE` (classes 0..6 in that order), split by
                  region (config.input.patch_split="regions": the
                  held-out crops come from the right-most quarter of every
                  photo), 10 % of the labels dropped, CFG 1.5, one class
                  per row of the sample grid
  slots           cond with two condition slots (plan E3): slot 0 = band 0
                  (the colour photo), slot 1 = bands 1-2 (the grey
                  texture); 10 % of the examples with both slots null, 10 %
                  each with one slot null, 25 % band-mixed hybrids whose
                  coarse band comes from a colour patch and fine bands from
                  a texture patch (config.cond.mix_fine_classes = the
                  texture classes), each slot labelled with its photo.
                  Real patches keep one label in both slots. The two slots
                  share one class list (the model's label table has rows
                  per slot, models/layers.LabelEmbedder): slot 0 is asked
                  for classes 0..3 and slot 1 for 4..6; a colour id in slot
                  1 (or a texture in slot 0) is only ever seen on real,
                  consistent patches.
  runlocal        seconds on a CPU

  python -m kflow_jax.main --config=configs/patches.py --workdir=/tmp/patches
  python -m kflow_jax.main --config=configs/patches.py:transform=identity \
      --workdir=/tmp/patches_fm
  python -m kflow_jax.main --config=configs/patches.py:slots \
      --workdir=/tmp/patches_slots
  # rows: colour photo (classes 0..3), columns: texture photo (4..6)
  python -m kflow_jax.main --config=configs/patches.py:slots \
      --workdir=/tmp/patches_slots --mode=hybrid \
      --config.restore.row_classes=0,1,2,3 --config.restore.col_classes=4,5,6
"""
from kflow_jax import config_lib

TRANSFORMS = {
    "identity": {}, "fourier": {}, "dct": {}, "pca": {},
    "wavelet": dict(wavelet="db4", levels=2),
}
# Plan E3's photos: four colour photos of distinct colour statistics (the
# coarse slot) and three grey textures (the fine slots).
E3_COLOUR = ("coffee", "chelsea", "rocket", "immunohistochemistry")
E3_TEXTURE = ("brick", "grass", "gravel")
E3_PHOTOS = E3_COLOUR + E3_TEXTURE
COLOUR_CLASSES = tuple(range(len(E3_COLOUR)))
TEXTURE_CLASSES = tuple(range(len(E3_COLOUR), len(E3_PHOTOS)))


def get_config(arg=None):
  a = config_lib.parse_transform_args(arg, "configs/patches.py", TRANSFORMS,
                                      transform="fourier", cond=False,
                                      slots=False, runlocal=False)
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
  if a.cond or a.slots:
    c.input.photos = E3_PHOTOS
    c.input.eval_photos = ()
    c.input.patch_split = "regions"
    c.conditional = True
    c.label_dropout = 0.1
    c.sample.guidance = 1.5
    c.sample.num_samples = 70   # 10 rows of the 7 classes
    c.sample.batch_size = 70
  if a.slots:
    c.cond.slot_starts = (0, 1)
    c.cond.slot_dropout = 0.1
    c.cond.band_mix = 0.25
    c.cond.mix_fine_classes = TEXTURE_CLASSES
  if a.runlocal:
    c = config_lib.runlocal(c)
    if a.cond or a.slots:
      c.sample.num_samples = 14
      c.sample.batch_size = 7
  return c
