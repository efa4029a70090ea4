"""Tests of cpjax.losses against hand formulas: L1 (eq. 6), WGAN-GP (eq. 5), drift (eq. 7)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpjax import losses


def test_l1_matches_numpy():
  """l1 is the mean absolute difference over every element (batch, pixels and channels)."""
  r = np.random.default_rng(0)
  a, b = r.normal(size=(2, 5, 4, 3)), r.normal(size=(2, 5, 4, 3))
  expected = np.abs(a - b).sum() / a.size
  np.testing.assert_allclose(float(losses.l1(jnp.asarray(a), jnp.asarray(b))), expected,
                             rtol=1e-6)


def test_gradient_penalty_linear_critic(rng):
  """For f(x) = sum(w * x) every interpolate's gradient is w, so the penalty is
  (||w||_2 - 1)^2 whatever eps, real and fake (norm over all non-batch axes)."""
  r = np.random.default_rng(1)
  w = jnp.asarray(r.normal(size=(6, 5, 3)), jnp.float32)  # ||w|| ~ 9.5, far from 1
  real = jnp.asarray(r.uniform(size=(4, 6, 5, 3)), jnp.float32)
  fake = jnp.asarray(r.uniform(size=(4, 6, 5, 3)), jnp.float32)
  gp = losses.gradient_penalty(lambda x: jnp.sum(w * x, axis=(1, 2, 3)), real, fake, rng)
  expected = (np.linalg.norm(np.asarray(w, np.float64)) - 1.0)**2
  np.testing.assert_allclose(float(gp), expected, rtol=1e-5)


def test_gradient_penalty_uses_one_eps_per_example(rng):
  """With real = 1 and fake = 0 the interpolate is x = eps: it is constant within each
  example, in [0, 1], different between examples; for f(x) = sum(x^2) / 2 (gradient x, norm
  eps_b * sqrt(D)) the penalty equals mean_b((eps_b sqrt(D) - 1)^2) for those eps_b."""
  seen = []

  def critic(x):
    jax.debug.callback(lambda v: seen.append(np.asarray(v)), x)
    return 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))

  shape = (8, 3, 2, 3)
  gp = losses.gradient_penalty(critic, jnp.ones(shape), jnp.zeros(shape), rng)
  x = seen[0]
  eps = x[:, 0, 0, 0]
  np.testing.assert_allclose(x, np.broadcast_to(eps[:, None, None, None], shape), rtol=1e-6)
  assert np.all((eps >= 0) & (eps <= 1))
  assert len(np.unique(eps)) == shape[0]
  d = np.prod(shape[1:])
  np.testing.assert_allclose(float(gp), np.mean((eps * np.sqrt(d) - 1.0)**2), rtol=1e-5)


def test_gradient_penalty_key_changes_eps():
  """Different keys draw different eps: with the quadratic critic the penalty changes."""
  critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))  # noqa: E731
  shape = (4, 2, 2, 1)
  a = losses.gradient_penalty(critic, jnp.ones(shape), jnp.zeros(shape), jax.random.key(1))
  b = losses.gradient_penalty(critic, jnp.ones(shape), jnp.zeros(shape), jax.random.key(2))
  assert float(a) != float(b)


def test_gradient_penalty_gradient_wrt_critic_params(rng):
  """d GP / d w for the linear critic is 2 (||w|| - 1) w / ||w|| (double backprop through
  jax.grad), and stays finite (zero) at w = 0 where a bare sqrt would give NaN."""
  r = np.random.default_rng(2)
  real = jnp.asarray(r.uniform(size=(3, 4, 4, 1)), jnp.float32)
  fake = jnp.asarray(r.uniform(size=(3, 4, 4, 1)), jnp.float32)

  def gp(w):
    return losses.gradient_penalty(lambda x: jnp.sum(w * x, axis=(1, 2, 3)), real, fake, rng)

  w = r.normal(size=(4, 4, 1))
  norm = np.linalg.norm(w)
  np.testing.assert_allclose(np.asarray(jax.grad(gp)(jnp.asarray(w, jnp.float32))),
                             2 * (norm - 1) * w / norm, rtol=1e-4, atol=1e-6)
  at_zero = np.asarray(jax.grad(gp)(jnp.zeros((4, 4, 1))))
  assert np.all(np.isfinite(at_zero)) and np.abs(at_zero).max() < 1e-3


def test_wgan_gp_critic_loss_hand_formula():
  """critic loss = mean(D(Y)) - mean(D(I)) + lambda GP + drift mean(D(I)^2), defaults 10, 1e-3."""
  d_real, d_fake, gp = jnp.array([1.0, 2.0, 3.0]), jnp.array([-1.0, 0.5, 0.0]), jnp.array(0.3)
  expected = (-0.5 / 3) - 2.0 + 10.0 * 0.3 + 1e-3 * (14.0 / 3)
  np.testing.assert_allclose(float(losses.wgan_gp_critic_loss(d_real, d_fake, gp)), expected,
                             rtol=1e-6)
  expected = (-0.5 / 3) - 2.0 + 2.0 * 0.3 + 0.5 * (14.0 / 3)
  np.testing.assert_allclose(
      float(losses.wgan_gp_critic_loss(d_real, d_fake, gp, gp_lambda=2.0, drift=0.5)),
      expected, rtol=1e-6)


def test_wgan_generator_loss_hand_formula():
  """generator adversarial loss = -mean(D(Y)), returned as float32."""
  out = losses.wgan_generator_loss(jnp.array([1.0, -3.0, 0.5], jnp.bfloat16))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(float(out), 0.5, rtol=1e-6)


def test_softmax_cross_entropy_matches_numpy_and_ignores_255():
  """Mean and sum reductions equal a NumPy log-softmax NLL over the non-ignored pixels."""
  r = np.random.default_rng(0)
  logits = r.normal(size=(2, 5, 6, 4)).astype(np.float32)
  labels = r.integers(0, 4, (2, 5, 6))
  labels[0, :2] = 255
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  keep = labels != 255
  nll = -np.take_along_axis(log_probs, np.where(keep, labels, 0)[..., None], -1)[..., 0][keep]
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels, reduction="sum"),
                             nll.sum(), rtol=1e-5)


def test_softmax_cross_entropy_all_ignored_is_zero():
  """A crop with only ignored pixels contributes 0 (not NaN)."""
  loss = losses.softmax_cross_entropy(np.zeros((1, 3, 3, 21), np.float32),
                                      np.full((1, 3, 3), 255))
  assert float(loss) == 0.0


def test_losses_refuse_pairs_that_would_broadcast():
  """A [B, H, W, 1] target against a [B, H, W, 3] prediction, or a mask without its channel
  axis, would broadcast silently; the losses refuse, naming the shapes."""
  pred = jnp.zeros((2, 8, 8, 3))
  for loss in (losses.l1, losses.mse):
    with pytest.raises(AssertionError, match="shape"):
      loss(pred, jnp.zeros((2, 8, 8, 1)))
  with pytest.raises(AssertionError, match="shape"):
    losses.fn_mse(pred, pred, jnp.zeros((2, 8, 8, 3)))
  with pytest.raises(AssertionError, match="rank"):
    losses.fn_mse(pred, pred, jnp.zeros((2, 8, 8)))
  with pytest.raises(AssertionError, match="broadcast"):
    losses.masked_l1(pred, pred, jnp.zeros((2, 4, 4, 1)))
