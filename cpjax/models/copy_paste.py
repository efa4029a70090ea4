"""Smart copy-paste generator (Portenier et al., "Smart, Deep Copy-Paste", section 3.2).

An encoder-decoder with U-Net skips that predicts residuals R for the pasted content; the caller
composes the result as Y = (R + T(I)) M + I (1 - M) (section 3.3).

Parameter tree (default widths (64, 128, 256, 512), 7 dilated convs):

  encoder_0/conv                  3x3 stem at full resolution, 4 -> 64
  encoder_{l}/down/conv           3x3 stride 2, widths[l-1] -> widths[l]         l = 1 .. L
  encoder_{l}/conv/conv           3x3 stride 1, widths[l] -> widths[l]
  dilated_{i}/conv                3x3 dilated, widths[-1] -> widths[-1]          i = 0 .. 6
  decoder_{l}/upconv/conv         4x4 transposed stride 2, widths[l] -> widths[l-1]   l = L .. 1
  decoder_{l}/upconv/noise        per-channel noise weight [widths[l-1]]
  decoder_{l}/conv/conv           3x3, 2 * widths[l-1] (upsampled + skip) -> widths[l-1]
  to_rgb                          3x3, widths[0] -> 3, linear

decoder_{l} mirrors encoder_{l}: it undoes its down-sampling and concatenates the output of
encoder_{l-1} (the features at the resolution it returns to).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpjax.layers import ConvAct

Dtype = Any


class EncoderLevel(nn.Module):
  """One down-sampling step: 3x3 stride-2 conv ('down') then 3x3 stride-1 conv ('conv').

  Each conv is followed by leaky ReLU 0.2 and pixel_norm.

  Attributes:
    features: output channels of both convs.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, H / 2, W / 2, features] (H, W even)."""
    layer = functools.partial(ConvAct, self.features, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    x = layer(strides=2, name="down")(x)
    return layer(name="conv")(x)


class DecoderLevel(nn.Module):
  """One up-sampling step, the mirror of `EncoderLevel`.

  4x4 stride-2 transposed conv -> noise injection -> leaky ReLU 0.2 -> pixel_norm ('upconv'),
  concatenation of the U-Net skip, then 3x3 conv -> leaky ReLU 0.2 -> pixel_norm ('conv').

  Attributes:
    features: output channels of both convs.
    noise: whether the transposed conv is followed by noise injection.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  features: int
  noise: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, *, deterministic: bool = False
               ) -> jax.Array:
    """Up-samples x, fuses it with skip.

    Args:
      x: [B, H, W, C] features.
      skip: [B, 2H, 2W, C_skip] encoder features at the output resolution.
      deterministic: True: no noise.

    Returns:
      [B, 2H, 2W, features].
    """
    layer = functools.partial(ConvAct, self.features, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    x = layer(kernel_size=4, strides=2, transpose=True, noise=self.noise, name="upconv")(
        x, deterministic=deterministic)
    x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    return layer(name="conv")(x)


class CopyPasteGenerator(nn.Module):
  """The copy-paste network G of section 3.2: encoder, dilated middle, decoder with noise.

  Choices the paper leaves open, and ours:
  - widths: the paper gives only the ends (512 px -> 64 px with 512 maps). The default
    (64, 128, 256, 512) doubles the width at each of the 3 stride-2 levels, as FaceShop and
    most U-Nets do.
  - dilations: "seven dilated convolution layers ... increasing dilation rate up to 16". The
    default (2, 2, 4, 4, 8, 8, 16) is non-decreasing, every layer is really dilated (rate > 1),
    each rate below 16 is used twice and the last reaches 16. Its receptive field at the
    1/8-resolution bottleneck is 1 + 2 * sum(rates) = 89 maps = 712 input pixels, which covers
    the whole 512 px image from any position. Rates are all even: the encoder's stride-1 convs
    before the middle mix neighbouring maps, so no gridding gaps remain.
  - padding: symmetric, so a stride-1 conv keeps the size and a stride-2 conv halves it
    (PyTorch `padding=1`); transposed convs double it (PyTorch `ConvTranspose2d(4, 2, 1)`).
  - the last layer ('to_rgb'), a 3x3 conv to 3 channels, is linear (no nonlinearity, no
    normalisation): residuals must take any sign and scale, which leaky ReLU followed by
    pixel_norm (unit mean square over 3 channels) would not allow.
  - noise: after every transposed conv only (the paper), never in the encoder or the middle.
    `noise='input'` is the paper's ablation instead (section 3.2: "better results than feeding a
    single noise image as input"): one N(0, 1) image concatenated to the input as a 5th
    channel; `noise='none'` has no noise at all.
  - no equalised learning rate (not in the paper); default flax initialisers.

  Attributes:
    widths: stem width then one width per stride-2 level; L = len(widths) - 1 levels, a
      down-sampling factor of 2**L (8 by default).
    dilations: dilation rate of each 3x3 conv of the middle, at width widths[-1].
    noise: 'layers' (the paper), 'input' (one noise image as an extra input channel) or 'none'.
    dtype: compute dtype (e.g. jnp.bfloat16); pixel_norm statistics stay float32.
    param_dtype: parameter dtype.
  """
  widths: Sequence[int] = (64, 128, 256, 512)
  dilations: Sequence[int] = (2, 2, 4, 4, 8, 8, 16)
  noise: str = "layers"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool = False) -> jax.Array:
    """Predicts residuals for the pasted content.

    Noise comes from the 'noise' rng stream: `apply(v, x, rngs={'noise': key})`, or
    `deterministic=True` for no noise (and no rng).

    Args:
      x: [B, H, W, 4] concat(composite I(1 - M) + T(I) M in [0, 1], mask M in {0, 1});
        H and W multiples of 2**(len(widths) - 1).
      deterministic: True: no noise (reproducible evaluation / inference).

    Returns:
      [B, H, W, 3] residuals R, unbounded, in `dtype`.

    Raises:
      ValueError: x is not 4-D or its height or width is not a multiple of the down-sampling
        factor.
    """
    levels = len(self.widths) - 1
    factor = 2**levels
    if x.ndim != 4:
      raise ValueError(
          f"CopyPasteGenerator: input has shape {tuple(x.shape)}; give [batch, height, width, "
          "4] (composite + mask).")
    height, width = x.shape[1], x.shape[2]
    if height % factor or width % factor:
      raise ValueError(
          f"CopyPasteGenerator: input is {height}x{width} (shape {tuple(x.shape)}) but height "
          f"and width must be multiples of {factor} (2**{levels} for {levels} stride-2 levels); "
          "pad or crop the image to a multiple of that.")
    if self.noise not in ("layers", "input", "none"):
      raise ValueError(f"CopyPasteGenerator: noise is {self.noise!r}; use 'layers', 'input' or "
                       "'none'.")
    layer = functools.partial(ConvAct, dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.astype(self.dtype)
    if self.noise == "input":
      batch = x.shape[0]
      noise = (jnp.zeros((batch * height * width,), jnp.float32) if deterministic else
               jax.random.normal(self.make_rng("noise"), (batch * height * width,), jnp.float32))
      x = jnp.concatenate([x, noise.reshape(batch, height, width, 1).astype(self.dtype)], -1)

    # Encoder: stem at full resolution, then `levels` stride-2 steps.
    h = layer(self.widths[0], name="encoder_0")(x)
    skips = [h]
    for level in range(1, levels + 1):
      h = EncoderLevel(self.widths[level], dtype=self.dtype, param_dtype=self.param_dtype,
                       name=f"encoder_{level}")(h)
      skips.append(h)

    # Middle: dilated convs at the bottleneck resolution.
    for i, rate in enumerate(self.dilations):
      h = layer(self.widths[-1], dilation=rate, name=f"dilated_{i}")(h)

    # Decoder: mirror of the encoder, U-Net skips by concatenation.
    for level in range(levels, 0, -1):
      h = DecoderLevel(self.widths[level - 1], noise=self.noise == "layers", dtype=self.dtype,
                       param_dtype=self.param_dtype, name=f"decoder_{level}")(
                           h, skips[level - 1], deterministic=deterministic)

    # Linear output: residuals of any sign and scale.
    return nn.Conv(3, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                   param_dtype=self.param_dtype, name="to_rgb")(h)
