"""Tests of cpjax.ops.color: HSV conversions, T_color (eq. 1, 2) and T_shading (eq. 3)."""
import colorsys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color

from cpjax.ops import color


# Jitted once per module: op-by-op execution compiles every primitive and is slower on CPU.
_to_hsv = jax.jit(color.rgb_to_hsv)
_to_rgb = jax.jit(color.hsv_to_rgb)
_hue = jax.jit(color.adjust_hue)
_saturation = jax.jit(color.adjust_saturation)
_apply_color = jax.jit(color.apply_color)


def _np_rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """colorsys on every pixel of [..., 3]."""
  flat = rgb.reshape(-1, 3).astype(np.float64)
  return np.array([colorsys.rgb_to_hsv(*p) for p in flat]).reshape(rgb.shape)


def _np_hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """colorsys on every pixel of [..., 3]."""
  flat = hsv.reshape(-1, 3).astype(np.float64)
  return np.array([colorsys.hsv_to_rgb(*p) for p in flat]).reshape(hsv.shape)


def _hue_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Distance on the hue circle (hue 0 == hue 1)."""
  d = np.abs(a - b) % 1.0
  return np.minimum(d, 1.0 - d)


def _np_color(image: np.ndarray, p: dict) -> np.ndarray:
  """T_color in NumPy + colorsys, step by step in the paper's order (eq. 1): Tb, Tc, Th, Ts."""
  x = image.astype(np.float64) + float(p["brightness"])                       # Tb
  m = x.mean(axis=(0, 1), keepdims=True)
  x = (x - m) * np.asarray(p["contrast"], np.float64) + m                     # Tc (eq. 2)
  hsv = _np_rgb_to_hsv(np.clip(x, 0, 1))
  hsv[..., 0] = (hsv[..., 0] + float(p["hue"])) % 1.0                         # Th
  x = _np_hsv_to_rgb(hsv)
  hsv = _np_rgb_to_hsv(x)
  hsv[..., 1] = np.clip(hsv[..., 1] * float(p["saturation"]), 0, 1)           # Ts
  return _np_hsv_to_rgb(hsv)


def _random_image(seed: int, shape=(16, 16, 3)) -> np.ndarray:
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def test_rgb_to_hsv_matches_colorsys_and_skimage():
  """rgb_to_hsv equals colorsys and skimage.color.rgb2hsv on random pixels (atol 1e-5)."""
  rgb = _random_image(0, (20, 25, 3))
  ours = np.asarray(_to_hsv(jnp.asarray(rgb)))
  for ref in (_np_rgb_to_hsv(rgb), skimage.color.rgb2hsv(rgb)):
    assert _hue_distance(ours[..., 0], ref[..., 0]).max() < 1e-5
    np.testing.assert_allclose(ours[..., 1:], ref[..., 1:], atol=1e-5)
  assert ours.min() >= 0 and ours.max() <= 1


def test_hsv_to_rgb_matches_colorsys_and_round_trips():
  """hsv_to_rgb equals colorsys on random HSV, and hsv_to_rgb(rgb_to_hsv(x)) == x (1e-5)."""
  hsv = _random_image(1, (20, 25, 3))
  np.testing.assert_allclose(_to_rgb(jnp.asarray(hsv)), _np_hsv_to_rgb(hsv), atol=1e-5)
  rgb = _random_image(2, (20, 25, 3))
  np.testing.assert_allclose(_to_rgb(_to_hsv(jnp.asarray(rgb))), rgb, atol=1e-5)


def test_hsv_out_of_range_inputs_are_clipped():
  """RGB outside [0, 1] is clipped before HSV; hue wraps mod 1; S, V clip to [0, 1]."""
  rgb = np.array([[1.4, 0.5, -0.2], [-0.3, -0.1, -0.5], [2.0, 1.5, 1.2]], np.float32)
  np.testing.assert_allclose(_to_hsv(jnp.asarray(rgb)),
                             _to_hsv(jnp.clip(jnp.asarray(rgb), 0, 1)), atol=0)
  hsv = np.array([[1.25, 1.3, 0.8], [-0.75, 0.6, 1.7]], np.float32)
  ref = _np_hsv_to_rgb(np.array([[0.25, 1.0, 0.8], [0.25, 0.6, 1.0]]))
  np.testing.assert_allclose(_to_rgb(jnp.asarray(hsv)), ref, atol=1e-6)


def test_hue_shift_wraps_around():
  """adjust_hue shifts H modulo 1: red + 0.9 turns is (1, 0, 0.6); delta and delta +- 1 agree."""
  red = jnp.array([[[1.0, 0.0, 0.0]]])
  np.testing.assert_allclose(_hue(red, 0.9), [[[1.0, 0.0, 0.6]]], atol=1e-5)
  np.testing.assert_allclose(_hue(red, -0.1), [[[1.0, 0.0, 0.6]]], atol=1e-5)
  image = jnp.asarray(_random_image(3))
  base = _hue(image, 0.3)
  np.testing.assert_allclose(_hue(image, 1.3), base, atol=1e-5)
  np.testing.assert_allclose(_hue(image, -0.7), base, atol=1e-5)


@pytest.mark.parametrize("factor", [0.3, 1.7])
def test_adjust_saturation_matches_colorsys(factor):
  """adjust_saturation scales S and clips it to [0, 1], as colorsys + NumPy do."""
  image = _random_image(4)
  hsv = _np_rgb_to_hsv(image)
  hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 1)
  np.testing.assert_allclose(_saturation(jnp.asarray(image), factor),
                             _np_hsv_to_rgb(hsv), atol=1e-5)


def test_adjust_contrast_per_channel_eq2():
  """adjust_contrast is (I_c - m_c) * l_c + m_c per channel, m_c the channel's mean (eq. 2)."""
  image = _random_image(5)
  factors = np.array([0.5, 1.0, 1.5], np.float32)
  m = image.mean(axis=(0, 1))
  ref = (image - m) * factors + m
  out = np.asarray(color.adjust_contrast(jnp.asarray(image), jnp.asarray(factors)))
  np.testing.assert_allclose(out, ref, atol=1e-6)
  big = image * 2  # values up to 2: no clipping is applied
  np.testing.assert_allclose(color.adjust_contrast(jnp.asarray(big), factors),
                             (big - 2 * m) * factors + 2 * m, atol=1e-5)


def test_adjust_brightness_adds_without_clipping():
  """adjust_brightness adds delta to every channel and leaves out-of-range values alone."""
  image = _random_image(6)
  for delta in (0.4, -0.4):
    out = color.adjust_brightness(jnp.asarray(image), delta)
    np.testing.assert_allclose(out, image + delta, atol=1e-6)


def test_apply_color_follows_paper_order():
  """apply_color == NumPy Ts(Th(Tc(Tb(I)))) (eq. 1), and differs from the reversed order."""
  image = _random_image(7)
  p = {"brightness": 0.3, "contrast": np.array([1.4, 0.6, 1.2], np.float32), "hue": 0.2,
       "saturation": 0.6}
  out = np.asarray(_apply_color(jnp.asarray(image), jax.tree.map(jnp.asarray, p)))
  np.testing.assert_allclose(out, _np_color(image, p), atol=1e-5)
  # Reversed order (Tb . Tc . Th . Ts): brightness after the HSV steps, so no clip in between.
  hsv = _np_rgb_to_hsv(image)
  hsv[..., 1] = np.clip(hsv[..., 1] * p["saturation"], 0, 1)
  hsv[..., 0] = (hsv[..., 0] + p["hue"]) % 1
  x = _np_hsv_to_rgb(hsv)
  m = x.mean(axis=(0, 1))
  reversed_order = (x - m) * p["contrast"] + m + p["brightness"]
  assert np.abs(out - reversed_order).mean() > 0.05


def test_neutral_color_params_are_identity():
  """T_color with zero shifts and unit factors returns the image (float error only)."""
  image = jnp.asarray(_random_image(8))
  neutral = color.ColorRanges(saturation=(1, 1), hue=(0, 0), contrast=(1, 1), brightness=(0, 0))
  out = jax.jit(color.random_color, static_argnums=2)(jax.random.key(1), image, neutral)
  np.testing.assert_allclose(out, image, atol=1e-5)


def test_sampled_color_params_are_uniform_in_ranges(rng):
  """Over 4000 keys each parameter lies in its range with the uniform mean and std (5 sigma)."""
  n = 4000
  ranges = color.ColorRanges(saturation=(0.5, 1.5), hue=(-0.5, 0.5), contrast=(0.2, 1.8),
                             brightness=(-0.3, 0.1))
  p = jax.jit(jax.vmap(lambda k: color.sample_color_params(k, ranges)))(jax.random.split(rng, n))
  for name in ("saturation", "hue", "contrast", "brightness"):
    lo, hi = getattr(ranges, name)
    x = np.asarray(p[name]).reshape(n, -1)
    assert x.min() >= lo and x.max() <= hi, name
    np.testing.assert_allclose(x.mean(0), (lo + hi) / 2, atol=5 * (hi - lo) / np.sqrt(12 * n))
    np.testing.assert_allclose(x.std(0), (hi - lo) / np.sqrt(12), rtol=0.05)
  c = np.asarray(p["contrast"])
  assert np.abs(np.corrcoef(c.T) - np.eye(3)).max() < 0.1  # channels drawn independently


def test_mix_mask_is_bilinear_upsampling_of_binary_grid(rng):
  """M_mix of T_shading's draws is cv2.resize(grid, INTER_LINEAR) of a 10 x 10 grid of cells in
  {0, 1} with p = 0.5. At 100 x 100 pixel 10 c + 4 weighs its own cell 0.9025, so the grid is
  read back by rounding there."""
  mixes = jax.jit(jax.vmap(lambda k: color.sample_shading_params(k, 100, 100)["mix"]))(
      jax.random.split(rng, 200))
  mixes = np.asarray(mixes)[..., 0]
  grids = np.round(mixes[:, 4::10, 4::10])
  assert abs(float(grids.mean()) - 0.5) < 0.02
  assert len({g.tobytes() for g in grids}) == 200
  for mix, grid in zip(mixes[:5], grids[:5]):
    ref = cv2.resize(grid.astype(np.float32), (100, 100), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(mix, ref, atol=1e-5)
  assert 0 <= float(mixes.min()) and float(mixes.max()) <= 1


def test_shading_mixes_two_independent_color_draws(rng):
  """T_shading == clip(I1 M + I2 (1 - M)) (eq. 3): in [0, 1], pixelwise between I1 and I2."""
  image = jnp.asarray(_random_image(9, (32, 32, 3)))
  params = jax.jit(lambda k: color.sample_shading_params(k, 32, 32))(rng)
  assert not np.allclose(params["color1"]["contrast"], params["color2"]["contrast"])
  out = np.asarray(jax.jit(color.apply_shading)(image, params))
  i1 = np.asarray(_apply_color(image, params["color1"]))
  i2 = np.asarray(_apply_color(image, params["color2"]))
  mix = np.asarray(params["mix"])
  np.testing.assert_allclose(out, np.clip(i1 * mix + i2 * (1 - mix), 0, 1), atol=1e-6)
  assert out.min() >= 0 and out.max() <= 1
  assert np.all(out >= np.minimum(i1, i2) - 1e-6) and np.all(out <= np.maximum(i1, i2) + 1e-6)


def test_random_shading_jit_vmap_differs_per_key(rng):
  """jit(vmap(random_shading)) runs on a batch of keys; every example gets its own draw."""
  images = jnp.broadcast_to(jnp.asarray(_random_image(10, (24, 24, 3))), (4, 24, 24, 3))
  out = np.asarray(jax.jit(jax.vmap(color.random_shading))(jax.random.split(rng, 4), images))
  assert out.shape == (4, 24, 24, 3) and out.min() >= 0 and out.max() <= 1
  for i in range(4):
    for j in range(i):
      assert np.abs(out[i] - out[j]).mean() > 1e-2
