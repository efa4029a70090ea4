"""cpjax.metrics against independent references (scikit-image, NumPy)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cpjax import metrics


@pytest.fixture
def pair():
  r = np.random.default_rng(0)
  target = r.uniform(size=(2, 40, 48, 3)).astype(np.float32)
  pred = np.clip(target + r.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
  return pred, target


def test_l1_matches_numpy(pair):
  pred, target = pair
  np.testing.assert_allclose(metrics.l1_per_example(pred, target),
                             np.abs(pred - target).mean(axis=(1, 2, 3)), rtol=1e-6)


def test_psnr_matches_skimage(pair):
  pred, target = pair
  want = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.psnr(pred, target), want, rtol=1e-5)


def test_ssim_matches_skimage_gaussian_window(pair):
  """The Wang et al. definition (Gaussian 11x11, sigma 1.5, population covariance)."""
  pred, target = pair
  want = [structural_similarity(t, p, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
          for p, t in zip(pred, target)]
  np.testing.assert_allclose(metrics.ssim(pred, target), want, atol=1e-4)


def test_identical_images_score_perfectly(pair):
  _, target = pair
  assert np.all(np.asarray(metrics.ssim(target, target)) > 0.9999)
  assert np.all(np.asarray(metrics.l1_per_example(target, target)) == 0)


@pytest.mark.parametrize("fn", [metrics.l1_per_example, metrics.psnr, metrics.ssim])
@pytest.mark.parametrize("target_shape", [(1, 16, 16, 3), (2, 16, 16, 1), (16, 16, 3)])
def test_pairs_that_would_broadcast_are_refused(fn, target_shape):
  """One target for a batch, grey against colour, a missing batch axis: numpy would broadcast
  and score the wrong pairs; the metrics refuse, naming the shapes."""
  pred = jnp.zeros((2, 16, 16, 3))
  with pytest.raises(AssertionError, match=r"shape|rank"):
    fn(pred, jnp.zeros(target_shape))


def test_harmonization_scores_refuse_a_mask_without_its_channel_axis():
  image = jnp.zeros((2, 8, 8, 3))
  with pytest.raises(AssertionError, match="shape"):
    metrics.harmonization_scores(image, image, jnp.zeros((2, 8, 8)))
