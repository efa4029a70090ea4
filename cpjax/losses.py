"""Losses as plain functions of arrays (reconstruction, WGAN-GP).

Smart copy-paste (paper eq. 7) trains with

  L = L_rec + alpha * L_WGAN-GP + gamma * E[D(I)^2],
  L_WGAN-GP = E[D(Y)] - E[D(I)] + lambda * E[(||grad D(I_u)||_2 - 1)^2]     (eq. 5)

as a two-player game:
- the generator minimises the terms that depend on it: L_rec(Y) - alpha * E[D(Y)], i.e.
  `l1(y, i) + alpha * wgan_generator_loss(d_fake)`;
- the critic minimises the rest: `wgan_gp_critic_loss(d_real, d_fake, gp, drift=gamma)`.
  We read gamma (1e-3) as ProGAN's drift epsilon (0.001, the paper's reference [19] and the same
  authors' public GAN code), i.e. relative to the unscaled critic loss. A literal reading of
  eq. 7 would scale the critic's WGAN-GP terms by alpha too, weighing the drift gamma / alpha =
  10 times the Wasserstein estimate; with Adam an overall scale of the critic's loss does not
  matter, the ratio does, so we keep ProGAN's ratio.
All losses return float32 scalars.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def l1(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute error over all elements (paper eq. 6, averaged over pixels and channels).

  Args:
    pred: [...] e.g. [B, H, W, 3] result Y.
    target: same shape, e.g. the real image I.

  Returns:
    float32 scalar >= 0.
  """
  return jnp.mean(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], real: jax.Array,
                     fake: jax.Array, key: jax.Array) -> jax.Array:
  """WGAN-GP gradient penalty E[(||grad_x D(x)||_2 - 1)^2] (Gulrajani et al.; paper eq. 5).

  x = eps * real + (1 - eps) * fake with one eps ~ U(0, 1) per example; the gradient of
  sum_b D(x)_b w.r.t. x gives each example's own gradient because the critic scores examples
  independently (no batch statistics); its L2 norm is taken over all non-batch axes.

  The norm is sqrt(sum(g^2) + 1e-12): the tiny constant keeps the penalty's own gradient (a
  second derivative of D, taken when the critic trains) finite where g = 0; it changes the
  value by at most 1e-6.

  Gradients flow into real and fake as given: stop_gradient the fake image in the critic step
  if the generator must not be updated through the penalty.

  Args:
    critic_fn: maps [B, H, W, C] images to [B] scores (the caller closes over the condition,
      mask and critic parameters).
    real: [B, H, W, C] real images I.
    fake: [B, H, W, C] generated images Y.
    key: PRNG key for the interpolation weights.

  Returns:
    float32 scalar >= 0.
  """
  batch = real.shape[0]
  eps = jax.random.uniform(key, (batch,) + (1,) * (real.ndim - 1), jnp.float32)
  x = eps * real.astype(jnp.float32) + (1.0 - eps) * fake.astype(jnp.float32)
  grads = jax.grad(lambda v: jnp.sum(critic_fn(v).astype(jnp.float32)))(x)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


def wgan_gp_critic_loss(d_real: jax.Array, d_fake: jax.Array, gp: jax.Array, *,
                        gp_lambda: float = 10.0, drift: float = 1e-3) -> jax.Array:
  """Critic loss: E[D(Y)] - E[D(I)] + lambda * GP + drift * E[D(I)^2].

  The drift term (ProGAN; the paper's gamma E[D(I)^2] of eq. 7) keeps the critic's output from
  drifting far from zero.

  Args:
    d_real: [B] critic scores of real images I.
    d_fake: [B] critic scores of generated images Y.
    gp: scalar from `gradient_penalty`.
    gp_lambda: the paper's lambda (10).
    drift: the paper's gamma (1e-3), ProGAN's drift epsilon.

  Returns:
    float32 scalar (any sign).
  """
  d_real = d_real.astype(jnp.float32)
  d_fake = d_fake.astype(jnp.float32)
  return (jnp.mean(d_fake) - jnp.mean(d_real) + gp_lambda * gp
          + drift * jnp.mean(jnp.square(d_real)))


def wgan_generator_loss(d_fake: jax.Array) -> jax.Array:
  """Generator's adversarial loss -E[D(Y)] (the caller scales it by the paper's alpha).

  Args:
    d_fake: [B] critic scores of generated images Y.

  Returns:
    float32 scalar (any sign).
  """
  return -jnp.mean(d_fake.astype(jnp.float32))
