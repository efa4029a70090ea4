"""Image-quality metrics, per example, on float images in [0, 1].

Every function takes [B, H, W, C] arrays and returns [B] float32, so the trainer can average
over valid examples of a padded evaluation batch. Other systems add their own metrics here
(fMSE, segmentation confusion matrices).
"""
from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp


def l1_per_example(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over H, W, C: [B]."""
  return jnp.mean(jnp.abs(pred - target), axis=(1, 2, 3))


def psnr(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB with a fixed peak (1 for [0, 1] images): [B]."""
  mse = jnp.mean(jnp.square(pred - target), axis=(1, 2, 3))
  return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10))


def ssim(pred: jax.Array, target: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Structural similarity (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01,
  K2 0.03), averaged over pixels and channels: [B]. Equals scikit-image's
  `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=max_value, channel_axis=-1)` away from the borders (dm-pix's valid-window SSIM)."""
  return dm_pix.ssim(pred, target, max_val=max_value)
