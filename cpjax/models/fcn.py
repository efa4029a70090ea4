"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell): FCN-32s,
16s, 8s, and the seamless-cloning report's FCN-4s, as in pytorch-fcn / the Caffe original.

VGG16 trunk with conv1_1 padded by 100 and ceil-mode pooling; fc6 = 7x7 valid conv, fc7 = 1x1,
each ReLU + dropout 0.5; score_fr = 1x1 conv to the classes. Coarse scores are upsampled by
transposed convs (no bias) initialised to bilinear kernels (frozen by the task), fused with 1x1
score layers on pool4 / pool3 / pool2 (initialised to zero), and cropped back to the input size.

Crop offsets. With conv1_1's padding of 100, position i of a map at stride s (pool_k, or score_fr
at stride 32 after fc6's 3-pixel valid margin) is centred on input pixel
  pool2: 4i - 97.5, pool3: 8i - 95.5, pool4: 16i - 91.5, score_fr: 32i + 12.5,
and a transposed conv of kernel 2s and stride s maps its input position i to output position
s i + (2s - 1) / 2. Equating centres gives the reference's offsets and the 4s ones:

  variant  fusion (upsampled score + cropped skip score)           final upsampling, crop
  32s      -                                                       upscore k64 s32, 19
  16s      upscore2(score_fr) k4 s2 + score_pool4[5:]              upscore16 k32 s16, 27
  8s       ... upscore_pool4 k4 s2 + score_pool3[9:]                upscore8 k16 s8, 31
  4s       ... upscore_pool3 k4 s2 + score_pool2[17:]               upscore4 k8 s4, 33

(4s: upscore_pool3's output r is centred on 4r - 29.5 and score_pool2's r + 17 on 4r - 29.5;
upscore4's output p on p - 33.) The same crops work for every input size.

Parameter tree (pytorch-fcn names; PyTorch `name.weight` [out, in, kh, kw] -> `name/kernel` by
`transpose(2, 3, 1, 0)`, for the transposed convs too since they use `transpose_kernel=True`):

  vgg/conv1_1 ... vgg/conv5_3    VGG16 trunk (`cpjax.models.vgg`)
  fc6, fc7                       7x7 512 -> 4096, 1x1 4096 -> 4096 (pretrained: VGG16's
                                 classifier.0 / classifier.3 reshaped to convs)
  score_fr                       1x1 4096 -> K, zero init
  score_pool4, score_pool3, score_pool2   1x1 -> K, zero init (16s+, 8s+, 4s)
  upscore | upscore2, upscore16 | upscore2, upscore_pool4, upscore8 |
  upscore2, upscore_pool4, upscore_pool3, upscore4        transposed convs, kernel only

Choices: dropout is element-wise (Caffe's Dropout layer; pytorch-fcn uses channel-wise
Dropout2d, which does not change the weights); fc6/fc7 without pretrained weights start from
flax's default initialiser (pytorch-fcn zeroes them, expecting VGG16 weights to be copied in).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cpjax.layers import ConvTranspose, patch_matmul_conv
from cpjax.models.vgg import VGG16, WIDTHS, caffe_preprocess

Dtype = Any

VARIANTS = ("32s", "16s", "8s", "4s")
FIRST_PADDING = 100
# Skip fusions of each variant: (pool, score layer, its crop offset, upscore feeding the fusion).
_FUSIONS = (("pool4", "score_pool4", 5, "upscore2"),
            ("pool3", "score_pool3", 9, "upscore_pool4"),
            ("pool2", "score_pool2", 17, "upscore_pool3"))
# Final upsampling of each variant: (layer name, stride, crop offset); the kernel is 2 * stride.
_FINAL = {"32s": ("upscore", 32, 19), "16s": ("upscore16", 16, 27),
          "8s": ("upscore8", 8, 31), "4s": ("upscore4", 4, 33)}


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
  """Bilinear upsampling kernel of pytorch-fcn's `get_upsampling_weight`, flax layout.

  Channel c maps to channel c only; spatially the outer product of the triangle
  1 - |i - center| / factor with factor = ceil(size / 2) and center = factor - 1 (odd size) or
  factor - 0.5 (even size). With size = 2 * stride it is bilinear interpolation.

  Returns:
    float32 [size, size, channels, channels].
  """
  factor = (size + 1) // 2
  center = factor - 1 if size % 2 == 1 else factor - 0.5
  tri = 1.0 - np.abs(np.arange(size) - center) / factor
  return np.einsum("i,j,cd->ijcd", tri, tri, np.eye(channels)).astype(np.float32)


def _bilinear_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32):
  del key  # deterministic
  size, _, channels, _ = shape
  return jnp.asarray(bilinear_kernel(size, channels), dtype)


def crop(x: jax.Array, offset: int, height: int, width: int) -> jax.Array:
  """x[:, offset:offset + height, offset:offset + width], checked to lie inside x.

  Args:
    x: [B, H, W, C].

  Returns:
    [B, height, width, C].
  """
  if offset + height > x.shape[1] or offset + width > x.shape[2]:
    raise ValueError(f"crop of {height}x{width} at offset {offset} does not fit in a "
                     f"{x.shape[1]}x{x.shape[2]} map")
  return x[:, offset:offset + height, offset:offset + width]


class FCN(nn.Module):
  """FCN-32s / 16s / 8s / 4s.

  Attributes:
    num_classes: K (21 for PASCAL VOC: background + 20 classes).
    variant: one of `VARIANTS`.
    widths: VGG16 block widths (`cpjax.models.vgg.WIDTHS`; narrower for tests and demos).
    fc_width: width of fc6 and fc7 (4096).
    dropout_rate: after fc6 and fc7 (0.5), in training only.
    dtype: compute dtype (scores are returned in float32).
    param_dtype: parameter dtype.
  """
  num_classes: int = 21
  variant: str = "8s"
  widths: tuple[int, ...] = WIDTHS
  fc_width: int = 4096
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _conv(self, features: int, kernel: int, name: str, zero: bool = False) -> nn.Conv:
    init = {"kernel_init": nn.initializers.zeros} if zero else {}
    return nn.Conv(features, (kernel, kernel), padding="VALID", dtype=self.dtype,
                   param_dtype=self.param_dtype, conv_general_dilated=patch_matmul_conv,
                   name=name, **init)

  def _upscore(self, stride: int, name: str) -> ConvTranspose:
    return ConvTranspose(self.num_classes, (2 * stride, 2 * stride), strides=(stride, stride),
                            padding="VALID", use_bias=False, transpose_kernel=True,
                            kernel_init=_bilinear_init, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, image: jax.Array, *, train: bool = False) -> jax.Array:
    """Per-pixel class scores.

    Args:
      image: [B, H, W, 3] RGB in [0, 1] (any H, W >= 1); converted by `caffe_preprocess`.
      train: dropout on (needs the 'dropout' rng).

    Returns:
      [B, H, W, K] float32 unnormalised scores.
    """
    if self.variant not in VARIANTS:
      raise ValueError(f"FCN variant is {self.variant!r}; use one of {', '.join(VARIANTS)}")
    height, width = image.shape[1:3]
    feats = VGG16(first_padding=FIRST_PADDING, ceil_mode=True, dtype=self.dtype,
                  param_dtype=self.param_dtype, widths=tuple(self.widths), name="vgg")(
                      caffe_preprocess(image.astype(jnp.float32)).astype(self.dtype))
    h = feats["pool5"]
    for name, kernel in (("fc6", 7), ("fc7", 1)):
      h = nn.relu(self._conv(self.fc_width, kernel, name)(h))
      h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    h = self._conv(self.num_classes, 1, "score_fr", zero=True)(h)
    for pool, score_name, offset, up_name in _FUSIONS[:VARIANTS.index(self.variant)]:
      h = self._upscore(2, up_name)(h)
      skip = self._conv(self.num_classes, 1, score_name, zero=True)(feats[pool])
      h = h + crop(skip, offset, h.shape[1], h.shape[2])
    name, stride, offset = _FINAL[self.variant]
    h = self._upscore(stride, name)(h)
    return crop(h, offset, height, width).astype(jnp.float32)
