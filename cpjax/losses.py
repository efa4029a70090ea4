"""Losses as plain functions of arrays (reconstruction, WGAN-GP, segmentation).

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

import chex
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
  chex.assert_equal_shape([pred, target])   # a silent broadcast would average the wrong pairs
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


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, *, ignore_label: int = 255,
                          reduction: str = "mean") -> jax.Array:
  """Per-pixel softmax cross-entropy with an ignored label (segmentation).

  Args:
    logits: [..., K] float, unnormalised class scores (e.g. [B, H, W, K]).
    labels: [...] int class ids in [0, K) or `ignore_label` (those pixels count for nothing).
    ignore_label: the label of pixels to ignore (255 in PASCAL VOC and ADE20K conventions).
    reduction: 'mean' over the non-ignored pixels (0 when there are none), or 'sum' over them
      (the FCN reference sums the loss over pixels and compensates with a tiny learning rate).

  Returns:
    float32 scalar >= 0.
  """
  if reduction not in ("mean", "sum"):
    raise ValueError(f"reduction is {reduction!r}; use 'mean' or 'sum'")
  labels = labels.astype(jnp.int32)
  valid = labels != ignore_label
  safe_labels = jnp.where(valid, labels, 0)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, safe_labels[..., None], axis=-1)[..., 0]
  total = jnp.sum(jnp.where(valid, nll, 0.0))
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all elements (e.g. [B, H, W, 3]): float32 scalar >= 0.

  Harmonisation's plain MSE objective (DIH eq. 1 up to the constant 1/2 and the mean instead
  of the sum, which only rescale the learning rate).
  """
  chex.assert_equal_shape([pred, target])
  return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))


def fn_mse(pred: jax.Array, target: jax.Array, mask: jax.Array, *,
           min_area: float = 100.0) -> jax.Array:
  """Foreground-normalised MSE (foreground-aware harmonisation paper, eq. 2; reference
  `MaskWeightedMSE`): per example sum_{H,W,C} (pred - target)^2 / (C * max(sum_{H,W} mask,
  A_min)), then the batch mean.

  Args:
    pred: [B, H, W, C] prediction (the reference works in the ImageNet-normalised space).
    target: [B, H, W, C] ground truth, same space.
    mask: [B, H, W, 1] foreground in [0, 1].
    min_area: A_min in pixels (100 at 256 px; the reference's 512-px configs use 1000).

  Returns:
    float32 scalar >= 0.
  """
  chex.assert_rank([pred, target, mask], 4)
  chex.assert_equal_shape([pred, target])
  chex.assert_shape(mask, (*pred.shape[:3], 1))
  err = jnp.sum(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=(1, 2, 3))
  area = jnp.sum(mask.astype(jnp.float32), axis=(1, 2, 3))
  return jnp.mean(err / (pred.shape[-1] * jnp.maximum(area, min_area)))


def perceptual_loss(pred_features: dict[str, jax.Array], target_features: dict[str, jax.Array],
                    layers: tuple[str, ...]) -> jax.Array:
  """Perceptual loss (Johnson et al.): sum over layers of the mean |psi_p(pred) - psi_p(target)|.

  Args:
    pred_features: layer name -> [B, h, w, C] activations of the prediction (e.g.
      `cpjax.models.vgg.VGG16` outputs).
    target_features: the same for the target.
    layers: names of the layers to use, e.g. ('pool1', 'pool2', 'pool3').

  Returns:
    float32 scalar >= 0.
  """
  return sum(l1(pred_features[name], target_features[name]) for name in layers)


def gram_matrix(features: jax.Array) -> jax.Array:
  """Gram matrices K = psi^T psi / (C h w) per example (Johnson et al., Liu et al.).

  Args:
    features: [B, h, w, C].

  Returns:
    [B, C, C] float32.
  """
  b, h, w, c = features.shape
  flat = features.astype(jnp.float32).reshape(b, h * w, c)
  return jnp.einsum("bnc,bnd->bcd", flat, flat) / (c * h * w)


def style_loss(pred_features: dict[str, jax.Array], target_features: dict[str, jax.Array],
               layers: tuple[str, ...]) -> jax.Array:
  """Style loss: sum over layers of the mean |K_p(pred) - K_p(target)| (`gram_matrix`).

  The mean over the C x C entries is Liu et al.'s 1 / C^2 normalisation.

  Args:
    pred_features, target_features: layer name -> [B, h, w, C].
    layers: names of the layers to use.

  Returns:
    float32 scalar >= 0.
  """
  return sum(l1(gram_matrix(pred_features[name]), gram_matrix(target_features[name]))
             for name in layers)


def total_variation(image: jax.Array) -> jax.Array:
  """Anisotropic total variation: mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]|.

  Args:
    image: [B, H, W, C].

  Returns:
    float32 scalar >= 0.
  """
  x = image.astype(jnp.float32)
  return (jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])) + jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1])))


def masked_l1(pred: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
  """sum(weight |pred - target|) / number of elements of pred (Liu et al.'s L_hole / L_valid).

  Normalised by the element count, not by the weight's sum, so that losses over complementary
  regions add up to the plain L1.

  Args:
    pred, target: [B, H, W, C].
    weight: broadcastable to pred, e.g. a [B, H, W, 1] mask in {0, 1}.

  Returns:
    float32 scalar >= 0.
  """
  chex.assert_equal_shape([pred, target])
  chex.assert_is_broadcastable(weight.shape, pred.shape)
  diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
  return jnp.sum(weight.astype(jnp.float32) * diff) / diff.size
