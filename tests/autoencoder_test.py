"""Tests of kflow_jax.models.autoencoder: SD-VAE architecture and diffusers import."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kflow_jax.models import autoencoder


def _resnet(prefix, cin, cout):
  d = {f"{prefix}.norm1.weight": (cin,), f"{prefix}.norm1.bias": (cin,),
       f"{prefix}.conv1.weight": (cout, cin, 3, 3),
       f"{prefix}.conv1.bias": (cout,),
       f"{prefix}.norm2.weight": (cout,), f"{prefix}.norm2.bias": (cout,),
       f"{prefix}.conv2.weight": (cout, cout, 3, 3),
       f"{prefix}.conv2.bias": (cout,)}
  if cin != cout:
    d[f"{prefix}.conv_shortcut.weight"] = (cout, cin, 1, 1)
    d[f"{prefix}.conv_shortcut.bias"] = (cout,)
  return d


def _attention(prefix, c, old_names=False):
  d = {f"{prefix}.group_norm.weight": (c,), f"{prefix}.group_norm.bias": (c,)}
  names = (("query", "key", "value", "proj_attn") if old_names
           else ("to_q", "to_k", "to_v", "to_out.0"))
  for n in names:
    d[f"{prefix}.{n}.weight"] = (c, c)
    d[f"{prefix}.{n}.bias"] = (c,)
  return d


def diffusers_vae_shapes(chans=(128, 256, 512, 512), layers=2, latent=4,
                         old_names=False):
  """Names and shapes of a diffusers AutoencoderKL state dict, written out
  from diffusers' architecture (not from our flax model)."""
  d = {"encoder.conv_in.weight": (chans[0], 3, 3, 3),
       "encoder.conv_in.bias": (chans[0],)}
  cin = chans[0]
  for i, ch in enumerate(chans):
    for j in range(layers):
      d.update(_resnet(f"encoder.down_blocks.{i}.resnets.{j}", cin, ch))
      cin = ch
    if i < len(chans) - 1:
      d[f"encoder.down_blocks.{i}.downsamplers.0.conv.weight"] = (ch, ch, 3, 3)
      d[f"encoder.down_blocks.{i}.downsamplers.0.conv.bias"] = (ch,)
  for part, c in (("encoder", chans[-1]), ("decoder", chans[-1])):
    d.update(_resnet(f"{part}.mid_block.resnets.0", c, c))
    d.update(_attention(f"{part}.mid_block.attentions.0", c, old_names))
    d.update(_resnet(f"{part}.mid_block.resnets.1", c, c))
  d.update({"encoder.conv_norm_out.weight": (chans[-1],),
            "encoder.conv_norm_out.bias": (chans[-1],),
            "encoder.conv_out.weight": (2 * latent, chans[-1], 3, 3),
            "encoder.conv_out.bias": (2 * latent,),
            "quant_conv.weight": (2 * latent, 2 * latent, 1, 1),
            "quant_conv.bias": (2 * latent,),
            "post_quant_conv.weight": (latent, latent, 1, 1),
            "post_quant_conv.bias": (latent,),
            "decoder.conv_in.weight": (chans[-1], latent, 3, 3),
            "decoder.conv_in.bias": (chans[-1],)})
  rev = tuple(reversed(chans))
  cin = rev[0]
  for i, ch in enumerate(rev):
    for j in range(layers + 1):
      d.update(_resnet(f"decoder.up_blocks.{i}.resnets.{j}", cin, ch))
      cin = ch
    if i < len(rev) - 1:
      d[f"decoder.up_blocks.{i}.upsamplers.0.conv.weight"] = (ch, ch, 3, 3)
      d[f"decoder.up_blocks.{i}.upsamplers.0.conv.bias"] = (ch,)
  d.update({"decoder.conv_norm_out.weight": (chans[0],),
            "decoder.conv_norm_out.bias": (chans[0],),
            "decoder.conv_out.weight": (3, chans[0], 3, 3),
            "decoder.conv_out.bias": (3,)})
  return d


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_param_count_matches_sd_vae_ft_mse():
  shapes = diffusers_vae_shapes()
  assert sum(int(np.prod(s)) for s in shapes.values()) == (
      autoencoder.SD_VAE_NUM_PARAMS)
  params = autoencoder.param_shapes(autoencoder.sd_vae())
  assert _count(params) == autoencoder.SD_VAE_NUM_PARAMS  # 83.65M


@pytest.mark.parametrize("old_names", [False, True])
def test_importer_maps_every_full_size_tensor(old_names):
  # Zero-stride arrays: full SD-VAE names and shapes at no memory cost.
  state = {k: np.broadcast_to(np.float32(0), s)
           for k, s in diffusers_vae_shapes(old_names=old_names).items()}
  params = autoencoder.convert_diffusers_state_dict(state)
  want = autoencoder.param_shapes(autoencoder.sd_vae())
  assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(
      lambda x: x.shape, flax.core.unfreeze(want))


def _tiny():
  return autoencoder.AutoencoderKL(block_out_channels=(32, 64),
                                   layers_per_block=1)


def _random_state(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return {k: (0.05 * rng.standard_normal(s)).astype(np.float32)
          for k, s in shapes.items()}


def test_importer_round_trip_values_tiny():
  model = _tiny()
  state = _random_state(diffusers_vae_shapes(chans=(32, 64), layers=1))
  params = autoencoder.convert_diffusers_state_dict(state, model)
  # Conv: OIHW -> HWIO, checked against a PyTorch-layout (NCHW/OIHW) conv.
  x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(
      np.float32)
  w, b = state["encoder.conv_in.weight"], state["encoder.conv_in.bias"]
  ref = jax.lax.conv_general_dilated(
      x, w, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NCHW", "OIHW", "NCHW")) + b[None, :, None, None]
  conv = flax.linen.Conv(32, (3, 3), padding=((1, 1), (1, 1)))
  got = conv.apply({"params": params["encoder"]["conv_in"]},
                   x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(got, np.asarray(ref).transpose(0, 2, 3, 1),
                             atol=1e-5)
  # Linear: y = x W^T + b in PyTorch.
  att = params["decoder"]["mid_block"]["attentions_0"]
  wq = state["decoder.mid_block.attentions.0.to_q.weight"]
  v = np.ones((1, 64), np.float32)
  np.testing.assert_allclose(v @ att["to_q"]["kernel"], v @ wq.T, rtol=1e-6)
  np.testing.assert_array_equal(
      params["encoder"]["down_blocks_1_resnets_0"]["norm2"]["scale"],
      state["encoder.down_blocks.1.resnets.0.norm2.weight"])
  # Old attention names (and 1x1-conv-shaped projections) give the same.
  old = dict(state)
  for new, prev in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                    ("to_out.0", "proj_attn")):
    for part in ("encoder", "decoder"):
      for leaf in ("weight", "bias"):
        value = old.pop(f"{part}.mid_block.attentions.0.{new}.{leaf}")
        if leaf == "weight" and prev == "query":
          value = value[:, :, None, None]
        old[f"{part}.mid_block.attentions.0.{prev}.{leaf}"] = value
  params_old = autoencoder.convert_diffusers_state_dict(old, model)
  jax.tree.map(np.testing.assert_array_equal, params, params_old)


def test_importer_lists_missing_and_unexpected():
  state = {k: np.broadcast_to(np.float32(0), s)
           for k, s in diffusers_vae_shapes(chans=(32, 64), layers=1).items()}
  del state["decoder.conv_out.bias"]
  state["decoder.extra.weight"] = np.zeros((3,), np.float32)
  with pytest.raises(ValueError) as err:
    autoencoder.convert_diffusers_state_dict(state, _tiny())
  msg = str(err.value)
  assert "decoder/conv_out/bias" in msg and "decoder.extra.weight" in msg
  state = {k: np.broadcast_to(np.float32(0), s)
           for k, s in diffusers_vae_shapes(chans=(32, 64), layers=1).items()}
  state["encoder.conv_in.weight"] = np.zeros((32, 3, 5, 5), np.float32)
  with pytest.raises(ValueError, match="encoder.conv_in.weight.*shape"):
    autoencoder.convert_diffusers_state_dict(state, _tiny())


def test_safetensors_file_round_trip(tmp_path):
  from safetensors import numpy as st_numpy  # pylint: disable=g-import-not-at-top
  state = _random_state(diffusers_vae_shapes(chans=(32, 64), layers=1))
  path = str(tmp_path / "diffusion_pytorch_model.safetensors")
  st_numpy.save_file(state, path)
  params = autoencoder.load_diffusers_weights(path, _tiny())
  np.testing.assert_array_equal(
      params["quant_conv"]["kernel"][0, 0],
      state["quant_conv.weight"][:, :, 0, 0].T)
  with pytest.raises(ValueError, match="sd-vae-ft-mse"):
    autoencoder.load_diffusers_weights(str(tmp_path / "missing"), _tiny())


def test_sd_vae_shapes_at_256():
  model = autoencoder.sd_vae()
  params = autoencoder.param_shapes(model)
  x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
  mean, std = jax.eval_shape(
      lambda p, x: model.apply({"params": p}, x, method=model.encode),
      params, x)
  assert mean.shape == std.shape == (2, 32, 32, 4)
  out = jax.eval_shape(
      lambda p, z: model.apply({"params": p}, z, method=model.decode),
      params, mean)
  assert out.shape == (2, 256, 256, 3)


@pytest.mark.slow
def test_tiny_forward_encode_sample_decode():
  # Imported random weights (model.init's per-parameter RNG is slow to
  # compile on the CPU; the forward pass is what is under test).
  model = _tiny()
  params = autoencoder.convert_diffusers_state_dict(
      _random_state(diffusers_vae_shapes(chans=(32, 64), layers=1)), model)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1,
                         maxval=1)
  encode = jax.jit(lambda p, x: model.apply(
      {"params": p}, x, method=model.encode))
  mean, std = encode(params, x)
  assert mean.shape == (2, 8, 8, 4) and bool((std > 0).all())
  z = autoencoder.sample(jax.random.key(2), mean, std)
  assert not np.allclose(z, mean)
  out = jax.jit(lambda p, z: model.apply(
      {"params": p}, z, method=model.decode))(params, z)
  assert out.shape == (2, 16, 16, 3) and np.isfinite(out).all()
  # Different inputs give different latents (the encoder is not constant).
  mean2, _ = encode(params, -x)
  assert not np.allclose(mean, mean2)


def test_export_is_the_inverse_and_matches_diffusers_names():
  model = _tiny()
  state = _random_state(diffusers_vae_shapes(chans=(32, 64), layers=1))
  params = autoencoder.convert_diffusers_state_dict(state, model)
  back = autoencoder.to_diffusers_state_dict(params)
  assert set(back) == set(state)
  for k, v in state.items():
    np.testing.assert_array_equal(back[k], v)
