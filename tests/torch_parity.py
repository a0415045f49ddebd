"""pytorch-fid as a reference for the parity tests (imported by *_test.py).

Everything skips (pytest.importorskip) when torch or pytorch-fid is absent.
"""
import sys

import numpy as np
import pytest


_TORCHVISION_SHIM = []  # keeps the op-schema library alive


def import_pytorch_fid():
  """(torch, pytorch_fid.inception), or skips the test."""
  torch = pytest.importorskip("torch")
  try:
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pytest.skip("torchvision is not installed")
  except RuntimeError:
    # PyPI's torchvision beside the CPU torch wheel cannot load its C ops
    # ("operator torchvision::nms does not exist"). Its import only needs
    # the two op schemas it registers fake kernels for, and the Inception
    # modules use no torchvision op, so declare the schemas and retry.
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
      del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) "
                 "-> Tensor")
    _TORCHVISION_SHIM.append(lib)
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
  pytorch_fid_inception = pytest.importorskip("pytorch_fid.inception")
  return torch, pytorch_fid_inception


def build_random_pytorch_fid(path, fmt="zip", seed=0):
  """pytorch-fid's fid_inception_v3 with seeded weights, saved to path.

  Returns a pytorch_fid.inception.InceptionV3 (eval mode) that loaded this
  state dict through pytorch-fid's own code path, with a hook recording
  Mixed_6d.branch1x1's output for sFID.
  """
  torch, p = import_pytorch_fid()
  torch.manual_seed(seed)
  net = p._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  net.Mixed_5b = p.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = p.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = p.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = p.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = p.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = p.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = p.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = p.FIDInceptionE_1(1280)
  net.Mixed_7c = p.FIDInceptionE_2(2048)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, torch.nn.Conv2d):
        torch.nn.init.kaiming_normal_(m.weight)
      elif isinstance(m, torch.nn.BatchNorm2d):
        m.momentum = None  # running stats = this batch's exact stats
    # Realistic BatchNorm statistics: one train-mode pass on noise keeps
    # activations O(1) through all 94 layers (random stats explode).
    net.train()
    net(torch.rand(4, 3, 299, 299) * 2 - 1)
    for m in net.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
    torch.nn.init.normal_(net.fc.weight, std=0.02)
    net.fc.bias.uniform_(-1, 1)
  state_dict = net.state_dict()
  torch.save(state_dict, path,
             _use_new_zipfile_serialization=(fmt == "zip"))
  # pytorch-fid's InceptionV3 would download; hand it our state dict.
  original = p.load_state_dict_from_url
  p.load_state_dict_from_url = lambda *a, **k: torch.load(path)
  try:
    model = p.InceptionV3([3]).eval()
  finally:
    p.load_state_dict_from_url = original
  captured = {}
  model.blocks[2][6].branch1x1.register_forward_hook(
      lambda mod, inp, out: captured.__setitem__("spatial", out))
  model.captured = captured
  return model


def torch_features(model, images_nhwc):
  """pytorch-fid's pool3, the ADM sFID features and torch fc logits."""
  torch, _ = import_pytorch_fid()
  x = torch.from_numpy(np.ascontiguousarray(images_nhwc, np.float32))
  with torch.no_grad():
    pool = model(x.permute(0, 3, 1, 2))[0][:, :, 0, 0]
  spatial = model.captured["spatial"][:, :7].permute(0, 2, 3, 1)
  return {"pool": pool.numpy(),
          "spatial": spatial.reshape(len(x), -1).numpy()}
