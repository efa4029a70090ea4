"""Tests of cpjax.tools.clone on photos bundled with scikit-image: a given mask (against
cv2.seamlessClone), an FCN mask from a tiny checkpoint, mask cleaning, and every bad input."""
from __future__ import annotations

import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
import skimage.data
import skimage.draw
import skimage.measure
import skimage.morphology
from PIL import Image

from conftest import REPO, load_config, subprocess_env
from cpjax import tasks
from cpjax.models import fcn
from cpjax.tools import clone
from cpjax.tools.common import ToolError
from cpjax.train import checkpointing
from data_pipelines import synthetic_segmentation

_OFFSET = (40, 70)   # DX, DY of the cat face in the astronaut photo


def _save(path, array):
  Image.fromarray(array).save(path)
  return str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """Source: chelsea at half size (150x226); target: astronaut at half size (256x256); mask:
  an ellipse around the cat's face."""
  d = tmp_path_factory.mktemp("photos")
  source = skimage.data.chelsea()[::2, ::2]
  target = skimage.data.astronaut()[::2, ::2]
  mask = np.zeros(source.shape[:2], np.uint8)
  mask[skimage.draw.ellipse(80, 110, 62, 80, shape=mask.shape)] = 255
  return {"source": _save(d / "source.png", source), "target": _save(d / "target.png", target),
          "mask": _save(d / "mask.png", mask), "arrays": (source, target, mask), "dir": d}


def test_given_mask_close_to_opencv(photos, tmp_path):
  """With --mask the tool writes the Poisson clone: equal to the target outside the region's box
  (+1 px ring) and close to cv2.seamlessClone(NORMAL_CLONE) at the same placement: measured
  mean |ours - cv2| over the box 10.1 levels of 255, against 59 for plain cut-and-paste; we bound
  it at 12. The difference is OpenCV's boundary handling (it erodes the mask 3x, takes its
  Dirichlet values on the mask's outermost pixels, rounds to uint8), which on a textured photo
  costs more than on the smooth images of tests/ops/test_poisson.py (5.5 levels there)."""
  out = tmp_path / "out.png"
  result = clone.run(photos["source"], photos["target"], str(out), mask=photos["mask"],
                     offset=f"{_OFFSET[0]},{_OFFSET[1]}")
  written = np.asarray(Image.open(out)).astype(np.float32)
  np.testing.assert_allclose(written, np.round(result * 255), atol=0.5)
  source, target, mask = photos["arrays"]
  ys, xs = np.nonzero(mask)
  y0, x0, h, w = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
  dx, dy = _OFFSET
  center = (int(x0 + dx + w // 2), int(y0 + dy + h // 2))
  # cv2 erodes the mask in place: a copy keeps the module's fixture intact.
  cv = cv2.seamlessClone(source, target, mask.copy(), center, cv2.NORMAL_CLONE).astype(np.float32)
  box = np.s_[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w]
  assert np.abs(written[box] - cv[box]).mean() < 12.0
  outside = np.ones(target.shape[:2], bool)
  outside[y0 + dy - 1:y0 + dy + h + 1, x0 + dx - 1:x0 + dx + w + 1] = False
  np.testing.assert_array_equal(written[outside], target[outside])


@pytest.mark.parametrize("mode,flag", [("normal", cv2.NORMAL_CLONE),
                                       ("mixed", cv2.MIXED_CLONE)])
def test_opencv_domain_matches_cv2(photos, tmp_path, mode, flag):
  """--domain=opencv reproduces cv2.seamlessClone on the photos: cv2 truncates its solution f to
  uint8, the tool returns f (clipped) and writes it rounded, so cv2 <= 255 f < cv2 + 1 up to
  float round-off (measured -0.009 on this photo: we allow 0.02) and the PNG is within 1 level
  of cv2 everywhere."""
  out = tmp_path / "out.png"
  result = clone.run(photos["source"], photos["target"], str(out), mask=photos["mask"],
                     offset=f"{_OFFSET[0]},{_OFFSET[1]}", mode=mode, domain="opencv")
  source, target, mask = photos["arrays"]
  ys, xs = np.nonzero(mask)
  h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
  center = (int(xs.min() + _OFFSET[0] + w // 2), int(ys.min() + _OFFSET[1] + h // 2))
  cv = cv2.seamlessClone(np.ascontiguousarray(source[..., ::-1]),
                         np.ascontiguousarray(target[..., ::-1]), mask.copy(), center,
                         flag)[..., ::-1].astype(np.float32)
  d = result * 255 - cv
  assert d.min() > -0.02 and d.max() < 1.02, (d.min(), d.max())
  written = np.asarray(Image.open(out)).astype(np.float32)
  assert np.abs(written - cv).max() <= 1


def test_mixed_mode_reaches_the_solver(photos, tmp_path):
  """--mode=mixed gives another result than normal cloning (the modes themselves are tested
  against OpenCV in tests/ops/test_poisson.py); outside the region both equal the target."""
  kw = dict(mask=photos["mask"], offset="40,70")
  normal = clone.run(photos["source"], photos["target"], str(tmp_path / "n.png"), **kw)
  mixed = clone.run(photos["source"], photos["target"], str(tmp_path / "m.png"), mode="mixed",
                    **kw)
  assert np.abs(mixed - normal).mean() > 1e-3
  np.testing.assert_array_equal(mixed[:60], normal[:60])


def test_clean_mask_matches_skimage():
  """clean_mask keeps the largest 8-connected component and dilates by a disk: the same as
  skimage.measure.label(connectivity=2) + skimage.morphology.dilation(disk(r))."""
  r = np.random.default_rng(0)
  mask = np.zeros((60, 70), bool)
  mask[10:30, 10:35] = True                       # the largest component
  mask[30, 35] = True                             # diagonal neighbour: part of it (8-conn.)
  mask[45:52, 50:60] = True                       # smaller
  mask |= r.random(mask.shape) > 0.985            # specks
  labels = skimage.measure.label(mask, connectivity=2)
  largest = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
  for radius in (0, 1, 3):
    expected = skimage.morphology.dilation(largest, skimage.morphology.disk(radius))
    got = clone.clean_mask(mask[..., None].astype(np.float32), radius)
    assert got.shape == (60, 70, 1)
    np.testing.assert_array_equal(got[..., 0] > 0.5, expected)


def _bright_detector(shapes):
  """FCN-8s parameters that label class 1 where the input's red channel exceeds about 0.52:
  centre-tap identity convs carry ReLU(255 (R - 0.5)) (channel 2 after the Caffe BGR conversion,
  whose zero padding is the mean colour, R = 0.48) down the trunk, score_pool3 copies it into
  class 1's score against a constant 5 for class 0; score_fr and score_pool4 are zero, the
  upscore layers bilinear. A stride-8 path: max-pooling grows bright regions by < 8 px."""
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  for name, conv in params["vgg"].items():
    conv["kernel"][1, 1, 2 if name == "conv1_1" else 0, :] = 1.0
  params["vgg"]["conv1_1"]["bias"][:] = 122.67891434 - 255 * 0.5
  params["score_pool3"]["kernel"][0, 0, 0, 1] = 1.0
  params["score_pool3"]["bias"][0] = 5.0
  for name in params:
    if name.startswith("upscore"):
      size, _, k, _ = params[name]["kernel"].shape
      params[name]["kernel"] = fcn.bilinear_kernel(size, k)
  return params


@pytest.fixture(scope="module")
def fcn_workdir(tmp_path_factory):
  """A checkpoint of the tiny FCN config (classes of seg_samples) holding `_bright_detector`."""
  workdir = tmp_path_factory.mktemp("fcn_run")
  config = load_config("fcn_voc", "tiny")
  task = tasks.build(config)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  params = _bright_detector(shapes.params)
  state = shapes.replace(step=np.int32(0), params=params, opt_state=task.tx.init(params))
  checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
  checkpointer.save(1, state, None, config)
  checkpointer.close()
  return str(workdir)


@pytest.fixture(scope="module")
def dark_source(photos):
  """The cat's face (bundled photo, its known ellipse cut-out) at 100 px on black, plus a small
  bright square that mask cleaning must drop; 140x180."""
  pixels, mask = synthetic_segmentation.cutout("cat")
  scale = 100 / pixels.shape[0]
  size = (100, round(pixels.shape[1] * scale))
  pixels = np.asarray(Image.fromarray(pixels).resize(size[::-1], Image.BICUBIC))
  inside = np.asarray(Image.fromarray(mask[..., 0]).resize(size[::-1], Image.NEAREST)) > 127
  image = np.zeros((140, 180, 3), np.uint8)
  window = np.s_[20:20 + size[0], 10:10 + size[1]]
  image[window][inside] = pixels[inside]
  image[100:112, 160:172] = 230
  truth = np.zeros((140, 180), bool)
  truth[window] = inside
  return _save(photos["dir"] / "dark_source.png", image), truth


def test_fcn_mask_end_to_end(photos, fcn_workdir, dark_source, tmp_path):
  """--segment --class=cat: the checkpoint's FCN finds the cat (IoU > 0.7 with its true
  ellipse: measured 0.78, max-pooling grows it by a few px), the small square is dropped by the
  largest-component rule, the mask is dilated by a 3 px disk, and the output is the Poisson
  clone with that mask."""
  source, truth = dark_source
  out, mask_out = tmp_path / "out.png", tmp_path / "mask.png"
  result = clone.run(source, photos["target"], str(out), segment_workdir=fcn_workdir,
                     class_name="cat", offset="30,60", save_mask=str(mask_out))
  saved = np.asarray(Image.open(mask_out)) > 127
  undilated = skimage.morphology.erosion(saved, skimage.morphology.disk(3))
  iou = np.sum(undilated & truth) / np.sum(undilated | truth)
  assert iou > 0.7, iou
  assert not saved[100:112, 160:172].any()
  # A dilation by the disk is unchanged by an opening with it: the mask is a dilated set.
  disk = skimage.morphology.disk(3)
  np.testing.assert_array_equal(
      skimage.morphology.dilation(skimage.morphology.erosion(saved, disk), disk), saved)
  reference = clone.clone(np.asarray(Image.open(source), np.float32) / 255,
                          np.asarray(Image.open(photos["target"]), np.float32) / 255,
                          saved[..., None].astype(np.float32), (30, 60))
  np.testing.assert_allclose(result, reference, atol=1e-6)
  assert np.asarray(Image.open(out)).shape == (256, 256, 3)


def _run(photos, tmp_path, **kwargs):
  args = dict(source=photos["source"], target=photos["target"], out=str(tmp_path / "o.png"),
              mask=photos["mask"])
  args.update(kwargs)
  return clone.run(**args)


def test_placement_errors_give_the_offsets_that_work(photos, tmp_path):
  """A region moved outside the target, or onto its 1-px border (the Poisson boundary), is
  refused with the DX/DY ranges that fit, computed here from the mask's extent."""
  ys, xs = np.nonzero(photos["arrays"][2])
  x0, x1 = xs.min(), xs.max()
  with pytest.raises(ToolError, match=rf"falls outside .*target.png \(256x256\); use DX in "
                                      rf"\[{-x0}, {255 - x1}\]"):
    _run(photos, tmp_path, offset="300,0")
  with pytest.raises(ToolError, match=rf"touches the border of .*target.png.*use DX in "
                                      rf"\[{1 - x0}, {254 - x1}\]"):
    _run(photos, tmp_path, offset=f"{-x0},0")


@pytest.mark.parametrize("kwargs,match", [
    (dict(offset="1,2,3"), r"is not DX,DY"),
    (dict(mode="poisson"), r"--mode='poisson'; use one of normal, mixed, monochrome"),
    (dict(domain="perez"), r"--domain='perez'; use one of box, mask, opencv"),
    (dict(mask=None), r"either as --mask=M.png or as --segment"),
    (dict(class_name="cat"), r"--class is used with --segment"),
    (dict(mask=None, segment_workdir="/nowhere"), r"needs --class=NAME"),
    (dict(dilation=-1), r"--dilation=-1"),
])
def test_bad_arguments(photos, tmp_path, kwargs, match):
  with pytest.raises(ToolError, match=match):
    _run(photos, tmp_path, **kwargs)


def test_bad_files(photos, tmp_path):
  """A mask of the wrong size, an empty mask, an output that exists or is an input."""
  source, _, mask = photos["arrays"]
  small = _save(tmp_path / "small.png", mask[:100])
  with pytest.raises(ToolError, match=r"small.png is 100x226 but .*source.png is 150x226"):
    _run(photos, tmp_path, mask=small)
  empty = _save(tmp_path / "empty.png", np.zeros_like(mask))
  with pytest.raises(ToolError, match=r"empty.png is empty"):
    _run(photos, tmp_path, mask=empty)
  (tmp_path / "exists.png").write_bytes(b"x")
  with pytest.raises(ToolError, match=r"exists.png exists already; give a new output path, or "
                     r"--overwrite to replace it"):
    _run(photos, tmp_path, out=str(tmp_path / "exists.png"))
  with pytest.raises(ToolError, match=r"one of the input files"):
    _run(photos, tmp_path, out=photos["target"])
  del source


def test_bad_segmentation_requests(photos, fcn_workdir, dark_source, tmp_path):
  """An unknown class lists the valid ones; a class the FCN does not find says so; a workdir
  without checkpoints says how to train one; a harmonisation flag on an FCN run is refused."""
  source, _ = dark_source
  kw = dict(source=source, mask=None, segment_workdir=fcn_workdir)
  with pytest.raises(ToolError, match=r"'dog' is not a class .*use one of: background, cat, cup, "
                                      r"person, rocket"):
    _run(photos, tmp_path, class_name="dog", **kw)
  with pytest.raises(ToolError, match=r"finds no rocket in .*dark_source.png"):
    _run(photos, tmp_path, class_name="rocket", **kw)
  with pytest.raises(ToolError, match=r"no checkpoint in"):
    _run(photos, tmp_path, class_name="cat", **dict(kw, segment_workdir=str(tmp_path)))
  with pytest.raises(ToolError, match=r"--harmonize: .* holds a 'fcn' run, but this needs a "
                                      r"'harmonization' one \(e.g. trained with "
                                      r"--config=configs/harmonization_demo.py\)"):
    _run(photos, tmp_path, harmonize_workdir=fcn_workdir)


def test_command_line_error_is_one_line(photos, tmp_path):
  """`python -m cpjax.tools.clone` with a bad input prints one line and exits with status 1
  (the flags reach `run`: the error comes from its output check)."""
  out = tmp_path / "exists.png"
  out.write_bytes(b"x")
  cmd = [sys.executable, "-m", "cpjax.tools.clone", f"--source={photos['source']}",
         f"--target={photos['target']}", f"--mask={photos['mask']}", f"--out={out}",
         "--mode=mixed", "--offset=40,70"]
  bad = subprocess.run(cmd, cwd=REPO, env=subprocess_env(),
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [
      f"cpjax.tools.clone: {out} exists already; give a new output path, or --overwrite to "
      "replace it."]
