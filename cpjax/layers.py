"""Shared building blocks: transposed convolution, pixelwise feature normalisation, noise
injection, conv blocks.

Images and feature maps are NHWC. Every module takes `dtype` (compute) and `param_dtype`
(storage); normalisation statistics are computed in float32 whatever the compute dtype.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any
Padding = str | Sequence[tuple[int, int]]


def _transpose_padding(kernel: int, stride: int, padding: str | tuple[int, int]) -> tuple[int, int]:
  """The (low, high) padding of the dilated input that `lax.conv_transpose` uses."""
  if not isinstance(padding, str):
    return tuple(padding)
  if padding == "SAME":
    total = kernel + stride - 2
    low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    low = kernel - 1
  else:
    raise ValueError(f"conv_transpose: padding {padding!r}; use 'SAME', 'VALID' or (low, high) "
                     "pairs.")
  return low, total - low


def _phases(size: int, kernel: int, stride: int, low: int, high: int
            ) -> tuple[int, int, list[tuple[list[int], int]]]:
  """One axis of a transposed conv split into its `stride` output phases.

  Output o = stride * m + r (phase r) is sum_j k[t_j] x[m + d_0 + j] over the taps t_j = t_0 +
  j * stride that land on input samples, with d_0 = (r + t_0 - low) / stride.

  Returns:
    (output length, outputs per phase ceil(length / stride), [(taps t_j, d_0)] per phase).
  """
  length = stride * (size - 1) + 1 + low + high - kernel + 1
  phases = []
  for r in range(stride):
    taps = [t for t in range(kernel) if (r + t - low) % stride == 0]
    phases.append((taps, (r + taps[0] - low) // stride if taps else 0))
  return length, -(-length // stride), phases


def _shift_pad(x: jax.Array, axis: int, first: int, count: int, taps: int) -> jax.Array:
  """Pads (negative: crops) x along `axis` so that a VALID `taps`-tap window at output m reads
  x[m + first ...], for m = 0 .. count - 1."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (-first, count - 1 + first + taps - 1 - (x.shape[axis] - 1), 0)
  return lax.pad(x, jnp.zeros((), x.dtype), config)


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                   padding: Padding, *, subpixel: bool = True) -> jax.Array:
  """`lax.conv_transpose` (NHWC, HWIO kernel, not transposed), computed as stride-1 convolutions.

  A transposed conv of stride s correlates the input dilated by s (s - 1 zeros between samples)
  with the kernel. Output phase (r_y, r_x) (outputs s m + r) only meets the taps t = r - low
  (mod s), so it is a plain stride-1 conv of the undilated input with that sub-kernel
  ("sub-pixel" convolution, Shi et al. 2016). When every phase reads the same input window
  (e.g. the FCN's k = 2s 'VALID' upsampling, PyTorch's ConvTranspose2d(4, 2, padding=0)) the
  phases are one conv to s*s*O channels followed by depth-to-space; otherwise (e.g.
  ConvTranspose2d(4, 2, padding=1), whose even and odd outputs read different neighbours) one
  conv per phase, interleaved. Either way no multiply touches a dilation zero, and the backward
  pass is made of ordinary conv gradients: on XLA:CPU a 4x4 stride-2 layer trains 4-8x faster
  than `lax.conv_transpose`, whose gradient is a slow path there.

  The sums are the same terms in another order: outputs equal `lax.conv_transpose` to float
  rounding (tested).

  Args:
    x: [B, H, W, I].
    kernel: [kh, kw, I, O] (flax `ConvTranspose(transpose_kernel=False)`'s layout).
    strides: (s_y, s_x).
    padding: 'SAME', 'VALID' or ((low, high), (low, high)) of the dilated input, as
      `lax.conv_transpose`.
    subpixel: False: call `lax.conv_transpose` itself.

  Returns:
    [B, H', W', O] with H' = s_y (H - 1) + 1 + low + high - kh + 1 (2H for k4 s2 'SAME').
  """
  if not subpixel:
    return lax.conv_transpose(x, kernel, strides, padding,
                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pads = [padding] * 2 if isinstance(padding, str) else list(padding)
  axes = []
  for size, k, s, pad in zip(x.shape[1:3], kernel.shape[:2], strides, pads):
    axes.append(_phases(size, k, s, *_transpose_padding(k, s, pad)))
  (len_y, m_y, ph_y), (len_x, m_x, ph_x) = axes
  sy, sx = strides
  batch, out = x.shape[0], kernel.shape[-1]
  dims = ("NHWC", "HWIO", "NHWC")

  def aligned(phases):   # every phase reads the same window of the input
    return len({(len(t), d) for t, d in phases}) == 1 and phases[0][0]

  if aligned(ph_y) and aligned(ph_x):
    (taps_y, d_y), (taps_x, d_x) = ph_y[0], ph_x[0]
    # sub[wy, wx, i, ry, rx, o] = kernel[t_{ry, wy}, t_{rx, wx}, i, o]
    idx_y = np.asarray([t for t, _ in ph_y]).T     # [window, phases]
    idx_x = np.asarray([t for t, _ in ph_x]).T
    sub = kernel[idx_y[:, None, :, None], idx_x[None, :, None, :]]
    sub = sub.transpose(0, 1, 4, 2, 3, 5).reshape(len(taps_y), len(taps_x), -1, sy * sx * out)
    xp = _shift_pad(_shift_pad(x, 1, d_y, m_y, len(taps_y)), 2, d_x, m_x, len(taps_x))
    y = lax.conv_general_dilated(xp, sub, (1, 1), "VALID", dimension_numbers=dims)
    y = y.reshape(batch, m_y, m_x, sy, sx, out)
  else:
    rows = []
    for taps_y, d_y in ph_y:
      row = []
      for taps_x, d_x in ph_x:
        if not taps_y or not taps_x:   # a kernel smaller than the stride leaves gaps
          row.append(jnp.zeros((batch, m_y, m_x, out), jnp.result_type(x, kernel)))
          continue
        sub = kernel[np.asarray(taps_y)][:, np.asarray(taps_x)]
        xp = _shift_pad(_shift_pad(x, 1, d_y, m_y, len(taps_y)), 2, d_x, m_x, len(taps_x))
        row.append(lax.conv_general_dilated(xp, sub, (1, 1), "VALID", dimension_numbers=dims))
      rows.append(jnp.stack(row, axis=3))        # [B, m_y, m_x, s_x, O]
    y = jnp.stack(rows, axis=3)                  # [B, m_y, m_x, s_y, s_x, O]
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(batch, m_y * sy, m_x * sx, out)
  return y[:, :len_y, :len_x]


def subpixel_default() -> bool:
  """The backends where `conv_transpose`'s sub-pixel form is the faster one: XLA:CPU. GPUs and
  TPUs have fast native transposed-conv gradients (cuDNN, the TPU compiler) and keep the op."""
  return jax.default_backend() == "cpu"


class ConvTranspose(nn.Module):
  """flax `nn.ConvTranspose` (2-D, same parameters 'kernel' [kh, kw, I, O] and 'bias' [O], same
  outputs), computed by `conv_transpose`: sub-pixel convolutions on CPU, the native op elsewhere.

  Converters, checkpoints and parity tests written for `nn.ConvTranspose` hold unchanged.

  Attributes:
    features: output channels O.
    kernel_size: (kh, kw).
    strides: (s_y, s_x).
    padding: 'SAME', 'VALID' or ((low, high), (low, high)), as `lax.conv_transpose`.
    use_bias: add a learned bias.
    transpose_kernel: the kernel is stored [kh, kw, O, I] and used flipped (the gradient of a
      conv with that kernel), as flax's option.
    impl: 'auto' (`subpixel_default()`), 'subpixel' or 'lax'.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Padding = "SAME"
  use_bias: bool = True
  transpose_kernel: bool = False
  kernel_init: Callable[..., jax.Array] = nn.linear.default_kernel_init
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """[B, H, W, I] -> [B, H', W', features] (sizes as `conv_transpose`)."""
    if self.impl not in ("auto", "subpixel", "lax"):
      raise ValueError(f"ConvTranspose: impl={self.impl!r}; use 'auto', 'subpixel' or 'lax'.")
    in_features = x.shape[-1]
    shape = tuple(self.kernel_size) + ((self.features, in_features) if self.transpose_kernel
                                       else (in_features, self.features))
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    if self.transpose_kernel:  # lax: flip spatially, swap in/out
      kernel = jnp.flip(kernel, (0, 1)).swapaxes(2, 3)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    subpixel = subpixel_default() if self.impl == "auto" else self.impl == "subpixel"
    y = conv_transpose(x, kernel, tuple(self.strides), self.padding, subpixel=subpixel)
    return y + bias if bias is not None else y


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
      x = ConvTranspose(
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
