"""Tests of cpjax.ops.geometry.resize_bilinear_align_corners (PyTorch bilinear, align_corners=True).

References: a direct per-pixel NumPy evaluation of PyTorch's formula (float64, no separability),
scipy.ndimage.zoom with grid_mode=False (the same corner-aligned grid), and hand-worked values.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from cpjax.ops.geometry import resize_bilinear_align_corners


def _torch_align_corners_np(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """PyTorch's bilinear align_corners=True, pixel by pixel in float64 ([H, W, C] -> [h, w, C])."""
  in_h, in_w = x.shape[:2]
  sy = (in_h - 1) / (out_h - 1) if out_h > 1 else 0.0
  sx = (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0
  out = np.zeros((out_h, out_w, x.shape[2]))
  for i in range(out_h):
    for j in range(out_w):
      y, xx = i * sy, j * sx
      y0, x0 = int(np.floor(y)), int(np.floor(xx))
      y1, x1 = min(y0 + 1, in_h - 1), min(x0 + 1, in_w - 1)
      dy, dx = y - y0, xx - x0
      out[i, j] = ((1 - dy) * (1 - dx) * x[y0, x0] + (1 - dy) * dx * x[y0, x1]
                   + dy * (1 - dx) * x[y1, x0] + dy * dx * x[y1, x1])
  return out


@pytest.mark.parametrize("in_hw,out_hw", [((5, 7), (17, 9)), ((16, 16), (64, 64)),
                                          ((13, 11), (4, 6)), ((8, 3), (8, 12)), ((6, 6), (1, 3))])
def test_matches_pytorch_formula(in_hw, out_hw):
  """Up-, down- and mixed resizes (odd sizes, a 1-pixel output side) equal PyTorch's
  align_corners formula evaluated per pixel in float64, to 1e-5."""
  x = np.random.default_rng(0).normal(size=in_hw + (3,))
  ours = resize_bilinear_align_corners(jnp.asarray(x, jnp.float32), out_hw)
  np.testing.assert_allclose(np.asarray(ours), _torch_align_corners_np(x, *out_hw), atol=1e-5)


def test_matches_scipy_zoom_corner_aligned():
  """scipy.ndimage.zoom(order=1, grid_mode=False) samples the same corner-aligned grid: equal
  to 1e-5 for a 9x6 -> 25x16 resize of every channel of a batch (leading axes are kept)."""
  x = np.random.default_rng(1).uniform(size=(2, 9, 6, 4))
  ours = np.asarray(resize_bilinear_align_corners(jnp.asarray(x, jnp.float32), (25, 16)))
  assert ours.shape == (2, 25, 16, 4)
  ref = scipy.ndimage.zoom(x, (1, 25 / 9, 16 / 6, 1), order=1, grid_mode=False, mode="nearest")
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_identity_and_hand_values():
  """Same size is the identity (exactly); a 2x2 -> 3x3 resize gives the hand-worked means
  [[0, .5, 1], [1, 1.5, 2], [2, 2.5, 3]]; a row [0, 3] -> 4 samples gives [0, 1, 2, 3]."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(7, 5, 2)), jnp.float32)
  assert np.array_equal(np.asarray(resize_bilinear_align_corners(x, (7, 5))), np.asarray(x))
  square = jnp.array([[0.0, 1.0], [2.0, 3.0]])[..., None]
  np.testing.assert_allclose(np.asarray(resize_bilinear_align_corners(square, (3, 3)))[..., 0],
                             [[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]], atol=1e-6)
  row = jnp.array([[0.0, 3.0]])[..., None]
  np.testing.assert_allclose(np.asarray(resize_bilinear_align_corners(row, (1, 4)))[0, :, 0],
                             [0.0, 1.0, 2.0, 3.0], atol=1e-6)


def test_corners_kept_and_differs_from_half_pixel():
  """Corner pixels are copied when upsampling 4x4 -> 16x16, whereas jax.image.resize
  (half-pixel centres) gives a different interior: the two conventions are not confused."""
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(4, 4, 1)), jnp.float32)
  ours = np.asarray(resize_bilinear_align_corners(x, (16, 16)))
  for (i, j), (a, b) in zip([(0, 0), (0, 15), (15, 0), (15, 15)], [(0, 0), (0, 3), (3, 0), (3, 3)]):
    assert ours[i, j, 0] == pytest.approx(float(x[a, b, 0]), abs=1e-6)
  half_pixel = np.asarray(jax.image.resize(x, (16, 16, 1), "linear"))
  assert np.abs(ours - half_pixel).max() > 1e-2


def test_jit_grad_and_dtype():
  """Under jit the gradient of sum(resize(x)) w.r.t. x equals the summed bilinear weights of
  each input pixel (NumPy: the resize of a one-hot image, summed), and bf16 stays bf16."""
  x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 4, 1)), jnp.float32)
  grad = jax.jit(jax.grad(lambda v: resize_bilinear_align_corners(v, (7, 5)).sum()))(x)
  expected = np.zeros((3, 4))
  for a in range(3):
    for b in range(4):
      onehot = np.zeros((3, 4, 1))
      onehot[a, b] = 1.0
      expected[a, b] = _torch_align_corners_np(onehot, 7, 5).sum()
  np.testing.assert_allclose(np.asarray(grad)[..., 0], expected, atol=1e-5)
  assert resize_bilinear_align_corners(x.astype(jnp.bfloat16), (5, 6)).dtype == jnp.bfloat16


def test_rejects_empty_size():
  """A zero output side is a one-line ValueError naming the size."""
  with pytest.raises(ValueError, match=r"\(0, 3\)"):
    resize_bilinear_align_corners(jnp.zeros((4, 4, 1)), (0, 3))
