"""Converted released weights work in their tools, end to end on the command line.

For each family of runnable converted weights, a PyTorch checkpoint of the reference layout
(the networks tests/convert/ rebuilds) is saved as a .pth, converted with `cpjax.tools.convert`
into a new directory, and that directory is given to the family's tool as --workdir (or
--segment) in a subprocess:

  cpn_video -> inpaint_video (released frame preparation, the default for converted weights)
  idih256   -> harmonize
  fcn8s     -> clone --segment

Harmonisation uses idih256 only: the hrnet*_idih256 files build the same task through the same
`restore_task` path, but HRNets compile slowly on XLA:CPU (hrnet18s_idih256, the smallest: 85 s
to restore and 20 s to harmonise on a 2-core CPU, against 13 s and 5 s for idih256), too slow
for CI.
Weights are random except where a test needs a known output (the FCN, which must find one
object for the cloning to have a region).
"""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, subprocess_env
from cpjax.models.vgg import CONV_NAMES
from cpjax.tools import convert as convert_tool

torch = pytest.importorskip("torch", reason="PyTorch writes the reference checkpoints: "
                            "pip install -e '.[torch]'")
from convert import torch_iharm as ti  # noqa: E402  (after the torch check)
from convert.test_fcn import TorchFCN  # noqa: E402
from convert.test_video_cpn import CPNet  # noqa: E402


def _convert(state_dict: dict, model: str, tmp_path) -> str:
  """Saves `state_dict` as a DataParallel-style .pth and converts it into a new directory."""
  path = tmp_path / f"{model}.pth"
  torch.save({f"module.{k}": v for k, v in state_dict.items()}, path)
  out = tmp_path / model
  convert_tool.run(str(path), model, str(out))
  return str(out)


def _tool(name: str, *flags: str) -> subprocess.CompletedProcess:
  run = subprocess.run([sys.executable, "-m", f"cpjax.tools.{name}", *flags], cwd=REPO,
                       env=subprocess_env(),
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def _png(path) -> np.ndarray:
  return np.asarray(Image.open(path))


def test_cpn_video_inpaints_with_the_released_procedure(tmp_path):
  """weight.pth (released layout; alignment regressor at its identity initialisation) ->
  inpaint_video: every frame is written at the requested size; outside the dilated holes each
  pixel is the released test's (cv2 INTER_LINEAR on the float frame, times 255, truncated);
  inside, the network's fill differs from the frame."""
  torch.manual_seed(0)
  net = CPNet().eval()
  with torch.no_grad():
    net.A_Regressor.fc.weight.zero_()
    net.A_Regressor.fc.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
  weights = _convert(net.state_dict(), "cpn_video", tmp_path)
  rng = np.random.default_rng(0)
  (tmp_path / "frames").mkdir()
  (tmp_path / "masks").mkdir()
  n, h, w = 3, 45, 70
  for i in range(n):
    frame = cv2.resize(rng.integers(0, 256, (9, 14, 3), dtype=np.uint8), (w, h))
    Image.fromarray(frame).save(tmp_path / "frames" / f"{i:05d}.png")
    Image.fromarray(((np.arange(h)[:, None] // 15 == 1) & (np.arange(w) // 20 == i))
                    .astype(np.uint8) * 255).save(tmp_path / "masks" / f"{i:05d}.png")
  out = tmp_path / "out"
  run = _tool("inpaint_video", f"--workdir={weights}", f"--frames={tmp_path / 'frames'}",
              f"--masks={tmp_path / 'masks'}", f"--out={out}", "--size=32x48")
  assert '"procedure": "released"' in run.stdout
  got = np.stack([_png(out / f"{i:05d}.png") for i in range(n)])
  assert got.shape == (n, 32, 48, 3)
  cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
  for i in range(n):
    frame = cv2.resize(_png(tmp_path / "frames" / f"{i:05d}.png") / 255.0, (48, 32),
                       interpolation=cv2.INTER_LINEAR).astype(np.float32)
    mask = cv2.resize((_png(tmp_path / "masks" / f"{i:05d}.png") > 0).astype(np.uint8),
                      (48, 32), interpolation=cv2.INTER_NEAREST)
    hole = cv2.dilate(mask, cross, iterations=4) > 0
    blended = frame * np.float32(n - i) / np.float32(n) + frame * np.float32(i) / np.float32(n)
    want = (blended * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(got[i][~hole], want[~hole])
    assert np.mean(np.abs(got[i][hole].astype(int) - want[hole])) > 2


def test_idih256_harmonizes_inside_the_mask_only(tmp_path):
  """idih256.pth (random weights and BatchNorm statistics) -> harmonize: the result has the
  composite's size, keeps every pixel outside the mask and changes the foreground."""
  weights = _convert(ti.build(ti.IDIH, seed=0).state_dict(), "idih256", tmp_path)
  rng = np.random.default_rng(1)
  composite = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (80, 60))
  mask = np.zeros((60, 80), np.uint8)
  mask[15:45, 20:55] = 255
  Image.fromarray(composite).save(tmp_path / "composite.png")
  Image.fromarray(mask).save(tmp_path / "mask.png")
  _tool("harmonize", f"--workdir={weights}", f"--image={tmp_path / 'composite.png'}",
        f"--mask={tmp_path / 'mask.png'}", f"--out={tmp_path / 'out.png'}")
  got = _png(tmp_path / "out.png")
  assert got.shape == composite.shape
  inside = mask > 0
  np.testing.assert_array_equal(got[~inside], composite[~inside])
  assert np.mean(np.abs(got[inside].astype(int) - composite[inside])) > 1


def _bilinear_kernel(k: int) -> np.ndarray:
  """The bilinear upsampling kernel of a k x k transposed conv (FCN's initialisation)."""
  f = (k + 1) // 2
  c = f - 1 if k % 2 else f - 0.5
  taps = 1.0 - np.abs(np.arange(k) - c) / f
  return np.outer(taps, taps).astype(np.float32)


def _red_finding_fcn8s() -> dict:
  """FCN-8s weights (pytorch-fcn layout) that label 'aeroplane' (class 1) where the image is
  strongly red: channel 0 carries ReLU(R * 255 - mean_R) through every conv (centre taps 1,
  the rest 0), score_fr scores it for class 1 against a constant 65 for the background, the
  skip scores are 0 and the upsamplings bilinear."""
  net = TorchFCN("8s", 21)
  sd = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
  sd["conv1_1.weight"][0, 2, 1, 1] = 1.0          # input channel 2 = R of Caffe's BGR
  for name in CONV_NAMES[1:]:
    sd[f"{name}.weight"][0, 0, 1, 1] = 1.0
  sd["fc6.weight"][0, 0, 3, 3] = 1.0
  sd["fc7.weight"][0, 0, 0, 0] = 1.0
  sd["score_fr.weight"][1, 0, 0, 0] = 1.0
  sd["score_fr.bias"][0] = 65.0
  for name, k in (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)):
    for c in range(21):
      sd[f"{name}.weight"][c, c] = torch.from_numpy(_bilinear_kernel(k))
  return sd


def test_fcn8s_segments_the_object_that_clone_blends(tmp_path):
  """fcn8s.pth -> clone --segment --class=aeroplane: the FCN's mask (saved) is one blob around
  the red square, away from the corners; the result is the target outside it (Perez's domain)
  and the blended source inside."""
  weights = _convert(_red_finding_fcn8s(), "fcn8s", tmp_path)
  source = np.full((128, 128, 3), 50, np.uint8)
  source[48:80, 48:80] = (255, 0, 0)
  target = cv2.resize(np.random.default_rng(2).integers(0, 256, (4, 4, 3), dtype=np.uint8),
                      (128, 128))
  Image.fromarray(source).save(tmp_path / "source.png")
  Image.fromarray(target).save(tmp_path / "target.png")
  _tool("clone", f"--source={tmp_path / 'source.png'}", f"--target={tmp_path / 'target.png'}",
        f"--segment={weights}", "--class=aeroplane", "--domain=mask",
        f"--save_mask={tmp_path / 'mask.png'}", f"--out={tmp_path / 'out.png'}")
  region = _png(tmp_path / "mask.png") > 127
  assert region[48:80, 48:80].all() and not region[:8, :8].any() and not region[-8:, -8:].any()
  got = _png(tmp_path / "out.png")
  np.testing.assert_array_equal(got[~region], target[~region])
  assert np.mean(got[56:72, 56:72, 0].astype(int) - got[56:72, 56:72, 2]) > 100   # red inside
