"""Tests of cpjax.ops.transform: T = T_shading . T_geometric, configs and copy-paste examples."""
import dataclasses

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cpjax.ops import color
from cpjax.ops import geometry
from cpjax.ops import masks
from cpjax.ops import transform

S = 32
NEUTRAL = color.ColorRanges(saturation=(1, 1), hue=(0, 0), contrast=(1, 1), brightness=(0, 0))

_T = jax.jit(transform.transform_T, static_argnums=2)
_example = jax.jit(transform.make_copy_paste_example, static_argnums=2)


def _image(seed: int = 0) -> jax.Array:
  """A smooth random image [S, S, 3] in [0, 1] (noise upsampled from 6 x 6)."""
  cells = np.random.default_rng(seed).uniform(0, 1, (6, 6, 3)).astype(np.float32)
  return jax.image.resize(jnp.asarray(cells), (S, S, 3), "linear")


def test_T_is_identity_at_zero_strength(rng):
  """sigma = 0 and neutral colour ranges: T(I) == I (float error only)."""
  cfg = transform.TransformConfig(sigma=0.0, color=NEUTRAL)
  np.testing.assert_allclose(_T(rng, _image(), cfg), _image(), atol=1e-5)


def test_T_applies_geometric_then_shading(rng):
  """T(I) == T_shading(T_geometric(I)) with T's documented subkeys, the warp done by
  cv2.warpPerspective (BORDER_REFLECT_101); the other order is far from T(I)."""
  cfg = transform.TransformConfig()
  image = _image(1)
  key_geo, key_shade = jax.random.split(rng)
  h, params = jax.jit(lambda: (
      geometry.random_homography(key_geo, S, S, cfg.sigma),
      color.sample_shading_params(key_shade, S, S, cfg.color, cfg.mix_grid)))()
  warp = lambda x: cv2.warpPerspective(np.asarray(x), np.asarray(h, np.float64), (S, S),
                                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
  shade = jax.jit(color.apply_shading)
  out = np.asarray(_T(rng, image, cfg))
  np.testing.assert_allclose(out, shade(jnp.asarray(warp(image)), params), atol=1e-4)
  assert np.abs(out - warp(shade(image, params))).max() > 0.05


def test_global_shading_is_spatially_uniform_local_is_not(rng):
  """On a flat image, 'global' (one T_color) stays flat; 'local' (eq. 3 mix) varies over space.

  (The homography with 'reflect' fill keeps a flat image flat.)
  """
  flat = jnp.broadcast_to(jnp.array([0.6, 0.3, 0.2]), (S, S, 3))
  for shading, varies in [("global", False), ("local", True)]:
    cfg = transform.TransformConfig(shading=shading)
    out = np.asarray(_T(rng, flat, cfg))
    spread = (out.max(axis=(0, 1)) - out.min(axis=(0, 1))).max()
    assert (spread > 0.05) == varies, (shading, spread)


def test_example_composite_and_ranges(rng):
  """The example's composite is I (1 - M) + T(I) M, M binary, every image in [0, 1]."""
  cfg = transform.TransformConfig()
  image = _image(2)
  ex = jax.tree.map(np.asarray, _example(rng, image, cfg))
  assert ex["image"].shape == ex["source"].shape == ex["composite"].shape == (S, S, 3)
  assert ex["mask"].shape == (S, S, 1) and set(np.unique(ex["mask"])) <= {0.0, 1.0}
  assert 0 < ex["mask"].mean() < 1
  np.testing.assert_array_equal(ex["image"], np.asarray(image))
  m = ex["mask"]
  np.testing.assert_allclose(ex["composite"], ex["image"] * (1 - m) + ex["source"] * m, atol=1e-6)
  for name in ("source", "composite"):
    assert ex[name].min() >= 0 and ex[name].max() <= 1
  assert np.abs(ex["source"] - ex["image"]).mean() > 1e-2  # T did something


def test_example_mask_and_T_use_independent_keys(rng):
  """The mask is random_rotated_rectangle and the source transform_T of the two subkeys."""
  cfg = transform.TransformConfig()
  key_mask, key_t = jax.random.split(rng)
  ex = _example(rng, _image(3), cfg)
  mask = jax.jit(masks.random_rotated_rectangle, static_argnums=(1, 2, 3))(key_mask, S, S,
                                                                          cfg.mask)
  np.testing.assert_array_equal(ex["mask"], mask)
  np.testing.assert_allclose(ex["source"], _T(key_t, _image(3), cfg), atol=1e-6)


def test_jit_vmap_batch_of_keys(rng):
  """jit(vmap(make_copy_paste_example)) runs on a batch: examples with different keys differ,
  a repeated key repeats its example, and each equals the unbatched call."""
  cfg = transform.TransformConfig()
  k0, k1, k2 = jax.random.split(rng, 3)
  keys = jnp.stack([k0, k1, k2, k0])
  images = jnp.stack([_image(0)] * 4)
  fn = jax.jit(jax.vmap(transform.make_copy_paste_example, in_axes=(0, 0, None)),
               static_argnums=2)
  out = jax.tree.map(np.asarray, fn(keys, images, cfg))
  assert out["composite"].shape == (4, S, S, 3) and out["mask"].shape == (4, S, S, 1)
  for i in range(3):
    for j in range(i):
      assert not np.array_equal(out["mask"][i], out["mask"][j])
      assert np.abs(out["source"][i] - out["source"][j]).mean() > 1e-2
  np.testing.assert_array_equal(out["mask"][0], out["mask"][3])
  np.testing.assert_allclose(out["source"][0], out["source"][3], atol=1e-6)
  single = _example(k1, _image(0), cfg)
  np.testing.assert_allclose(out["composite"][1], single["composite"], atol=1e-5)


def test_config_from_dict_plain_and_configdict():
  """from_dict reads plain values (lists or tuples, dict or ConfigDict) into the dataclasses."""
  d = dict(sigma=8.0, color=dict(saturation=[0.7, 1.3], hue=(-0.1, 0.1), contrast=[0.8, 1.2],
                                 brightness=[-0.2, 0.2]),
           mix_grid=6, shading="global", geometric=False, fill="edge",
           mask=dict(size=[0.2, 0.4], angle=[-0.5, 0.5], center=[0.3, 0.7]))
  expected = transform.TransformConfig(
      sigma=8.0, color=color.ColorRanges((0.7, 1.3), (-0.1, 0.1), (0.8, 1.2), (-0.2, 0.2)),
      mix_grid=6, shading="global", geometric=False, fill="edge",
      mask=masks.MaskRanges(size=(0.2, 0.4), angle=(-0.5, 0.5), center=(0.3, 0.7)))
  assert transform.TransformConfig.from_dict(d) == expected
  assert transform.TransformConfig.from_dict(ml_collections.ConfigDict(d)) == expected
  assert hash(expected) == hash(transform.TransformConfig.from_dict(d))  # usable as static arg
  assert transform.TransformConfig.from_dict({}) == transform.TransformConfig()
  defaults = transform.TransformConfig()
  assert (defaults.sigma, defaults.mix_grid, defaults.shading) == (15.0, 10, "local")
  assert dataclasses.astuple(defaults.color) == ((0.5, 1.5), (-0.5, 0.5), (0.5, 1.5), (-0.5, 0.5))


def test_config_rejects_bad_values():
  """Unknown keys, shadings and fills raise a ValueError naming the problem."""
  with pytest.raises(ValueError, match="sigmaa"):
    transform.TransformConfig.from_dict({"sigmaa": 3.0})
  with pytest.raises(ValueError, match=r"unknown transform.mask keys \['sizes'\]; use some of "
                                       r"\['angle', 'center', 'size'\]"):
    transform.TransformConfig.from_dict({"mask": {"sizes": (0.1, 0.2)}})
  with pytest.raises(ValueError, match=r"unknown transform keys \['saturation'\]; .*'color'"):
    transform.TransformConfig.from_dict({"saturation": (0.5, 1.5)})   # a colour range, nested
  with pytest.raises(ValueError, match="shading"):
    transform.TransformConfig(shading="loca")
  with pytest.raises(ValueError, match="fill"):
    transform.TransformConfig(fill="mirror")
