"""HRNetV2 + OCR, made foreground-aware by mask fusion: the backbone of iDIH-HRNet.

Sofiiuk et al., "Foreground-aware Semantic Representations for Image Harmonization" (sec. 3.2,
3.3, fig. 3) on HRNetV2 (Wang et al.) with the OCR head (Yuan et al.); the structure follows the
reference code (saic-vul/image_harmonization `iharm/model/modeling/hrnet_ocr.py`, `ocr.py`,
`backboned/hrnet.py`, `backboned/ih_model.py`), whose released weights it is meant to load.

  image [B, H, W, 3] (ImageNet-normalised), mask [B, H, W, 1]
  -> stem: conv1 3x3 s2 -> bn1 -> ReLU, + mask_conv(mask), conv2 3x3 s2 -> bn2 -> ReLU   (1/4)
  -> layer1: bottlenecks 64 -> 256; stages 2-4 with 2, 3, 4 branches of widths w * 2^i
  -> the 4 branches upsampled to 1/4 (bilinear, align_corners) and concatenated: 15 w channels
  -> OCR: 3x3 conv -> 128, soft object regions softmax_HW(cat(mask, 1 - mask)) gather 2 region
     vectors, object attention (key channels 64), 1x1 conv 256 -> 128, Dropout2d 0.05
  -> [B, ceil(H / 4), ceil(W / 4), 128]

Variants (`SPECS`): 'w18s' = HRNetV2-W18-Small-v2 (2 bottlenecks in stage 1, 2 basic blocks per
branch, 1/3/2 modules in stages 2/3/4), 'w18' and 'w32' (4 bottlenecks, 4 blocks, 1/4/3 modules).

Parameter tree. The names are the reference's PyTorch state-dict names, a list or Sequential
index being a scope named by the digit, so a converter maps them one to one. Torch key of a
flax path: the components joined by '.', leaf kernel -> weight (transposed HWIO -> OIHW), BN
scale -> weight, bias -> bias, batch_stats mean/var -> running_mean/running_var, with the prefix
of the iDIH-HRNet state dict:

  mask_conv/0/{kernel,bias}, mask_conv/1/scale     mask_conv.*      (conv 1 -> 64 + |scale|)
  hrnet/...                                        backbone.hrnet.* (trunk; ImageNet weights
      conv1, bn1, conv2, bn2,                                        of HRNet-Image-Classification
      layer1/{b}/{conv1,bn1,conv2,bn2,conv3,bn3,downsample/{0,1}},   under the same names)
      transition{s}/{i}/{0,1}  or  transition{s}/{i}/{k}/{0,1},
      stage{s}/{m}/branches/{i}/{b}/{conv1,bn1,conv2,bn2},
      stage{s}/{m}/fuse_layers/{i}/{j}/{0,1}  (j > i)  or  .../{j}/{k}/{0,1}  (j < i)
  ocr_conv3x3/{0,1}                                backbone.hrnet.conv3x3_ocr.{0,1} (renamed)
  ocr_distri_head/object_context_block/{f_pixel,f_object}/{0,1/0,2,3/0},
      .../{f_down,f_up}/{0,1/0}, ocr_distri_head/conv_bn_dropout/{0,1/0}
                                                   backbone.hrnet.ocr_distri_head.*

Learning rates (reference: LRMult on the backbone): the ImageNet trunk ('hrnet') at 0.1x, the
OCR head ('ocr_*') AND the mask-fusion conv ('mask_conv', outside the reference's backbone) at
1x; `param_labels` gives the labels for optax.multi_transform.

Initialisation as the reference's `XavierGluon(rnd_type='gaussian', magnitude=2)`: conv kernels
~ N(0, 2 / fan_avg) (untruncated), biases 0, BN scale 1 / bias 0; the mask-fusion scale 0.1.
BatchNorm as PyTorch's (`cpjax.layers.BatchNorm`: eps 1e-5, momentum 0.1 = 0.9 here, running
variance of the unbiased batch variance); statistics in the 'batch_stats' collection, over the
whole (global) batch under jit.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpjax.layers import BatchNorm, conv_general_dilated_taps, repeated
from cpjax.ops.geometry import resize_bilinear_align_corners

Dtype = Any

# XavierGluon(rnd_type='gaussian', magnitude=2, factor_type='avg') of the reference.
KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_avg", "normal")
TRUNK = "hrnet"            # scope of the ImageNet-pretrained trunk (0.1x learning rate)
OCR_CHANNELS = 128         # reference ocr_width 64: mid channels 2 * 64, the output width
OCR_KEY_CHANNELS = 64
OCR_DROPOUT = 0.05
MASK_CHANNELS = 64         # mask-fusion conv output = conv1's channels
MASK_SCALE_INIT = 0.1


@dataclasses.dataclass(frozen=True)
class HRNetSpec:
  """One HRNetV2 variant.

  Attributes:
    width: channels of the highest-resolution branch; branch i has width * 2^i.
    blocks: bottlenecks in stage 1 and basic blocks per branch in every module.
    modules: number of high-resolution modules in stages 2, 3, 4.
  """
  width: int
  blocks: int
  modules: tuple[int, int, int]

  def branch_channels(self, num_branches: int) -> list[int]:
    return [self.width * 2**i for i in range(num_branches)]


SPECS = {"w18s": HRNetSpec(18, 2, (1, 3, 2)), "w18": HRNetSpec(18, 4, (1, 4, 3)),
         "w32": HRNetSpec(32, 4, (1, 4, 3))}


def _conv(features: int, kernel: int, strides: int, use_bias: bool, dtype: Dtype,
          param_dtype: Dtype, name: str) -> nn.Conv:
  """PyTorch Conv2d(k, stride, padding=k // 2): explicit symmetric padding, so stride-2 maps
  are ceil(H / 2) and sample the same pixels as the reference ('SAME' would pad (0, 1)).

  On CPU the gradients go through `cpjax.layers.conv_general_dilated_taps`: the kernel
  gradient is one matrix product per tap (XLA:CPU's own, a convolution over the whole image fed
  by transposed copies of every activation, made HRNet18's train step (batch 4, 256 px) 6.2 s
  instead of 4.6 s on a 2-core CPU), and the input gradient a plain conv with the flipped
  kernel, which XLA:CPU runs with XNNPACK inside the scanned stages too (HRNet18's step 6.3 ->
  4.3 s in consecutive benchmark runs)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=strides, padding=((pad, pad), (pad, pad)),
                 use_bias=use_bias, kernel_init=KERNEL_INIT, dtype=dtype,
                 param_dtype=param_dtype, conv_general_dilated=conv_general_dilated_taps,
                 name=name)


def _bn(train: bool, dtype: Dtype, param_dtype: Dtype, name: str) -> BatchNorm:
  """PyTorch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (flax: 0.9 of the old value kept)."""
  return BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name)


class ConvBN(nn.Module):
  """conv ('0') -> BatchNorm ('1') [-> ReLU]: torch Sequential(Conv2d, BatchNorm2d[, ReLU]).

  Attributes:
    features: output channels.
    kernel: square kernel size (padding kernel // 2).
    strides: 1 or 2.
    use_bias: conv bias (only the OCR 3x3 conv has one).
    relu: whether a ReLU follows.
  """
  features: int
  kernel: int = 3
  strides: int = 1
  use_bias: bool = False
  relu: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), features]."""
    x = _conv(self.features, self.kernel, self.strides, self.use_bias, self.dtype,
              self.param_dtype, "0")(x)
    x = _bn(train, self.dtype, self.param_dtype, "1")(x)
    return nn.relu(x) if self.relu else x


class DownChain(nn.Module):
  """`len(features)` 3x3 stride-2 ConvBNs named '0', '1', ... (torch Sequential of Sequentials):
  a transition's new branch (ReLU after each) or a fusion path to a lower resolution (ReLU
  after all but the last; the fusion's sum is rectified).

  Attributes:
    features: output channels of each step.
    relu_last: whether the last step has a ReLU.
  """
  features: Sequence[int]
  relu_last: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H / 2^n, W / 2^n, features[-1]] (sizes rounded up at each step)."""
    last = len(self.features) - 1
    for k, features in enumerate(self.features):
      x = ConvBN(features, 3, 2, relu=k < last or self.relu_last, dtype=self.dtype,
                 param_dtype=self.param_dtype, name=str(k))(x, train)
    return x


class BasicBlock(nn.Module):
  """ResNet basic block (torch BasicBlockV1b): conv1 3x3 -> bn1 -> ReLU -> conv2 3x3 -> bn2,
  plus the input (through a 1x1 ConvBN 'downsample' when the channels change), ReLU."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, features]."""
    conv = lambda name: _conv(self.features, 3, 1, False, self.dtype, self.param_dtype, name)
    bn = lambda name: _bn(train, self.dtype, self.param_dtype, name)
    y = nn.relu(bn("bn1")(conv("conv1")(x)))
    y = bn("bn2")(conv("conv2")(y))
    if x.shape[-1] != self.features:
      x = ConvBN(self.features, 1, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="downsample")(x, train)
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """ResNet bottleneck (torch BottleneckV1b, expansion 4): 1x1 conv1 -> bn1 -> ReLU -> 3x3
  conv2 -> bn2 -> ReLU -> 1x1 conv3 (4 planes) -> bn3, plus the input (1x1 ConvBN 'downsample'
  when the channels change), ReLU."""
  planes: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, 4 planes]."""
    conv = lambda f, k, name: _conv(f, k, 1, False, self.dtype, self.param_dtype, name)
    bn = lambda name: _bn(train, self.dtype, self.param_dtype, name)
    out = 4 * self.planes
    y = nn.relu(bn("bn1")(conv(self.planes, 1, "conv1")(x)))
    y = nn.relu(bn("bn2")(conv(self.planes, 3, "conv2")(y)))
    y = bn("bn3")(conv(out, 1, "conv3")(y))
    if x.shape[-1] != out:
      x = ConvBN(out, 1, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="downsample")(x, train)
    return nn.relu(y + x)


class Branches(nn.Module):
  """The parallel branches of a high-resolution module: branch i ('i') is `num_blocks` basic
  blocks ('0', '1', ...) at channels[i], scanned (`cpjax.layers.repeated`) when `scan`."""
  channels: Sequence[int]
  num_blocks: int
  scan: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool) -> list[jax.Array]:
    """xs[i]: [B, H_i, W_i, channels[i]] -> the same shapes."""
    return [repeated(functools.partial(BasicBlock, c, dtype=self.dtype,
                                       param_dtype=self.param_dtype),
                     self.num_blocks, train=train, initializing=self.is_initializing(),
                     name=str(i), scan=self.scan)(x)
            for i, (c, x) in enumerate(zip(self.channels, xs))]


class FuseRow(nn.Module):
  """Multi-resolution fusion into branch `index` (one row of torch `fuse_layers`).

  y_i = ReLU(sum_j f_ij(x_j)): f_ii = identity; j > i (lower resolution): 1x1 ConvBN to
  channels[i] ('j'), then bilinear upsampling with align_corners=True to x_i's size; j < i
  (higher resolution): i - j stride-2 3x3 ConvBNs ('j/k'), channels[j] until the last, which
  gives channels[i], with ReLU between them. Summed in the order j = 0, 1, ... as the reference.
  """
  index: int
  channels: Sequence[int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool) -> jax.Array:
    """xs[j]: [B, H_j, W_j, channels[j]] -> [B, H_i, W_i, channels[i]], i = index."""
    i, target = self.index, xs[self.index]
    total = None
    for j, x in enumerate(xs):
      if j > i:
        x = ConvBN(self.channels[i], 1, dtype=self.dtype, param_dtype=self.param_dtype,
                   name=str(j))(x, train)
        x = resize_bilinear_align_corners(x, target.shape[-3:-1])
      elif j < i:
        steps = [self.channels[j]] * (i - j - 1) + [self.channels[i]]
        x = DownChain(steps, relu_last=False, dtype=self.dtype, param_dtype=self.param_dtype,
                      name=str(j))(x, train)
      total = x if total is None else total + x
    return nn.relu(total)


class FuseLayers(nn.Module):
  """All fusion rows ('0', '1', ...) of a high-resolution module: every branch receives every
  other (HRNetV2 keeps multi-scale outputs in every module)."""
  channels: Sequence[int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool) -> list[jax.Array]:
    return [FuseRow(i, self.channels, dtype=self.dtype, param_dtype=self.param_dtype,
                    name=str(i))(xs, train) for i in range(len(self.channels))]


class HighResolutionModule(nn.Module):
  """Parallel residual branches ('branches') then multi-resolution fusion ('fuse_layers')."""
  channels: Sequence[int]
  num_blocks: int
  scan: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool) -> list[jax.Array]:
    """xs[i]: [B, H_i, W_i, channels[i]] -> the same shapes."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    xs = Branches(self.channels, self.num_blocks, self.scan, name="branches", **kw)(xs, train)
    return FuseLayers(self.channels, name="fuse_layers", **kw)(xs, train)


class Transition(nn.Module):
  """Branches of the next stage from the previous stage's outputs (torch `transition{s}`).

  Existing branch i: kept if its channels agree, else 3x3 ConvBN + ReLU ('i'). New branch i:
  from the lowest-resolution previous output by i + 1 - len(previous) stride-2 3x3 ConvBN +
  ReLU steps ('i/k'), keeping its channels until the last step, which gives channels[i].
  """
  channels: Sequence[int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, xs: Sequence[jax.Array], train: bool) -> list[jax.Array]:
    """xs: previous branches -> len(channels) branches, the new ones at half resolution."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    out = []
    for i, c in enumerate(self.channels):
      if i < len(xs):
        x = xs[i]
        out.append(x if x.shape[-1] == c else
                   ConvBN(c, 3, relu=True, name=str(i), **kw)(x, train))
      else:
        hidden = xs[-1].shape[-1]
        steps = [hidden] * (i - len(xs)) + [c]
        out.append(DownChain(steps, relu_last=True, name=str(i), **kw)(xs[-1], train))
    return out


class HRNetV2(nn.Module):
  """The HRNetV2 trunk with the reference's `additional_features` entry point.

  Attributes:
    spec: the variant (`SPECS`).
    scan: run the modules of a stage, and the basic blocks of a branch, as one scanned block
      each (`cpjax.layers.repeated`): the same variables and results, traced and compiled once
      instead of once per module and block. Measured on a 2-core CPU (XLA:CPU, 256 px, the
      `vs_torch` workloads, both forms compiled and timed alternately in one process):
      HRNet18's inference compiles in 4.1 s instead of 15 s and runs no slower (0.19 s, 0.30
      unrolled); its train step (batch 4) compiles in 56 s instead of 173 s and runs as fast
      (5.15 s per step, 5.32 s unrolled, before the input-gradient change below); W18-small's
      train step compiles and runs the same either way (71.6 / 72.1 s, 3.15 s per step). Scanned
      training used to be slower: inside a loop body XLA:CPU gives a convolution to its
      XNNPACK kernels only in the plain HWIO form, and JAX's gradients of a conv (its kernel
      gradient, and its input gradient, a conv reading the kernel as HWOI) ran on XLA's own
      kernels at 0.1-0.5 GFLOP/s there. `_conv`'s hook writes both gradients in fast forms.
      False: the loops (e.g. to capture every module's intermediates).
  """
  spec: HRNetSpec
  scan: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, additional_features: jax.Array | None,
               train: bool) -> jax.Array:
    """Multi-resolution features concatenated at 1/4 resolution.

    Args:
      x: [B, H, W, 3] ImageNet-normalised image.
      additional_features: None or [B, ceil(H / 2), ceil(W / 2), 64], added after
        conv1 -> bn1 -> ReLU (the mask fusion).
      train: batch statistics (and their update) instead of the running averages.

    Returns:
      [B, ceil(H / 4), ceil(W / 4), 15 width]: the four branches (width * 1, 2, 4, 8 channels)
      upsampled bilinearly (align_corners=True) to the first one's size, concatenated.
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    spec = self.spec
    x = nn.relu(_bn(train, name="bn1", **kw)(_conv(64, 3, 2, False, name="conv1", **kw)(x)))
    if additional_features is not None:
      x = x + additional_features
    x = nn.relu(_bn(train, name="bn2", **kw)(_conv(64, 3, 2, False, name="conv2", **kw)(x)))
    repeat = functools.partial(repeated, train=train, initializing=self.is_initializing())
    # layer1's first bottleneck has a 'downsample' the others lack: a loop, not a scan.
    xs = [repeat(functools.partial(Bottleneck, 64, **kw), spec.blocks, name="layer1",
                 scan=False)(x)]
    for s, num_modules in zip((2, 3, 4), spec.modules):
      channels = tuple(spec.branch_channels(s))
      xs = Transition(channels, name=f"transition{s - 1}", **kw)(xs, train)
      module = functools.partial(HighResolutionModule, channels, spec.blocks, self.scan, **kw)
      xs = repeat(module, num_modules, name=f"stage{s}", scan=self.scan)(xs)
    size = xs[0].shape[-3:-1]
    return jnp.concatenate([xs[0]] + [resize_bilinear_align_corners(x, size) for x in xs[1:]],
                           axis=-1)


class NormReLU(nn.Module):
  """BatchNorm ('0') -> ReLU: torch Sequential(BatchNorm2d, ReLU) inside the OCR layers."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    return nn.relu(_bn(train, self.dtype, self.param_dtype, "0")(x))


class Projection(nn.Module):
  """1x1 convs without bias ('0', '2', ...), each followed by NormReLU ('1', '3', ...), then
  optional Dropout2d (index after the last pair; no parameters): OCR's f_pixel, f_object,
  f_down, f_up and conv_bn_dropout.

  Attributes:
    features: output channels of each 1x1 conv.
    dropout: Dropout2d rate (whole channels per example), 0 for none.
  """
  features: Sequence[int]
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """[B, H, W, C] -> [B, H, W, features[-1]]; needs a 'dropout' rng when train and dropout."""
    for k, features in enumerate(self.features):
      x = _conv(features, 1, 1, False, self.dtype, self.param_dtype, str(2 * k))(x)
      x = NormReLU(self.dtype, self.param_dtype, name=str(2 * k + 1))(x, train)
    if self.dropout:
      x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    return x


def spatial_gather(features: jax.Array, regions: jax.Array) -> jax.Array:
  """OCR's object region representations: softmax of each region map over all pixels, then
  the softmax-weighted mean of the features (torch SpatialGather_Module, scale 1).

  Args:
    features: [B, H, W, C].
    regions: [B, H, W, K] region scores (here the resized mask and 1 - mask, in [0, 1]).

  Returns:
    [B, K, 1, C], the dtype of features: one feature vector per region, laid out as the
    reference's [B, C, K, 1] proxy map so that 1x1 convs and BatchNorm see K pixels.
  """
  b, h, w, k = regions.shape
  weights = jax.nn.softmax(regions.reshape(b, h * w, k).astype(jnp.float32), axis=1)
  context = jnp.einsum("bnk,bnc->bkc", weights.astype(features.dtype),
                       features.reshape(b, h * w, -1))
  return context[:, :, None, :]


class ObjectAttentionBlock(nn.Module):
  """OCR object attention (torch ObjectAttentionBlock2D, scale 1): each pixel attends over the
  region vectors, softmax(q k^T / sqrt(key_channels)) v, projected back to the input channels.

  Children: f_pixel (query: two 1x1 conv + BN + ReLU), f_object (key: same, on the regions),
  f_down (value: one), f_up (key_channels -> input channels: one).
  """
  key_channels: int = OCR_KEY_CHANNELS
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, proxy: jax.Array, train: bool) -> jax.Array:
    """x: [B, H, W, C] pixels; proxy: [B, K, 1, C] regions -> [B, H, W, C] context."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x.shape
    keys = (self.key_channels, self.key_channels)
    query = Projection(keys, name="f_pixel", **kw)(x, train).reshape(b, h * w, -1)
    key = Projection(keys, name="f_object", **kw)(proxy, train).reshape(b, -1, self.key_channels)
    value = Projection((self.key_channels,), name="f_down", **kw)(proxy, train)
    value = value.reshape(b, -1, self.key_channels)
    logits = jnp.einsum("bnd,bkd->bnk", query, key).astype(jnp.float32)
    attention = jax.nn.softmax(logits * self.key_channels**-0.5, axis=-1).astype(value.dtype)
    context = jnp.einsum("bnk,bkd->bnd", attention, value).reshape(b, h, w, self.key_channels)
    return Projection((c,), name="f_up", **kw)(context, train)


class SpatialOCR(nn.Module):
  """OCR output (torch SpatialOCR_Module): object context ('object_context_block'),
  concatenated [context, features], 1x1 conv 2C -> C + BN + ReLU + Dropout2d
  ('conv_bn_dropout')."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, proxy: jax.Array, train: bool) -> jax.Array:
    """features: [B, H, W, C]; proxy: [B, K, 1, C] -> [B, H, W, C]."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    context = ObjectAttentionBlock(name="object_context_block", **kw)(features, proxy, train)
    out = jnp.concatenate([context, features], axis=-1)
    return Projection((features.shape[-1],), dropout=OCR_DROPOUT, name="conv_bn_dropout",
                      **kw)(out, train)


class Scale(nn.Module):
  """x * |scale| with a learned scale of shape [1] (torch ScaleLayer, lr_mult 1)."""
  init_value: float
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.constant(self.init_value), (1,),
                       self.param_dtype)
    return x * jnp.abs(scale).astype(x.dtype)


class MaskFusion(nn.Module):
  """Foreground-aware mask fusion (paper sec. 3.2): conv 1 -> 64, 3x3, stride 2, padding 1,
  with bias ('0'), times a learned scale initialised at 0.1 ('1')."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, mask: jax.Array) -> jax.Array:
    """[B, H, W, 1] in {0, 1} -> [B, ceil(H / 2), ceil(W / 2), 64]."""
    x = _conv(MASK_CHANNELS, 3, 2, True, self.dtype, self.param_dtype, "0")(mask)
    return Scale(MASK_SCALE_INIT, self.param_dtype, name="1")(x)


class HRNetOCR(nn.Module):
  """Foreground-aware HRNetV2 + OCR: iDIH-HRNet's pre-trained feature extractor.

  Attributes:
    width: 'w18s', 'w18' or 'w32' (`SPECS`).
    mask_fusion: the mask-fusion conv ('mask_conv'); False: the trunk sees the image alone (the
      reference's mask_fusion='', the paper's "non foreground-aware HRNet"; OCR's object regions
      still come from the mask).
    scan: `HRNetV2.scan`.
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  width: str
  mask_fusion: bool = True
  scan: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    """OCR features of a composite and its foreground mask.

    Args:
      image: [B, H, W, 3] ImageNet-normalised (`cpjax.ops.color.imagenet_normalize`).
      mask: [B, H, W, 1] foreground in {0, 1} (soft values work too).
      train: batch statistics in BatchNorm (updating 'batch_stats': apply with
        mutable=['batch_stats']) and Dropout2d (needs a 'dropout' rng).

    Returns:
      [B, ceil(H / 4), ceil(W / 4), 128] features, the dtype `dtype`.
    """
    if self.width not in SPECS:
      raise ValueError(f"cpjax.models.hrnet: width={self.width!r}; use one of {tuple(SPECS)}.")
    if image.ndim != 4 or image.shape[-1] != 3 or mask.shape != image.shape[:-1] + (1,):
      raise ValueError(f"cpjax.models.hrnet: image {image.shape} and mask {mask.shape}; give "
                       "an image [B, H, W, 3] and a mask [B, H, W, 1] of the same size.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    image, mask = image.astype(self.dtype), mask.astype(self.dtype)
    mask_features = MaskFusion(name="mask_conv", **kw)(mask) if self.mask_fusion else None
    features = HRNetV2(SPECS[self.width], self.scan, name=TRUNK, **kw)(image, mask_features,
                                                                       train)
    features = ConvBN(OCR_CHANNELS, 3, use_bias=True, relu=True, name="ocr_conv3x3",
                      **kw)(features, train)
    regions = resize_bilinear_align_corners(jnp.concatenate([mask, 1.0 - mask], axis=-1),
                                            features.shape[-3:-1])
    proxy = spatial_gather(features, regions)
    return SpatialOCR(name="ocr_distri_head", **kw)(features, proxy, train)


def param_labels(params: Any) -> Any:
  """Optimiser groups of HRNetOCR parameters: 'trunk' under the ImageNet-pretrained 'hrnet'
  scope (reference: 0.1x learning rate), 'head' for the OCR head and the mask-fusion conv
  (1x). Use with optax.multi_transform({'trunk': ..., 'head': ...}, param_labels).

  Args:
    params: HRNetOCR's 'params' collection (or any pytree whose top-level keys are its scopes).

  Returns:
    A pytree of the same structure with 'trunk' / 'head' leaves.
  """
  return {name: jax.tree_util.tree_map(lambda _, n=name: "trunk" if n == TRUNK else "head", sub)
          for name, sub in params.items()}
