"""Tests of cpjax.ops.masks: random rotated rectangles (the copy-paste masks M)."""
import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from cpjax.ops import masks

S = 128  # image side: rectangles of >= 40 px keep boundary pixels a small share of the area

_sample = jax.jit(jax.vmap(masks.sample_rectangle_params, in_axes=(0, None, None, None)),
                  static_argnums=(1, 2, 3))
_render = jax.jit(jax.vmap(masks.rotated_rectangle, in_axes=(None, None, 0, 0, 0)),
                  static_argnums=(0, 1))


def _draw(keys: jax.Array, ranges: masks.MaskRanges):
  """Parameters (NumPy) and masks [N, S, S] (NumPy) of rectangles drawn with the given keys."""
  p = _sample(keys, S, S, ranges)
  m = _render(S, S, p["center"], p["size"], p["angle"])
  return jax.tree.map(np.asarray, p), np.asarray(m)[..., 0]


def _cv2_rectangle(center, size, angle) -> np.ndarray:
  """cv2.fillPoly of the rectangle's 4 corners (sub-pixel, shift 8), in OpenCV index coords."""
  (cy, cx), (h, w) = center, size
  corners = []
  for a, b in [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]:
    x = cx + a * math.cos(angle) - b * math.sin(angle) - 0.5  # continuous -> index coords
    y = cy + a * math.sin(angle) + b * math.cos(angle) - 0.5
    corners.append([x, y])
  image = np.zeros((S, S), np.uint8)
  cv2.fillPoly(image, [np.round(np.array(corners) * 256).astype(np.int32)], 1, shift=8)
  return image.astype(bool)


def test_random_rectangle_is_binary_mask(rng):
  """random_rotated_rectangle gives a float32 [H, W, 1] mask in {0, 1}, non-empty."""
  m = jax.jit(masks.random_rotated_rectangle, static_argnums=(1, 2))(rng, 48, 64)
  assert m.shape == (48, 64, 1) and m.dtype == jnp.float32
  assert set(np.unique(np.asarray(m))) <= {0.0, 1.0} and float(m.sum()) > 0


def test_rectangle_area_matches_sampled_size(rng):
  """For rectangles fully inside the image, the pixel count is w * h of the sample within 4 %."""
  ranges = masks.MaskRanges(center=(0.5, 0.5))  # centred: even the largest stays inside
  p, m = _draw(jax.random.split(rng, 64), ranges)
  area = p["size"].prod(axis=1)
  np.testing.assert_allclose(m.sum(axis=(1, 2)), area, rtol=0.04)


def test_rotated_rectangle_matches_cv2_fillpoly(rng):
  """Our masks match cv2.fillPoly of the rotated corners (IoU > 0.95 each), and not the corners
  rotated the other way (mean IoU < 0.9), so the rotation's direction is right.

  Large rectangles: fillPoly also fills the pixels its outline touches, which costs small
  rectangles several % of IoU.
  """
  ranges = masks.MaskRanges(size=(0.45, 0.7), center=(0.4, 0.6))
  p, m = _draw(jax.random.split(rng, 32), ranges)
  iou = lambda a, b: (a & b).sum() / (a | b).sum()
  mirrored = []
  for i in range(len(m)):
    args = p["center"][i], p["size"][i], float(p["angle"][i])
    ours = m[i] > 0.5
    assert iou(ours, _cv2_rectangle(*args)) > 0.95, i
    mirrored.append(iou(ours, _cv2_rectangle(args[0], args[1], -args[2])))
  assert np.mean(mirrored) < 0.9


def test_rotation_hand_worked():
  """Angle 0 covers exactly the expected rows/columns; a quarter turn swaps width and height."""
  centre = jnp.array([32.0, 40.0])
  rectangle = jax.jit(masks.rotated_rectangle, static_argnums=(0, 1))
  box = rectangle(64, 80, centre, jnp.array([10.0, 20.0]), 0.0)
  expected = np.zeros((64, 80), np.float32)
  expected[27:37, 30:50] = 1  # centres 27.5 .. 36.5 and 30.5 .. 49.5 lie within +-5, +-10
  np.testing.assert_array_equal(box[..., 0], expected)
  turned = rectangle(64, 80, centre, jnp.array([20.0, 10.0]), math.pi / 2)
  np.testing.assert_array_equal(turned, box)


def test_sampled_rectangle_params_uniform_in_ranges(rng):
  """Over 4000 keys, centre, sizes and angle lie in their ranges with the uniform mean (5 sigma)."""
  n = 4000
  ranges = masks.MaskRanges(size=(0.2, 0.4), angle=(-1.0, 0.5), center=(0.3, 0.6))
  p = jax.tree.map(np.asarray, _sample(jax.random.split(rng, n), S, S, ranges))
  for name, x in [("size", p["size"] / S), ("center", p["center"] / S),
                  ("angle", p["angle"][:, None])]:
    lo, hi = getattr(ranges, name)
    assert x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6, name
    np.testing.assert_allclose(x.mean(0), (lo + hi) / 2, atol=5 * (hi - lo) / np.sqrt(12 * n))
  assert abs(np.corrcoef(p["size"].T)[0, 1]) < 0.1  # sides drawn independently


def test_random_rectangle_jit_vmap_differs_per_key(rng):
  """jit(vmap) over a batch of keys works and every key gives a different mask."""
  fn = jax.jit(jax.vmap(lambda k: masks.random_rotated_rectangle(k, 32, 32)))
  m = np.asarray(fn(jax.random.split(rng, 4)))
  assert m.shape == (4, 32, 32, 1)
  for i in range(4):
    for j in range(i):
      assert not np.array_equal(m[i], m[j])
