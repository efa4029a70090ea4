"""Tests of cpjax.ops.geometry: homographies, warps, the bilinear sampler, crop_and_resize and
phase correlation."""
import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from cpjax.ops import geometry

H, W = 40, 56

# Our fill names and the OpenCV border modes they must reproduce.
FILL_TO_CV2 = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101,
               "symmetric": cv2.BORDER_REFLECT, "edge": cv2.BORDER_REPLICATE}


# Jitted once per module: op-by-op execution compiles every primitive and is slower on CPU.
_homography = jax.jit(geometry.homography_from_points)
_warp = jax.jit(geometry.warp_perspective, static_argnums=2)
_affine = jax.jit(geometry.affine_warp, static_argnums=2)
_crop = jax.jit(geometry.crop_and_resize, static_argnums=2)


def _image(seed: int, shape=(H, W, 3)) -> np.ndarray:
  """Uniform noise: the hardest case for interpolation (any offset error shows)."""
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def _corners() -> np.ndarray:
  return np.array([[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]], np.float32)


def _random_quad(seed: int, sigma: float = 12.0) -> np.ndarray:
  offsets = np.random.default_rng(seed).uniform(-sigma, sigma, (4, 2))
  return (_corners() + offsets).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_homography_matches_opencv(seed):
  """Our 4-point homography equals cv2.getPerspectiveTransform within rtol 1e-4."""
  src = _random_quad(100 + seed, 5.0)
  dst = _random_quad(seed, 15.0)
  ours = np.asarray(_homography(jnp.asarray(src), jnp.asarray(dst)))
  np.testing.assert_allclose(ours, cv2.getPerspectiveTransform(src, dst), rtol=1e-4, atol=1e-7)
  assert ours[2, 2] == pytest.approx(1.0)


def test_homography_least_squares_recovers_h_from_many_points():
  """With 9 exact correspondences of a known H (cv2), least squares recovers H (rtol 1e-4)."""
  h_true = cv2.getPerspectiveTransform(_corners(), _random_quad(3))
  xs, ys = np.meshgrid([0, 20, 55], [0, 17, 39])
  src = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)
  dst = cv2.perspectiveTransform(src[None].astype(np.float64), h_true)[0].astype(np.float32)
  ours = np.asarray(_homography(jnp.asarray(src), jnp.asarray(dst)))
  np.testing.assert_allclose(ours, h_true, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("fill", list(FILL_TO_CV2))
def test_warp_perspective_matches_opencv(fill):
  """warp_perspective equals cv2.warpPerspective (INTER_LINEAR, matching border) on every pixel."""
  image = _image(4)
  h = cv2.getPerspectiveTransform(_corners(), _random_quad(5))
  ours = np.asarray(_warp(jnp.asarray(image), jnp.asarray(h), fill))
  ref = cv2.warpPerspective(image, h, (W, H), flags=cv2.INTER_LINEAR,
                            borderMode=FILL_TO_CV2[fill], borderValue=0)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("fill", ["reflect", "constant"])
def test_affine_warp_matches_opencv(fill):
  """affine_warp equals cv2.warpAffine (rotation 17 deg, scale 1.1, off-centre) on every pixel."""
  image = _image(6)
  matrix = cv2.getRotationMatrix2D((W / 3, H / 2), 17.0, 1.1)
  ours = np.asarray(_affine(jnp.asarray(image), jnp.asarray(matrix), fill))
  ref = cv2.warpAffine(image, matrix, (W, H), flags=cv2.INTER_LINEAR,
                       borderMode=FILL_TO_CV2[fill], borderValue=0)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_bilinear_sample_hand_worked():
  """Bilinear weights and the four fill modes on a 2 x 3 image, worked by hand."""
  image = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[..., None]
  sample = lambda y, x, fill: float(geometry.bilinear_sample(
      image, jnp.array([y]), jnp.array([x]), fill)[0, 0])
  assert sample(0.5, 0.5, "edge") == pytest.approx(3.0)      # mean of 1, 2, 4, 5
  assert sample(0.25, 2.0, "edge") == pytest.approx(3.75)    # 0.75 * 3 + 0.25 * 6
  assert sample(0.0, -1.0, "reflect") == pytest.approx(2.0)   # d c b | a b c: -1 -> 1
  assert sample(0.0, -1.0, "symmetric") == pytest.approx(1.0)  # c b a | a b c: -1 -> 0
  assert sample(0.0, -1.0, "edge") == pytest.approx(1.0)
  assert sample(0.0, -1.0, "constant") == pytest.approx(0.0)
  assert sample(0.0, -0.5, "constant") == pytest.approx(0.5)  # fades to 0 over one pixel
  with pytest.raises(ValueError, match="fill"):
    geometry.bilinear_sample(image, jnp.zeros(1), jnp.zeros(1), "wrap")


def test_zero_sigma_is_identity(rng):
  """sigma = 0: the random homography is the identity matrix and the warp returns the image."""
  fn = jax.jit(lambda k, x: (geometry.random_homography(k, H, W, 0.0),
                             geometry.random_geometric(k, x, 0.0)))
  image = _image(7)
  h, out = fn(rng, jnp.asarray(image))
  np.testing.assert_allclose(h, np.eye(3), atol=1e-5)
  np.testing.assert_allclose(out, image, atol=1e-5)


def test_random_homography_corner_offsets_uniform(rng):
  """Over 2000 keys, H moves each corner by offsets in [-sigma, sigma], mean 0, std sigma/sqrt 3."""
  n, sigma = 2000, 6.0
  hs = jax.jit(jax.vmap(lambda k: geometry.random_homography(k, H, W, sigma)))(
      jax.random.split(rng, n))
  corners = _corners().astype(np.float64)
  moved = np.stack([cv2.perspectiveTransform(corners[None], h)[0]
                    for h in np.asarray(hs, np.float64)])
  offsets = (moved - corners).reshape(n, 8)
  assert np.abs(offsets).max() <= sigma + 1e-3
  np.testing.assert_allclose(offsets.mean(0), 0.0, atol=5 * sigma / np.sqrt(3 * n))
  np.testing.assert_allclose(offsets.std(0), sigma / np.sqrt(3), rtol=0.06)


def test_random_geometric_jit_vmap_differs_per_key(rng):
  """jit(vmap(random_geometric)) runs on a batch; each key gives a different warp."""
  images = jnp.broadcast_to(jnp.asarray(_image(8)), (3, H, W, 3))
  fn = jax.jit(jax.vmap(lambda k, x: geometry.random_geometric(k, x, 8.0)))
  out = np.asarray(fn(jax.random.split(rng, 3), images))
  assert out.shape == (3, H, W, 3)
  assert np.abs(out[0] - out[1]).mean() > 1e-2 and np.abs(out[1] - out[2]).mean() > 1e-2


def test_crop_and_resize_integer_box_identity_size():
  """An integer box resized to its own size is exactly the NumPy slice."""
  image = _image(9)
  out = _crop(jnp.asarray(image), jnp.array([8.0, 4.0, 24.0, 36.0]), (16, 32))
  np.testing.assert_allclose(out, image[8:24, 4:36], atol=1e-6)


@pytest.mark.parametrize("size", [(32, 64), (8, 16), (24, 20)])
def test_crop_and_resize_matches_opencv(size):
  """crop_and_resize of box (8, 4, 24, 36) equals cv2.resize of the slice (interior) and
  cv2.warpAffine of the whole image (every pixel: neighbours outside the box are read)."""
  image = _image(10)
  y0, x0, y1, x1 = 8, 4, 24, 36
  h, w = size
  out = np.asarray(_crop(jnp.asarray(image),
                                            jnp.array([y0, x0, y1, x1], jnp.float32), size))
  sy, sx = h / (y1 - y0), w / (x1 - x0)
  # Continuous coords: out = (in - box0) * s; index coords: out + .5 = (in + .5 - box0) * s.
  matrix = np.array([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]])
  ref = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
  np.testing.assert_allclose(out, ref, atol=1e-4)
  if sy >= 1 and sx >= 1:  # upsampling: cv2.resize agrees away from the crop's border
    ref = cv2.resize(image[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_LINEAR)
    m = 2
    np.testing.assert_allclose(out[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-4)


def test_phase_correlation_finds_whole_pixel_shifts_like_opencv():
  """Crops of a real photo shifted by known amounts: our shift is exact and within a pixel of
  cv2.phaseCorrelate's sub-pixel estimate (same Hann window)."""
  photo = skimage.data.coffee().astype(np.float64) / 255.0
  window = cv2.createHanningWindow((48, 64), cv2.CV_64F)   # (width, height)
  for dx, dy in ((3, -5), (-7, 2), (12, 9), (0, 0), (-20, -11)):
    a, b = photo[100:164, 200:248], photo[100 - dy:164 - dy, 200 - dx:248 - dx]
    got = np.asarray(jax.jit(geometry.phase_correlation_shift)(a, b))
    np.testing.assert_array_equal(got, (dx, dy))
    want, _ = cv2.phaseCorrelate(a.mean(-1), b.mean(-1), window)
    assert np.max(np.abs(got - np.asarray(want))) < 1.0, (got, want)
