"""The released Copy-and-Paste Networks checkpoint loads into `video_cpn.CPNet` with parity.

The PyTorch CPNet below has the reference's state-dict layout (`<module>.<name>.conv.0`, the
unused `A_Regressor.conv6a/conv6b`, the normalisation buffers) and its forward semantics
(the released test code): alignment features of the
frame + hole map resized bilinearly (half-pixel) to 224x224; a regressor that reuses conv5a /
conv5b after conv56; `affine_grid` + `grid_sample` with align_corners=True (the PyTorch < 1.3
behaviour the released code ran with) and zero padding; visibility thresholded at 0.5; one
scalar similarity per reference, the masked softmax over references; the decoder with dilated
convs, nearest x2 upsampling and ImageNet de-normalisation. Weights are random.
"""
from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, load_config, numpy_params, subprocess_env
from cpjax import convert, tasks
from cpjax.convert import ConversionError
from cpjax.models import video_cpn
from cpjax.ops.color import IMAGENET_MEAN, IMAGENET_STD
from cpjax.tools import convert as convert_tool

torch = pytest.importorskip("torch", reason="PyTorch is needed for conversion parity: "
                            "pip install -e '.[torch]'")
nn = torch.nn
F = torch.nn.functional


class Conv(nn.Module):
  """The reference's Conv2d wrapper: `conv` = Sequential(Conv2d[, ReLU]) (keys `conv.0.*`)."""

  def __init__(self, cin, cout, k, s=1, d=1, relu=True):
    super().__init__()
    layers = [nn.Conv2d(cin, cout, k, stride=s, padding=d * (k // 2), dilation=d)]
    self.conv = nn.Sequential(*layers, *([nn.ReLU()] if relu else []))

  def forward(self, x):
    return self.conv(x)


class Normalized(nn.Module):
  """A module holding the reference's ImageNet mean / std buffers."""

  def __init__(self):
    super().__init__()
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))


class AEncoder(Normalized):
  def __init__(self):
    super().__init__()
    self.conv12, self.conv2 = Conv(4, 64, 5, 2), Conv(64, 64, 3)
    self.conv23, self.conv3 = Conv(64, 128, 3, 2), Conv(128, 128, 3)
    self.conv34 = Conv(128, 256, 3, 2)
    self.conv4a, self.conv4b = Conv(256, 256, 3), Conv(256, 256, 3)

  def forward(self, frame, hole):
    x = torch.cat([(frame - self.mean) / self.std, hole], 1)
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
    for layer in (self.conv12, self.conv2, self.conv23, self.conv3, self.conv34, self.conv4a,
                  self.conv4b):
      x = layer(x)
    return x


class ARegressor(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv45, self.conv56 = Conv(512, 512, 3, 2), Conv(512, 512, 3, 2)
    for name in ("conv5a", "conv5b", "conv6a", "conv6b"):
      setattr(self, name, Conv(512, 512, 3))
    self.fc = nn.Linear(512, 6)

  def forward(self, feat1, feat2):
    x = self.conv45(torch.cat([feat1, feat2], 1))
    x = self.conv5b(self.conv5a(x))
    x = self.conv56(x)
    x = self.conv5b(self.conv5a(x))          # the released code's reuse (conv6a/6b never run)
    x = F.avg_pool2d(x, x.shape[2]).view(-1, x.shape[1])
    return self.fc(x).view(-1, 2, 3)


class Encoder(Normalized):
  def __init__(self):
    super().__init__()
    self.conv12, self.conv2 = Conv(4, 64, 5, 2), Conv(64, 64, 3)
    self.conv23, self.conv3 = Conv(64, 128, 3, 2), Conv(128, 128, 3)
    self.value3 = Conv(128, 128, 3, relu=False)

  def forward(self, frame, map_):
    x = torch.cat([(frame - self.mean) / self.std, map_], 1)
    for layer in (self.conv12, self.conv2, self.conv23, self.conv3, self.value3):
      x = layer(x)
    return x


class Decoder(Normalized):
  def __init__(self):
    super().__init__()
    self.conv4, self.conv5_1, self.conv5_2 = Conv(257, 257, 3), Conv(257, 257, 3), Conv(257, 257, 3)
    for i, rate in enumerate((2, 4, 8, 16), 1):
      setattr(self, f"convA4_{i}", Conv(257, 257, 3, d=rate))
    self.conv3c, self.conv3b, self.conv3a = Conv(257, 257, 3), Conv(257, 128, 3), Conv(128, 128, 3)
    self.conv32, self.conv2 = Conv(128, 64, 3), Conv(64, 64, 3)
    self.conv21 = Conv(64, 3, 5, relu=False)

  def forward(self, x):
    for name in ("conv4", "conv5_1", "conv5_2", "convA4_1", "convA4_2", "convA4_3", "convA4_4",
                 "conv3c", "conv3b", "conv3a"):
      x = getattr(self, name)(x)
    x = self.conv2(self.conv32(F.interpolate(x, scale_factor=2, mode="nearest")))
    x = self.conv21(F.interpolate(x, scale_factor=2, mode="nearest"))
    return x * self.std + self.mean


def context_matching(values, tvmap, rvmaps):
  """The reference's CM_Module: values [B, C, 1 + T, h, w] (target first)."""
  t_feat, r_feats = values[:, :, 0], values[:, :, 1:]
  _, c, t, h, w = r_feats.shape
  tv = (F.interpolate(tvmap, size=(h, w), mode="bilinear", align_corners=False) > 0.5).float()
  gs_, vmaps_ = [], []
  for r in range(t):
    rv = (F.interpolate(rvmaps[:, :, r], size=(h, w), mode="bilinear",
                        align_corners=False) > 0.5).float()
    vmap = tv * rv
    gs = (vmap * t_feat * r_feats[:, :, r]).sum((1, 2, 3))
    v_sum = vmap[:, 0].sum((1, 2))
    zeros = v_sum < 1e-4
    gs[zeros] = 0
    gs = gs / (v_sum + zeros.float()) / c
    gs_.append(torch.ones_like(t_feat) * gs.view(-1, 1, 1, 1))
    vmaps_.append(rv)
  gss, vmaps = torch.stack(gs_, 2), torch.stack(vmaps_, 2)
  masked = gss * vmaps
  exps = torch.exp(masked - masked.max(2, keepdim=True)[0]) * vmaps
  sums = exps.sum(2, keepdim=True)
  match = exps / (sums + (sums < 1e-4).float())
  c_out = (r_feats * match).sum(2)
  c_mask = 1.0 - (match * vmaps).sum(2).mean(1, keepdim=True)
  return torch.cat([t_feat, c_out, c_mask], 1)


class CPNet(nn.Module):
  """Reference layout; `forward` = its `encoding` of the references + `inpainting` (no padding:
  the test's frames are multiples of 8)."""

  def __init__(self):
    super().__init__()
    self.A_Encoder, self.A_Regressor = AEncoder(), ARegressor()
    self.Encoder, self.Decoder = Encoder(), Decoder()
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    self.register_buffer("mean3d", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1))

  def forward(self, rframes, rholes, frame, hole):
    """rframes [B, 3, T, H, W], rholes [B, 1, T, H, W], frame [B, 3, H, W], hole [B, 1, H, W]."""
    t = rframes.shape[2]
    rfeats = [self.A_Encoder(rframes[:, :, r], rholes[:, :, r]) for r in range(t)]
    tfeat = self.A_Encoder(frame, hole)
    c_feats, aligned, rvmaps, thetas = [self.Encoder(frame, hole)], [], [], []
    for r in range(t):
      theta = self.A_Regressor(tfeat, rfeats[r])
      grid = F.affine_grid(theta, list(frame.shape), align_corners=True)
      aligned_r = F.grid_sample(rframes[:, :, r], grid, align_corners=True)
      aligned_v = (F.grid_sample(1 - rholes[:, :, r], grid, align_corners=True) > 0.5).float()
      c_feats.append(self.Encoder(aligned_r, aligned_v))
      aligned.append(aligned_r)
      rvmaps.append(aligned_v)
      thetas.append(theta)
    p_in = context_matching(torch.stack(c_feats, 2), 1 - hole, torch.stack(rvmaps, 2))
    pred = self.Decoder(p_in)
    comp = torch.clamp(pred * hole + frame * (1 - hole), 0, 1)
    return {"pred": pred, "comp": comp, "theta": torch.stack(thetas, 1),
            "aligned": torch.stack(aligned, 1)}


@pytest.fixture(scope="module")
def reference() -> CPNet:
  """The PyTorch CPNet with random He-normal convs, small random biases, and an fc that moves
  theta a little off the identity."""
  torch.manual_seed(0)
  net = CPNet().eval()
  with torch.no_grad():
    for name, p in net.named_parameters():
      if name == "A_Regressor.fc.weight":
        p.normal_(0.0, 2e-3)
      elif name == "A_Regressor.fc.bias":
        p.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]) + 0.05 * torch.randn(6))
      elif name.endswith("bias"):
        p.normal_(0.0, 0.05)
      else:
        p.normal_(0.0, float(np.sqrt(2.0 / p[0].numel())))
  return net


def _rect_holes(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
  holes = np.zeros((n, h, w, 1), np.float32)
  for hole in holes:
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    hole[y:y + rng.integers(4, h // 2), x:x + rng.integers(4, w // 2)] = 1.0
  return holes


def _nchw(x: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _rel(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))


def test_cpn_checkpoint_matches_reference_forward(reference):
  """alignment (theta, aligned references), decoder output and composite agree with the PyTorch
  reference to max relative error < 1e-4; conv6a/conv6b are dropped and reported."""
  b, t, h, w = 2, 2, 32, 48
  rng = np.random.default_rng(0)
  frames = rng.uniform(size=(b, t + 1, h, w, 3)).astype(np.float32)
  holes = _rect_holes(rng, b * (t + 1), h, w).reshape(b, t + 1, h, w, 1)
  frames = frames * (1 - holes) + holes * np.asarray(IMAGENET_MEAN, np.float32)
  refs, ref_holes, frame, hole = frames[:, 1:], holes[:, 1:], frames[:, 0], holes[:, 0]
  with torch.no_grad():
    want = reference(_nchw(refs), _nchw(ref_holes),
                     _nchw(frame), _nchw(hole))
  want = {k: np.moveaxis(v.numpy(), -3, -1) if k != "theta" else v.numpy()
          for k, v in want.items()}

  converted = convert.convert("cpn_video", {k: v.numpy()
                                            for k, v in reference.state_dict().items()})
  assert converted.dropped == sorted(f"A_Regressor.conv6{x}.conv.0.{p}" for x in "ab"
                                     for p in ("bias", "weight"))
  net = video_cpn.CPNet()

  @jax.jit
  def forward(variables):
    feats = net.apply(variables, refs.reshape(b * t, h, w, 3), ref_holes.reshape(b * t, h, w, 1),
                      method=video_cpn.CPNet.encode_alignment)
    return net.apply(variables, feats.reshape(b, t, *feats.shape[1:]), refs, ref_holes, frame,
                     hole)

  got = forward(converted.variables)
  assert np.max(np.abs(want["theta"] - np.eye(2, 3))) > 0.02   # a real, non-identity warp
  for key in ("theta", "aligned", "pred", "comp"):
    assert got[key].shape == want[key].shape, key
    assert _rel(got[key], want[key]) < 1e-4, (key, _rel(got[key], want[key]))


def test_wrong_buffers_and_missing_keys_are_errors(reference):
  """A checkpoint whose normalisation buffers differ, or that lacks a layer, is refused."""
  arrays = {k: v.numpy() for k, v in reference.state_dict().items()}
  with pytest.raises(ConversionError, match="Encoder.std is .* normalises with"):
    convert.convert("cpn_video", dict(arrays, **{"Encoder.std": np.ones((1, 3, 1, 1))}))
  del arrays["Decoder.conv3b.conv.0.bias"]
  with pytest.raises(ConversionError, match="no key 'Decoder.conv3b.conv.0.bias'"):
    convert.convert("cpn_video", arrays)


def test_convert_command_and_video_warm_start(reference, tmp_path):
  """`python -m cpjax.tools.convert` on a DataParallel checkpoint ('module.' keys) writes a
  directory, reports the dropped conv6a/conv6b, refuses to overwrite it; the video task's
  warm_start with init_from=DIR puts in exactly the converted weights (and a matching optimiser
  state), and a config that builds another network is refused, naming the differing fields."""
  path = tmp_path / "weight.pth"
  torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, path)
  out = tmp_path / "cpn"
  command = [sys.executable, "-m", "cpjax.tools.convert", f"--from={path}", "--model=cpn_video",
             f"--out={out}"]
  env = subprocess_env()
  run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "dropped unused reference keys: A_Regressor.conv6a.conv.0.bias" in run.stdout
  with pytest.raises(convert_tool.ToolError, match="exists already and is not an empty folder; "
                                                   "give a new output folder, or --overwrite"):
    convert_tool.run(str(path), "cpn_video", str(out))

  config = load_config("video_inpainting")
  config.update_from_flattened_dict({"init_from": str(out), "data.image_size": 32,
                                     "loss.perceptual": 0.0, "loss.style": 0.0})
  task = tasks.build(config)
  fresh = jax.eval_shape(task.init, jax.random.key(0))
  state = task.warm_start(fresh.replace(params=numpy_params(fresh.params)))
  assert jax.tree.map(np.shape, state.params) == jax.tree.map(np.shape, fresh.params)
  assert jax.tree.map(np.shape, state.opt_state) == jax.tree.map(np.shape, fresh.opt_state)
  kernel = jax.device_get(state.params["decoder"]["conv21"]["kernel"])
  want = reference.Decoder.conv21.conv[0].weight.detach().numpy().transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(kernel, want)
  np.testing.assert_array_equal(jax.device_get(state.params["align_regressor"]["fc"]["bias"]),
                                reference.A_Regressor.fc.bias.detach().numpy())

  small = load_config("video_demo", "tiny")
  small.init_from = str(out)
  with pytest.raises(ValueError, match=r"model.align_widths=\[8, 8, 8, 8, 16, 16, 16\] "
                                       r"\(released: \[64, .*model.align_size=32 \(released: 224\)"):
    tasks.build(small).warm_start(None)
