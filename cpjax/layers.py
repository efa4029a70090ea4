"""Shared building blocks: pixelwise feature normalisation, noise injection, conv blocks.

Images and feature maps are NHWC. Every module takes `dtype` (compute) and `param_dtype`
(storage); normalisation statistics are computed in float32 whatever the compute dtype.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def pixel_norm(x: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Pixelwise feature normalisation: the smart copy-paste paper's LRN, eq. (4).

  Each pixel's feature vector is divided by the root mean square of its channels,
  `x / sqrt(mean_c(x^2) + eps)` (Karras et al., progressive GANs). After it, every pixel has
  mean square 1 over channels (up to eps), whatever the scale of its input.

  Args:
    x: [..., C] features (any float dtype, any range).
    eps: added under the square root; 1e-8 as in the paper, prevents division by zero.

  Returns:
    [..., C] normalised features, the dtype of x (statistics computed in float32).
  """
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
  return y.astype(x.dtype)


class NoiseInjection(nn.Module):
  """StyleGAN noise addition: `x + w[c] * n`, one N(0, 1) image n per example and call.

  The noise image n is [B, H, W, 1], drawn from the module's 'noise' rng stream
  (`self.make_rng('noise')`, so every layer draws its own noise), and broadcast over
  channels; w is a learned per-channel weight [C] initialised to 0, so at initialisation the
  layer is the identity.

  With `deterministic=True` the noise is zero and the layer returns x unchanged: evaluation and
  inference are then reproducible and need no 'noise' rng (the weight is still created, so
  `init(..., deterministic=True)` gives the same parameter tree).

  Attributes:
    dtype: compute dtype of the added noise (the output keeps x's dtype).
    param_dtype: dtype of the weight.
  """
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = False) -> jax.Array:
    """Adds per-channel-scaled single-channel noise.

    Args:
      x: [B, H, W, C] features.
      deterministic: if True, no noise (returns x).

    Returns:
      [B, H, W, C] features, x's dtype.
    """
    weight = self.param("weight", nn.initializers.zeros, (x.shape[-1],), self.param_dtype)
    if deterministic:
      return x
    # Drawn flat then reshaped: with JAX's default (partitionable) threefry the values are
    # bitwise those of a [B, H, W, 1] draw, but XLA:CPU compiles a 1-D draw in ~0.2 s where a
    # small multi-dimensional one takes seconds.
    batch, height, width = x.shape[:-1]
    noise = jax.random.normal(self.make_rng("noise"), (batch * height * width,), jnp.float32)
    noise = noise.reshape(batch, height, width, 1)
    return x + (noise.astype(self.dtype) * weight.astype(self.dtype)).astype(x.dtype)


class ConvAct(nn.Module):
  """conv -> (noise) -> leaky ReLU -> pixel_norm: the smart copy-paste network's layer.

  Padding keeps the sizes simple: a stride-1 conv keeps H x W (symmetric padding
  dilation * (k - 1) // 2 for odd k, i.e. PyTorch `padding=dilation`); a stride-s conv gives
  ceil(H / s) (symmetric padding (k - 1) // 2, i.e. PyTorch `padding=1` for a 3x3 kernel); a
  transposed conv (`transpose=True`) gives s * H ('SAME' in lax's conv_transpose; for a 4x4
  kernel and stride 2, out[2i + 2 - t] += x[i] k[t] per axis, i.e. PyTorch's
  `ConvTranspose2d(k=4, s=2, padding=1)` with the kernel flipped spatially, as flax's
  `ConvTranspose(transpose_kernel=False)` stores it).

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: stride (down-sampling factor, or up-sampling factor when `transpose`).
    dilation: kernel dilation rate (regular convs only).
    transpose: a transposed conv (up-sampling) instead of a conv.
    noise: add `NoiseInjection` after the conv, before the nonlinearity (sub-module 'noise').
    negative_slope: slope of the leaky ReLU for x < 0 (0.2 in the paper).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  dilation: int = 1
  transpose: bool = False
  noise: bool = False
  negative_slope: float = 0.2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = False) -> jax.Array:
    """Applies the layer.

    Args:
      x: [B, H, W, C_in] features.
      deterministic: passed to the noise layer (True: no noise).

    Returns:
      [B, H', W', features] with unit mean square per pixel over channels; H' = H for
      stride 1, ceil(H / strides) for a strided conv, H * strides for a transposed conv.
    """
    k = self.kernel_size
    if self.transpose:
      x = nn.ConvTranspose(
          self.features, (k, k), strides=(self.strides, self.strides), padding="SAME",
          dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    else:
      pad = self.dilation * (k - 1) // 2
      x = nn.Conv(
          self.features, (k, k), strides=self.strides, padding=((pad, pad), (pad, pad)),
          kernel_dilation=self.dilation, dtype=self.dtype, param_dtype=self.param_dtype,
          name="conv")(x)
    if self.noise:
      x = NoiseInjection(dtype=self.dtype, param_dtype=self.param_dtype, name="noise")(
          x, deterministic=deterministic)
    x = nn.leaky_relu(x, negative_slope=self.negative_slope)
    return pixel_norm(x)
