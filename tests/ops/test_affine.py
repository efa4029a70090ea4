"""Affine warps of the video-inpainting alignment (PyTorch affine_grid + grid_sample semantics)
and the moving blob masks, against OpenCV and NumPy."""
from __future__ import annotations

import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpjax.ops import geometry, masks


def _theta_to_pixel_inverse_map(theta: np.ndarray, h: int, w: int) -> np.ndarray:
  """By hand: output index (x, y) -> normalised (2x/(W-1) - 1, ...) -> theta -> input index."""
  to_norm = np.array([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])
  to_index = np.array([[(w - 1) / 2, 0, (w - 1) / 2], [0, (h - 1) / 2, (h - 1) / 2]])
  return to_index @ np.vstack([theta, [0, 0, 1]]) @ to_norm


@pytest.mark.parametrize("theta", [
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    [[0.9, -0.2, 0.15], [0.25, 1.1, -0.3]],
    [[1.3, 0.1, -0.4], [-0.1, 0.8, 0.5]],
])
def test_affine_grid_sample_matches_opencv_inverse_map(theta):
  """grid_sample(affine_grid(theta), align_corners=True, zeros) == cv2.warpAffine with
  WARP_INVERSE_MAP and BORDER_CONSTANT 0, within 1e-4, on a 23x31x3 random image."""
  rng = np.random.default_rng(0)
  image = rng.random((23, 31, 3)).astype(np.float32)
  theta = np.asarray(theta, np.float32)
  got = np.asarray(jax.jit(geometry.affine_grid_sample)(jnp.asarray(image), jnp.asarray(theta)))
  m = _theta_to_pixel_inverse_map(theta.astype(np.float64), 23, 31)
  want = cv2.warpAffine(image, m, (31, 23), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  np.testing.assert_allclose(np.asarray(geometry.normalized_affine_to_pixels(theta, 23, 31)), m,
                             atol=1e-5)
  np.testing.assert_allclose(got, want, atol=1e-4)


def test_affine_grid_sample_shift_by_hand():
  """theta translating x by 2/(W-1) normalised units reads the pixel one column to the right;
  the last column reads outside the image and becomes 0."""
  image = np.arange(4 * 5, dtype=np.float32).reshape(4, 5, 1)
  theta = np.array([[1.0, 0.0, 2.0 / 4], [0.0, 1.0, 0.0]], np.float32)
  got = np.asarray(jax.jit(geometry.affine_grid_sample)(jnp.asarray(image), jnp.asarray(theta)))
  np.testing.assert_allclose(got[:, :4, 0], image[:, 1:, 0], atol=1e-5)
  np.testing.assert_allclose(got[:, 4, 0], 0.0, atol=1e-5)


def test_affine_about_center_matches_opencv_rotation_matrix():
  """Rotation about the image centre with zoom = cv2.getRotationMatrix2D(centre, -deg, zoom)
  (OpenCV's positive angle is counter-clockwise on screen, ours clockwise)."""
  h, w, angle, zoom = 30, 40, 0.3, 1.2
  got = np.asarray(geometry.affine_about_center(h, w, rotation=angle, scale=zoom))
  want = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), -math.degrees(angle), zoom)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_affine_about_center_shear_translation_by_hand():
  """Shear then translation: x' = x + s (y - cy) + dx, y' = y + dy (about the centre)."""
  h, w = 11, 21
  got = np.asarray(geometry.affine_about_center(h, w, shear=0.5, translation=(3.0, -2.0)))
  cy = (h - 1) / 2
  np.testing.assert_allclose(got, [[1, 0.5, 3.0 - 0.5 * cy], [0, 1, -2.0]], atol=1e-5)


def test_invert_and_compose_affine_match_opencv_and_numpy():
  rng = np.random.default_rng(1)
  a = np.hstack([np.eye(2) + 0.3 * rng.normal(size=(2, 2)), rng.normal(size=(2, 1))])
  b = np.hstack([np.eye(2) + 0.3 * rng.normal(size=(2, 2)), rng.normal(size=(2, 1))])
  np.testing.assert_allclose(np.asarray(geometry.invert_affine(jnp.asarray(a, jnp.float32))),
                             cv2.invertAffineTransform(a), atol=1e-4)
  want = (np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]]))[:2]
  np.testing.assert_allclose(np.asarray(geometry.compose_affine(jnp.asarray(a), jnp.asarray(b))),
                             want, atol=1e-5)


def test_random_affine_path_composes_steps(rng):
  """A_0 = I; every step D_t = A_t A_{t-1}^-1 is within the ranges (|log zoom| via det)."""
  path = np.asarray(jax.jit(lambda k: geometry.random_affine_path(
      k, 6, 32, 48, rotation=0.1, shear=0.05, scale=0.1, translation=0.05))(rng))
  np.testing.assert_allclose(path[0], np.eye(2, 3), atol=1e-6)
  for t in range(1, 6):
    step = np.vstack([path[t], [0, 0, 1]]) @ np.linalg.inv(np.vstack([path[t - 1], [0, 0, 1]]))
    det = np.linalg.det(step[:2, :2])      # zoom^2 (rotation and shear have determinant 1)
    assert abs(0.5 * math.log(det)) <= 0.1 + 1e-5
    assert not np.allclose(step[:2], np.eye(2, 3), atol=1e-4)


def test_blob_without_harmonics_is_the_disc():
  """Zero amplitudes placed with scale r at (cx, cy): exactly the pixels with
  (x - cx)^2 + (y - cy)^2 <= r^2."""
  shape = {"amplitude": jnp.zeros(3), "phase": jnp.zeros(3)}
  placement = jnp.array([[6.5, 0.0, 12.3], [0.0, 6.5, 9.7]], jnp.float32)
  got = np.asarray(jax.jit(lambda s, p: masks.blob_mask(20, 30, s, p))(shape, placement))[..., 0]
  ys, xs = np.mgrid[0:20, 0:30]
  want = (xs - 12.3) ** 2 + (ys - 9.7) ** 2 <= 6.5 ** 2
  np.testing.assert_array_equal(got.astype(bool), want)


def test_moving_blob_masks_move_and_keep_their_size(rng):
  """Binary, non-empty, moving from frame to frame; each frame's area is within the area
  bounds the radius range and roughness allow (pi (r (1 -/+ 0.5))^2, zoom drift aside)."""
  ranges = masks.MovingMaskRanges(radius=(0.15, 0.2))
  m = np.asarray(jax.jit(lambda k: masks.moving_blob_masks(k, 5, 48, 64, ranges))(rng))
  assert m.shape == (5, 48, 64, 1)
  assert set(np.unique(m)) <= {0.0, 1.0}
  area = m.sum(axis=(1, 2, 3))
  r_lo, r_hi = 0.15 * 48, 0.2 * 48
  zoom = math.exp(4 * ranges.scale)
  assert np.all(area >= math.pi * (r_lo * 0.5 / zoom) ** 2)
  assert np.all(area <= math.pi * (r_hi * 1.5 * zoom) ** 2)
  assert all(np.any(m[t] != m[t + 1]) for t in range(4))
