"""VGG16 convolutional trunk (Simonyan & Zisserman), shared by FCN and the perceptual losses.

Thirteen 3x3 convs with ReLU in five blocks, each block closed by a 2x2 stride-2 max-pool. No
fully connected layers: FCN (`cpjax.models.fcn`) adds its own convolutionalised fc6/fc7.

Parameter tree (each a flax `Conv` with `kernel` [3, 3, C_in, C_out] and `bias` [C_out]):

  conv1_1 conv1_2                       3 -> 64 -> 64
  conv2_1 conv2_2                      64 -> 128 -> 128
  conv3_1 conv3_2 conv3_3             128 -> 256 -> 256 -> 256
  conv4_1 conv4_2 conv4_3             256 -> 512 -> 512 -> 512
  conv5_1 conv5_2 conv5_3             512 -> 512 -> 512 -> 512

The names are those of pytorch-fcn (`conv1_1.weight`) and of the Caffe models; torchvision's
`features.N` are, in the same order, N = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28
(`TORCHVISION_FEATURE_INDEX`). A PyTorch weight [C_out, C_in, 3, 3] becomes a flax kernel by
`transpose(2, 3, 1, 0)`.

On XLA:CPU the convs' kernel gradients are per-tap matrix products
(`cpjax.layers.conv_general_dilated_taps`; the FCN-8s train step at 500x375 is 1.6x faster
than with XLA's own); parameters and outputs are nn.Conv's.

Input normalisation is the caller's: `caffe_preprocess` for the Caffe / pytorch-fcn weights,
`cpjax.ops.color.imagenet_normalize` for torchvision's.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cpjax.layers import conv_general_dilated_taps

Dtype = Any

# VGG16's configuration "D": convs per block and their widths.
CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
WIDTHS = (64, 128, 256, 512, 512)
CONV_NAMES = tuple(f"conv{b}_{i}" for b, n in enumerate(CONVS_PER_BLOCK, 1)
                   for i in range(1, n + 1))
TORCHVISION_FEATURE_INDEX = dict(zip(CONV_NAMES, (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26,
                                                  28)))

# Per-channel BGR mean on 0..255 of the Caffe VGG16 / FCN models (pytorch-fcn `mean_bgr`).
CAFFE_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def caffe_preprocess(image: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> the Caffe models' input: BGR on 0..255 minus `CAFFE_MEAN_BGR`.

  Args:
    image: [..., 3] RGB float in [0, 1].

  Returns:
    [..., 3] BGR float, roughly in [-123, 151], image's dtype.
  """
  bgr = image[..., ::-1] * jnp.asarray(255.0, image.dtype)
  return bgr - jnp.asarray(CAFFE_MEAN_BGR, image.dtype)


@jax.custom_vjp
def _pool_windows(x: jax.Array) -> jax.Array:
  """Max over the disjoint 2x2 windows of [B, 2h, 2w, C] -> [B, h, w, C]."""
  b, h, w, c = x.shape
  return jnp.max(x.reshape(b, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def _pool_windows_fwd(x):
  y = _pool_windows(x)
  return y, (x, y)


def _pool_windows_bwd(residuals, g):
  """The gradient to the first maximum of each window in row-major order, as XLA's
  select-and-scatter and PyTorch give it; elementwise ops only."""
  x, y = residuals
  b, h, w, c = x.shape
  windows = x.reshape(b, h // 2, 2, w // 2, 2, c)
  taken = jnp.zeros(y.shape, bool)
  rows = []
  for i in range(2):
    row = []
    for j in range(2):
      first = (windows[:, :, i, :, j] == y) & ~taken
      taken = taken | first
      row.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
    rows.append(jnp.stack(row, axis=3))
  return (jnp.stack(rows, axis=2).reshape(b, h, w, c),)


_pool_windows.defvjp(_pool_windows_fwd, _pool_windows_bwd)


def max_pool_2x2(x: jax.Array, ceil_mode: bool) -> jax.Array:
  """2x2 stride-2 max-pool, PyTorch `MaxPool2d(2, 2, ceil_mode=...)` (no padding).

  Floor mode drops an odd last row/column; ceil mode keeps it as a window of its own (pooled
  over its valid pixels only, i.e. padded with -inf), as Caffe's pooling does. The gradient
  goes to the first maximum of each window (row-major), as PyTorch's and XLA's max-pool
  gradients; it is computed with elementwise ops, 2x faster on XLA:CPU than its
  select-and-scatter (rewritten there into index reductions and broadcasts).

  Args:
    x: [B, H, W, C] with H, W >= 2.
    ceil_mode: True: out = ceil(H / 2); False: out = floor(H / 2).

  Returns:
    [B, H', W', C].
  """
  height, width = x.shape[1:3]
  if ceil_mode:
    x = lax.pad(x, jnp.asarray(-jnp.inf, x.dtype),
                ((0, 0, 0), (0, height % 2, 0), (0, width % 2, 0), (0, 0, 0)))
  else:
    x = x[:, :height - height % 2, :width - width % 2]
  return _pool_windows(x)


class VGG16(nn.Module):
  """The VGG16 trunk: conv1_1 ... conv5_3 with ReLU and pool1 ... pool5.

  Attributes:
    first_padding: zero padding of conv1_1 on every side (1 in VGG; FCN uses 100 so that any
      input size survives the 32x down-sampling and fc6's 7x7 valid conv). Every other conv pads 1.
    ceil_mode: pooling rounds the output size up (Caffe / FCN) rather than down (torchvision).
    dtype: compute dtype.
    param_dtype: parameter dtype.
    widths: conv widths of blocks 1 ... 5; VGG16's `WIDTHS` (the only ones pretrained weights
      fit); narrower ones for tests and CPU demos.
  """
  first_padding: int = 1
  ceil_mode: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  widths: tuple[int, ...] = WIDTHS

  @nn.compact
  def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
    """Runs the trunk.

    Args:
      x: [B, H, W, 3] normalised image (see the module docstring).

    Returns:
      Activations by name: 'conv{b}_{i}' (after ReLU) and 'pool{b}', [B, h, w, widths[b-1]].
      With padding p, conv1_1 is (H + 2p - 2) x (W + 2p - 2); each pool halves (floor or ceil).
    """
    out = {}
    for block, (num_convs, width) in enumerate(zip(CONVS_PER_BLOCK, self.widths), 1):
      for i in range(1, num_convs + 1):
        name = f"conv{block}_{i}"
        pad = self.first_padding if name == "conv1_1" else 1
        x = nn.Conv(width, (3, 3), padding=((pad, pad), (pad, pad)), dtype=self.dtype,
                    param_dtype=self.param_dtype, conv_general_dilated=conv_general_dilated_taps,
                    name=name)(x)
        x = nn.relu(x)
        out[name] = x
      x = max_pool_2x2(x, self.ceil_mode)
      out[f"pool{block}"] = x
    return out
