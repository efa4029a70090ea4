"""Perceptual, style (Gram), total-variation and masked L1 losses against NumPy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cpjax import losses


def _features(seed: int) -> dict[str, np.ndarray]:
  r = np.random.default_rng(seed)
  return {"pool1": r.normal(size=(2, 8, 6, 4)).astype(np.float32),
          "pool2": r.normal(size=(2, 4, 3, 5)).astype(np.float32),
          "pool3": r.normal(size=(2, 2, 2, 7)).astype(np.float32)}


def test_gram_matrix_matches_numpy():
  f = _features(0)["pool1"]
  want = np.stack([x.reshape(-1, 4).T @ x.reshape(-1, 4) / (4 * 8 * 6) for x in f])
  np.testing.assert_allclose(np.asarray(losses.gram_matrix(jnp.asarray(f))), want, rtol=1e-5)


def test_perceptual_and_style_losses_match_numpy():
  """Sum over the chosen layers only (pool3 is left out) of mean |a - b| of features / Grams."""
  a, b = _features(1), _features(2)
  layers = ("pool1", "pool2")
  gram = lambda x: np.einsum("bhwc,bhwd->bcd", x, x) / np.prod(x.shape[1:])  # pylint: disable=unnecessary-lambda-assignment
  want_p = sum(np.mean(np.abs(a[k] - b[k])) for k in layers)
  want_s = sum(np.mean(np.abs(gram(a[k]) - gram(b[k]))) for k in layers)
  ja = {k: jnp.asarray(v) for k, v in a.items()}
  jb = {k: jnp.asarray(v) for k, v in b.items()}
  np.testing.assert_allclose(float(jax.jit(losses.perceptual_loss, static_argnums=2)(ja, jb, layers)), want_p, rtol=1e-5)
  np.testing.assert_allclose(float(jax.jit(losses.style_loss, static_argnums=2)(ja, jb, layers)), want_s, rtol=1e-5)
  assert float(losses.style_loss(ja, ja, layers)) == 0.0


def test_total_variation_by_hand():
  """A vertical ramp 0, 1, 2 (rows) over 2 columns: vertical diffs all 1, horizontal all 0."""
  image = np.repeat(np.arange(3, dtype=np.float32)[None, :, None, None], 2, axis=2)
  assert float(jax.jit(losses.total_variation)(jnp.asarray(image))) == 1.0
  r = np.random.default_rng(3).random((2, 5, 7, 3)).astype(np.float32)
  want = np.mean(np.abs(np.diff(r, axis=1))) + np.mean(np.abs(np.diff(r, axis=2)))
  np.testing.assert_allclose(float(jax.jit(losses.total_variation)(jnp.asarray(r))), want, rtol=1e-5)


def test_masked_l1_parts_add_up_to_l1():
  r = np.random.default_rng(4)
  a, b = r.random((2, 6, 6, 3)), r.random((2, 6, 6, 3))
  m = (r.random((2, 6, 6, 1)) > 0.5).astype(np.float32)
  inside = float(losses.masked_l1(jnp.asarray(a), jnp.asarray(b), jnp.asarray(m)))
  outside = float(losses.masked_l1(jnp.asarray(a), jnp.asarray(b), jnp.asarray(1 - m)))
  np.testing.assert_allclose(inside, np.sum(m * np.abs(a - b)) / a.size, rtol=1e-5)
  np.testing.assert_allclose(inside + outside, np.mean(np.abs(a - b)), rtol=1e-5)
