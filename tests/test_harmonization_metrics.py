"""Harmonisation metrics (MSE, fMSE, PSNR as the reference computes them), foreground-ratio
buckets, the paper's tables, and the FN-MSE / MSE losses, against hand-computed values."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from cpjax import losses, metrics


def _gray(values_255: list[list[float]]) -> np.ndarray:
  """[1, H, W, 3] image in [0, 1] whose three channels hold the given 0-255 values."""
  v = np.asarray(values_255, np.float32)[None, :, :, None] / 255.0
  return np.repeat(v, 3, axis=-1)


def test_scores_match_hand_computed_values():
  """2x2 gray target 100, 200 / 50, 250; prediction +10 at (0, 0) and 300 (clamped to 255) at
  (1, 1): squared errors 100 and 25 per channel -> MSE 375 / 12 = 31.25; fMSE over the single
  mask pixel 300 / 3 = 100; PSNR 10 log10(250^2 / 31.25) = 10 log10(2000) (per-image peak 250)."""
  target = _gray([[100, 200], [50, 250]])
  pred = _gray([[110, 200], [50, 300]])
  mask = np.zeros((1, 2, 2, 1), np.float32)
  mask[0, 0, 0] = 1.0
  s = metrics.harmonization_scores(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
  assert float(s["mse"][0]) == pytest.approx(31.25, rel=1e-5)
  assert float(s["fmse"][0]) == pytest.approx(300.0 / (3.0 + 1e-6), rel=1e-5)
  assert float(s["psnr"][0]) == pytest.approx(10 * math.log10(62500 / (31.25 + 1e-6)), abs=1e-4)


def test_valid_pixels_score_a_padded_image_as_the_image_alone():
  """The hand-computed 2x2 case padded to 3x4 with a wrong prediction and a brighter target in
  the padding: with `valid` the scores equal the unpadded image's."""
  target, pred = _gray([[100, 200], [50, 250]]), _gray([[110, 200], [50, 300]])
  mask = np.zeros((1, 2, 2, 1), np.float32)
  mask[0, 0, 0] = 1.0
  pad = lambda x, value: np.pad(x, [(0, 0), (0, 1), (0, 2), (0, 0)],  # noqa: E731
                                constant_values=value)
  valid = pad(np.ones_like(mask), 0.0)
  padded = metrics.harmonization_scores(jnp.asarray(pad(pred, 0.0)), jnp.asarray(pad(target, 1.0)),
                                        jnp.asarray(pad(mask, 1.0)), jnp.asarray(valid))
  alone = metrics.harmonization_scores(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask))
  for name in ("mse", "fmse", "psnr"):
    np.testing.assert_allclose(padded[name], alone[name], rtol=1e-6, err_msg=name)
  assert float(padded["mse"][0]) == pytest.approx(31.25, rel=1e-5)


def test_fmse_with_a_soft_mask_and_an_empty_mask():
  """A bilinearly resized mask is soft: weights 0.5 and 1 -> (0.5 * 300 + 75) / (3 * 1.5);
  an empty mask gives 0 (the 1e-6 guard), not NaN."""
  target = _gray([[100, 200], [50, 250]])
  pred = _gray([[110, 200], [50, 255]])
  mask = np.zeros((2, 2, 2, 1), np.float32)
  mask[0, 0, 0], mask[0, 1, 1] = 0.5, 1.0
  s = metrics.harmonization_scores(jnp.asarray(np.concatenate([pred, pred])),
                                   jnp.asarray(np.concatenate([target, target])),
                                   jnp.asarray(mask))
  assert float(s["fmse"][0]) == pytest.approx((0.5 * 300 + 75) / (3 * 1.5 + 1e-6), rel=1e-5)
  assert float(s["fmse"][1]) == 0.0


def test_foreground_ratio_buckets_are_inclusive_like_the_reference():
  """20x20 masks with 0, 20 (exactly 5 %: both of the first two ranges), 40 and 200 pixels;
  soft values <= 0.5 do not count as foreground."""
  counts = [0, 20, 40, 200]
  masks = np.zeros((4, 20, 20, 1), np.float32)
  for i, n in enumerate(counts):
    masks[i].reshape(-1)[:n] = 1.0
  masks[0, 5:10, 5:10] = 0.5
  got = np.asarray(metrics.foreground_ratio_buckets(jnp.asarray(masks)))
  np.testing.assert_array_equal(got, [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_table_means_per_group_and_all():
  """Sums as the trainer hands them over -> per-subset and All means (NumPy reference); members
  without images are left out."""
  mse = np.array([10.0, 20.0, 60.0])
  fmse = np.array([100.0, 300.0, 500.0])
  psnr = np.array([30.0, 34.0, 38.0])
  member = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], np.float64)
  sums = {"mse": mse.sum(), "fmse": fmse.sum(), "psnr": psnr.sum(), "subset_n": member.sum(0),
          "subset_mse": mse @ member, "subset_fmse": fmse @ member, "subset_psnr": psnr @ member}
  table = metrics.harmonization_table(sums, 3, {"subset": ("A", "B", "C", "D")})
  assert table["All"] == pytest.approx({"N": 3, "MSE": 30.0, "fMSE": 300.0, "PSNR": 34.0})
  assert set(table["subset"]) == {"A", "C"}
  assert table["subset"]["A"] == pytest.approx({"N": 2, "MSE": 15.0, "fMSE": 200.0, "PSNR": 32.0})
  assert table["subset"]["C"] == pytest.approx({"N": 1, "MSE": 60.0, "fMSE": 500.0, "PSNR": 38.0})
  text = metrics.format_harmonization_table({"model": table}, "subset")
  assert text.splitlines()[2] == "| model | 15.00 / 200.00 / 32.00 | 60.00 / 500.00 / 38.00 | " \
                                 "30.00 / 300.00 / 34.00 |"


def test_fn_mse_normalises_by_the_clamped_foreground_area():
  """Per sample sum of squared errors / (C * max(area, A_min)), then the batch mean: a sample
  with a 4-pixel mask is clamped to A_min = 10, one with 16 pixels is not."""
  rng = np.random.default_rng(0)
  pred, target = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
  mask = np.zeros((2, 4, 4, 1))
  mask[0, :2, :2] = 1.0
  mask[1] = 1.0
  err = ((pred - target) ** 2).sum(axis=(1, 2, 3))
  expected = (err[0] / (3 * 10) + err[1] / (3 * 16)) / 2
  got = losses.fn_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(mask), min_area=10.0)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  assert float(losses.mse(jnp.asarray(pred), jnp.asarray(target))) == pytest.approx(
      float(((pred - target) ** 2).mean()), rel=1e-5)
