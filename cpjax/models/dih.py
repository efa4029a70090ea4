"""Deep image harmonization networks: DIH (Tsai et al. 2017), iDIH and iDIH-HRNet (Sofiiuk et al.).

All networks take the composite in the model's normalised input space and the foreground mask,
NHWC, and predict the harmonised image in the same space (`cpjax.tasks.harmonization` picks the
space: ImageNet mean/std with the mask in [0, 1] for iDIH, the Caffe deploy net's BGR space for
DIH, `caffe_inputs`).

Layer specs follow the reference implementations, so their released weights map one to one onto
these parameter trees:

- `ConvEncoder` / `DeconvDecoder` / `IDIH` mirror saic-vul/image_harmonization's `ConvEncoder`,
  `DeconvDecoder` and `DeepImageHarmonization`: encoder blocks conv k4 s2 -> (BatchNorm) -> ELU,
  channels ch, ch, 2ch, 2ch, 4ch, ... (doubled on every even block from block 2, capped at
  `max_channels`), the last block unpadded; decoder blocks transposed conv k4 s2 -> BatchNorm ->
  ELU with the encoder's channels in reverse and ch / 2 last, the first unpadded; skips ADDED.
  iDIH adds the blending head of the foreground-aware paper (eq. 1):
  a = sigmoid(3 conv1x1(x)), out = a * image + (1 - a) * conv1x1_rgb(x).
- `DIH` mirrors the Caffe deploy net of wasidennis/DeepHarmonization with its scene-parsing
  decoder (deploy_512.prototxt, the net of the released harmonize_iter_200000.caffemodel;
  `cpjax.convert.dih_caffe` converts it).
- `IDIHHRNet` joins the 128-channel OCR features of the foreground-aware HRNetV2
  (`cpjax.models.hrnet.HRNetOCR`) to the iDIH encoder: at one position, or as a feature pyramid
  (`FeaturePyramid`, the reference's 'V2p' models) at up to four consecutive positions.

PyTorch `ConvTranspose2d(k, s, p)` (and Caffe's Deconvolution) equals `lax.conv_transpose` with
explicit padding k - 1 - p per side (p = 1 -> 2, p = 0 -> 3) and a spatially flipped kernel with
in/out swapped (flax stores `ConvTranspose` kernels [kh, kw, in, out], not transposed): a
converter flips and swaps.

Initialisation follows saic-vul's (`XavierGluon(rnd_type='gaussian', magnitude=2)`): weights
N(0, 2 / fan_avg), zero biases; BatchNorm (`cpjax.layers.BatchNorm`, PyTorch's running averages)
scale 1, bias 0, momentum 0.1 (PyTorch) = 0.9 here, epsilon 1e-5 (Caffe's BatchNorm default too).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpjax.layers import BatchNorm, ConvTranspose, conv_general_dilated
from cpjax.models import vgg
from cpjax.models.hrnet import HRNetOCR
from cpjax.ops.geometry import resize_bilinear_align_corners

Dtype = Any

KERNEL_INIT = nn.initializers.variance_scaling(2.0, "fan_avg", "normal")
BN_MOMENTUM, BN_EPSILON = 0.9, 1e-5


def _batch_norm(dtype: Dtype, param_dtype: Dtype, train: bool, name: str = "bn") -> BatchNorm:
  """BatchNorm with PyTorch's defaults; under jit with a sharded batch the batch statistics are
  means over the whole global batch (synchronised BatchNorm for free)."""
  return BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                      dtype=dtype, param_dtype=param_dtype, name=name)


class ConvBlock(nn.Module):
  """conv (with bias) -> optional BatchNorm -> ELU (reference `ConvBlock`): the encoder's blocks
  are k4 s2 (padding 1, the last 0), the feature pyramid's k1 s1 p0 and k3 s1 p1.

  Attributes:
    features: output channels.
    padding: PyTorch-style symmetric padding: with k4 s2, 1 halves H and W; 0 gives (H - 4) / 2 + 1.
    norm: BatchNorm after the conv (sub-module 'bn').
    kernel: square kernel size.
    strides: stride in H and W.
  """
  features: int
  padding: int = 1
  norm: bool = True
  kernel: int = 4
  strides: int = 2
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, C] -> [B, (H + 2 padding - kernel) // strides + 1, ..., features]."""
    p, k, s = self.padding, self.kernel, self.strides
    x = nn.Conv(self.features, (k, k), strides=(s, s), padding=((p, p), (p, p)),
                kernel_init=KERNEL_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                conv_general_dilated=conv_general_dilated, name="conv")(x)
    if self.norm:
      x = _batch_norm(self.dtype, self.param_dtype, train)(x)
    return nn.elu(x)


class DeconvBlock(nn.Module):
  """transposed conv k4 s2 (PyTorch padding 1: 2H; padding 0: 2H + 2) -> BatchNorm -> ELU.

  Attributes:
    features: output channels.
    padding: PyTorch `ConvTranspose2d` padding (1 or 0).
    norm: BatchNorm after the transposed conv (sub-module 'bn').
  """
  features: int
  padding: int = 1
  norm: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, C] -> [B, 2H + 2 - 2 * padding, ..., features]."""
    q = 3 - self.padding  # lax padding k - 1 - p
    x = ConvTranspose(self.features, (4, 4), strides=(2, 2), padding=((q, q), (q, q)),
                         kernel_init=KERNEL_INIT, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="deconv")(x)
    if self.norm:
      x = _batch_norm(self.dtype, self.param_dtype, train)(x)
    return nn.elu(x)


def encoder_channels(depth: int, ch: int = 64, max_channels: int = 512) -> list[int]:
  """Output channels of the encoder blocks: ch, ch, then doubled on every even block (capped).

  >>> encoder_channels(7)
  [64, 64, 128, 128, 256, 256, 512]
  """
  channels = [ch, ch]
  for block in range(2, depth):
    channels.append(min(2 * channels[-1], max_channels) if block % 2 == 0 else channels[-1])
  return channels[:depth]


class ConvEncoder(nn.Module):
  """The DIH / iDIH encoder: `depth` ConvBlocks 'block0' ... 'block{depth-1}'.

  Attributes:
    depth: number of blocks (7 at 256 px, 8 at 512 px for iDIH; the input side must be
      2**(depth + 1) for the unpadded last block to give 1x1).
    ch: channels of the first block.
    max_channels: cap of the channel doubling.
    batchnorm_from: blocks >= this index have BatchNorm (0: all; iDIH: 2).
    last_padding: padding of the last block (0 in the reference; 1 in the Caffe DIH).
    backbone_join_at: the first backbone feature map is concatenated to the OUTPUT of this
      block (the next block takes its channels + the map's), map k to the output of block
      backbone_join_at + k (the reference's connectors in 'cat' mode); -1 = no backbone. The
      reference's `backbone_from` is this index + 1 (2 at 256 px, 3 with a half-size backbone
      input).
  """
  depth: int
  ch: int = 64
  max_channels: int = 512
  batchnorm_from: int = 0
  last_padding: int = 0
  backbone_join_at: int = -1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, backbone_features: Sequence[jax.Array] = (),
               train: bool = False) -> list[jax.Array]:
    """Encodes.

    Args:
      x: [B, H, W, C_in] (4 channels: normalised image + mask).
      backbone_features: maps [B, h_k, w_k, F_k], map k at the resolution of block
        backbone_join_at + k's output; at least one when backbone_join_at >= 0, none when -1,
        and only for blocks that have a next block.
      train: BatchNorm uses batch statistics and updates 'batch_stats'.

    Returns:
      The `depth` block outputs, block 0 first: [B, H / 2**(i + 1), ..., channels[i]].
    """
    join, n = self.backbone_join_at, len(backbone_features)
    if (join >= 0) != (n > 0) or join + n > self.depth - 1:
      raise ValueError(f"ConvEncoder: backbone_join_at={join} with {n} backbone_features; "
                       f"give 1 to {self.depth - 1 - join} maps (none with -1), one per block "
                       f"from {join} to {self.depth - 2}.")
    outputs = []
    for i, features in enumerate(encoder_channels(self.depth, self.ch, self.max_channels)):
      x = ConvBlock(features, padding=self.last_padding if i == self.depth - 1 else 1,
                    norm=i >= self.batchnorm_from, dtype=self.dtype,
                    param_dtype=self.param_dtype, name=f"block{i}")(x, train)
      outputs.append(x)
      if 0 <= i - join < n:
        joined = backbone_features[i - join]
        if joined.shape[:-1] != x.shape[:-1]:
          raise ValueError(f"ConvEncoder: backbone_features[{i - join}] is {joined.shape} but "
                           f"block {i}'s output is {x.shape}; give maps of the block's size.")
        x = jnp.concatenate([x, joined.astype(x.dtype)], axis=-1)
    return outputs


class DeconvDecoder(nn.Module):
  """The iDIH decoder: 'block0' ... 'block{depth-1}' DeconvBlocks with added encoder skips, then
  the output head: 'to_rgb' (1x1 -> 3) and, with `image_fusion`, 'conv_attention' (1x1 -> 1).

  Attributes:
    depth: number of blocks (the encoder's depth).
    ch, max_channels: the encoder's (the channels mirror `encoder_channels`, then ch / 2).
    image_fusion: the iDIH blending head; False: out = to_rgb(x) (plain DIH256).
  """
  depth: int
  ch: int = 64
  max_channels: int = 512
  image_fusion: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, encoder_outputs: Sequence[jax.Array], image: jax.Array,
               train: bool = False) -> jax.Array:
    """Decodes.

    Args:
      encoder_outputs: the encoder's block outputs, block 0 first.
      image: [B, H, W, 3] the normalised composite (blended in by the attention map).
      train: BatchNorm mode.

    Returns:
      [B, H, W, 3] prediction in the normalised space (float32).
    """
    channels = encoder_channels(self.depth, self.ch, self.max_channels)
    out_channels = channels[-2::-1] + [channels[0] // 2]
    skips = list(encoder_outputs[-2::-1]) + [None]
    x = encoder_outputs[-1]
    for d, (features, skip) in enumerate(zip(out_channels, skips)):
      x = DeconvBlock(features, padding=0 if d == 0 else 1, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=f"block{d}")(x, train)
      if skip is not None:
        x = x + skip

    def conv1x1(features: int, name: str) -> nn.Conv:
      return nn.Conv(features, (1, 1), kernel_init=KERNEL_INIT, dtype=self.dtype,
                     param_dtype=self.param_dtype, conv_general_dilated=conv_general_dilated,
                     name=name)

    rgb = conv1x1(3, "to_rgb")(x).astype(jnp.float32)
    if not self.image_fusion:
      return rgb
    attention = jax.nn.sigmoid(3.0 * conv1x1(1, "conv_attention")(x).astype(jnp.float32))
    return attention * image.astype(jnp.float32) + (1.0 - attention) * rgb


class IDIH(nn.Module):
  """iDIH (foreground-aware paper sec. 3.1): fully convolutional DIH + blending head.

  Reference variants: improved_dih256 = depth 7, batchnorm_from 2, image_fusion; improved_dih512
  = depth 8; dih256 = depth 7, batchnorm_from 0, no image fusion.

  Attributes:
    depth: encoder/decoder depth; the input side must be 2**(depth + 1) (256 px: 7).
    ch, max_channels, batchnorm_from: see `ConvEncoder`.
    image_fusion: the blending head (eq. 1).
    backbone_join_at: block whose output gets the first backbone feature map concatenated, the
      next blocks the next maps (-1: none); see `ConvEncoder`.
  """
  depth: int = 7
  ch: int = 64
  max_channels: int = 512
  batchnorm_from: int = 2
  image_fusion: bool = True
  backbone_join_at: int = -1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array,
               backbone_features: Sequence[jax.Array] = (), train: bool = False) -> jax.Array:
    """Harmonises.

    Args:
      image: [B, H, W, 3] normalised composite, H = W = 2**(depth + 1).
      mask: [B, H, W, 1] foreground mask in [0, 1].
      backbone_features: maps [B, H / 2**(j + k + 1), W / 2**(j + k + 1), F_k], k = 0, 1, ...,
        with j = backbone_join_at; none without a backbone.
      train: BatchNorm mode (batch statistics + 'batch_stats' updates when True).

    Returns:
      [B, H, W, 3] float32 prediction in the normalised space.
    """
    x = jnp.concatenate([image, mask.astype(image.dtype)], axis=-1).astype(self.dtype)
    outputs = ConvEncoder(self.depth, self.ch, self.max_channels, self.batchnorm_from,
                          last_padding=0, backbone_join_at=self.backbone_join_at,
                          dtype=self.dtype, param_dtype=self.param_dtype,
                          name="encoder")(x, backbone_features, train)
    return DeconvDecoder(self.depth, self.ch, self.max_channels, self.image_fusion,
                         dtype=self.dtype, param_dtype=self.param_dtype,
                         name="decoder")(outputs, image, train)


DEPLOY_MASK_OFFSET = 128.0   # the deploy net's mask input: mask on 0..255 minus 128


def caffe_inputs(image: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The DIH deploy net's input space (wasidennis/DeepHarmonization demo.py).

  Args:
    image: [..., 3] RGB in [0, 1].
    mask: [..., 1] foreground in [0, 1].

  Returns:
    (BGR on 0..255 minus the Caffe ImageNet mean (`cpjax.models.vgg.CAFFE_MEAN_BGR`, equal to
    the demo's (104.00699, 116.66877, 122.67892) to 5e-6), mask * 255 - 128 in [-128, 127]).
  """
  offset = jnp.asarray(DEPLOY_MASK_OFFSET, mask.dtype)
  return vgg.caffe_preprocess(image), mask * jnp.asarray(255.0, mask.dtype) - offset


def caffe_to_rgb(bgr: jax.Array) -> jax.Array:
  """Inverse of `caffe_inputs` for the image, as the demo de-normalises 'output-h': add the mean,
  BGR -> RGB, / 255. [..., 3] -> [..., 3] RGB on the [0, 1] scale (not clipped)."""
  mean = jnp.asarray(vgg.CAFFE_MEAN_BGR, bgr.dtype)
  return ((bgr + mean) / jnp.asarray(255.0, bgr.dtype))[..., ::-1]


class _TsaiDecoder(nn.Module):
  """One DIH decoder: 'deconv{k}' for k = depth - 1 ... 0 (DeconvBlocks with channels[k]) with
  the encoder output conv{k} ADDED after each, then a head.

  Heads (deploy_512.prototxt):
    rgb      'output': transposed conv k4 s2 p1 to `out_features`, no BatchNorm ('output-h').
    parsing  'head': DeconvBlock k4 s2 p1 to channels[0] (BatchNorm, ELU), then 'classifier':
             1x1 conv to `out_features` classes ('output-seg').

  Attributes:
    channels: encoder channels (deconv{k} has channels[k], so the skip conv{k} adds).
    out_features: 3 (harmonisation) or the number of parsing classes.
    from_fc: the input is the 1x1 fc7 bottleneck: deconv{depth-1} is unpadded (1 -> 4 px).
      Otherwise the input is the last encoder output itself and decoding starts at deconv{depth-2}.
    parsing_head: the parsing head instead of the rgb one.
  """
  channels: Sequence[int]
  out_features: int
  from_fc: bool
  parsing_head: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, encoder_outputs: Sequence[jax.Array],
               side: Sequence[jax.Array] | None = None,
               train: bool = False) -> tuple[jax.Array, list[jax.Array]]:
    """Decodes.

    Args:
      x: the bottleneck: [B, 1, 1, F] (from_fc) or the last encoder output.
      encoder_outputs: encoder block outputs, block 0 first.
      side: features concatenated (after this decoder's own) to the input of each deconv level
        after the first: the parsing decoder's level outputs, deepest first (the head reads
        this decoder's last level alone); or None.
      train: BatchNorm mode.

    Returns:
      (output [B, H, W, out_features] float32, the level outputs after each skip, deepest first).
    """
    depth = len(self.channels)
    levels = range(depth - 1, -1, -1) if self.from_fc else range(depth - 2, -1, -1)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = []
    for n, k in enumerate(levels):
      if side is not None and n > 0:
        x = jnp.concatenate([x, side[n - 1]], axis=-1)
      x = DeconvBlock(self.channels[k], padding=0 if (self.from_fc and n == 0) else 1,
                      name=f"deconv{k}", **kw)(x, train)
      x = x + encoder_outputs[k]
      features.append(x)
    if self.parsing_head:
      x = DeconvBlock(self.channels[0], padding=1, name="head", **kw)(x, train)
      out = nn.Conv(self.out_features, (1, 1), kernel_init=KERNEL_INIT, name="classifier",
                    conv_general_dilated=conv_general_dilated, **kw)(x)
    else:
      out = ConvTranspose(self.out_features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                          kernel_init=KERNEL_INIT, name="output", **kw)(x)
    return out.astype(jnp.float32), features


class DIH(nn.Module):
  """Deep Image Harmonization (Tsai et al. 2017) with the joint scene-parsing decoder, as the
  released Caffe net (deploy_512.prototxt) builds it.

  Encoder conv0-6 (k4 s2 p1, BatchNorm + ELU everywhere; 512 px -> 4x4x512), the fully
  connected bottleneck fc7 (flattened 4x4x512 -> 1024, no activation), reshaped to 1x1x1024.
  Scene-parsing decoder: deconv6 (1 -> 4 px) ... deconv0 with summed encoder skips
  ('skip{k}-seg'), then the parsing head (transposed conv to 64 + BatchNorm + ELU, 1x1 conv to
  `parsing_classes`). Harmonisation decoder: the same deconv levels; the input of every level
  after deconv6 is its previous level concatenated with the parsing decoder's output at the same
  level ('concat-res{k}' = [skip{k}-h, skip{k}-seg] feeds deconv{k-1}), and the 'output'
  transposed conv to RGB reads the last level skip0-h alone (the paper: "except for the last
  layer"). The parsing decoder does not see the harmonisation features.

  Without the fc bottleneck (`fc_features=0`, fully convolutional; a choice, the deploy net has
  fc7) decoding starts from conv6's output at deconv5. With `parsing_classes=0` there is no
  parsing decoder: deploy_skip_all_512.prototxt ('DIH w/o semantics').

  Attributes:
    depth: encoder convs (7: conv0-6 for 512 px input; the side must be 2**(depth + 2) with fc).
    ch, max_channels: channels as `encoder_channels`.
    fc_features: width of fc7 (1024); 0 = no fc bottleneck.
    parsing_classes: classes of the scene-parsing decoder (26 = top-25 ADE20K labels + other);
      0 = no parsing decoder.
  """
  depth: int = 7
  ch: int = 64
  max_channels: int = 512
  fc_features: int = 1024
  parsing_classes: int = 26
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array | None]:
    """Harmonises (and parses).

    Args:
      image: [B, H, W, 3] normalised composite.
      mask: [B, H, W, 1] foreground mask in the same space (`caffe_inputs` for the deploy
        net's weights).
      train: BatchNorm mode.

    Returns:
      (prediction [B, H, W, 3] float32 in the normalised space,
       parsing logits [B, H, W, parsing_classes] float32, or None without a parsing decoder).
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = jnp.concatenate([image, mask.astype(image.dtype)], axis=-1).astype(self.dtype)
    outputs = ConvEncoder(self.depth, self.ch, self.max_channels, batchnorm_from=0,
                          last_padding=1, name="encoder", **kw)(x, train=train)
    bottleneck = outputs[-1]
    if self.fc_features:
      flat = bottleneck.reshape(bottleneck.shape[0], -1)
      bottleneck = nn.Dense(self.fc_features, kernel_init=KERNEL_INIT, name="fc7",
                            **kw)(flat)[:, None, None, :]
    channels = encoder_channels(self.depth, self.ch, self.max_channels)
    from_fc = bool(self.fc_features)
    logits, side = None, None
    if self.parsing_classes:
      logits, side = _TsaiDecoder(channels, self.parsing_classes, from_fc, parsing_head=True,
                                  name="parsing_decoder", **kw)(bottleneck, outputs, None, train)
    pred, _ = _TsaiDecoder(channels, 3, from_fc, name="harmonization_decoder",
                           **kw)(bottleneck, outputs, side, train)
    return pred, logits


PYRAMID_MAX_LEVELS = 4   # reference: one pyramid map per HRNet branch at most


class FeaturePyramid(nn.Module):
  """Feature pyramid on the OCR features (reference `MaxPoolDownSize`, the 'backbone.downsize'
  of its 'V2p' models): 'reduce_conv' = ConvBlock k1 s1 p0 (C -> channels, BatchNorm, ELU); level
  i = ConvBlock 'convs_{i}' (k3 s1 p1, channels -> channels, BatchNorm, ELU) applied to the
  REDUCED map max-pooled (2x2, stride 2, floor) i times: the levels do not feed one another.

  Parameter names mirror the reference: 'reduce_conv/{conv, bn}' is reduce_conv.block.{0, 1},
  'convs_{i}/{conv, bn}' is convs.{i}.block.{0, 1} (a torch ModuleList as flax names a list).

  Attributes:
    channels: channels of the reduction and of every level (reference `pyramid_channels`).
    levels: number of maps (reference `pyramid_depth`).
  """
  channels: int
  levels: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
    """[B, H, W, C] -> `levels` maps [B, H // 2**i, W // 2**i, channels], level 0 first."""
    block = lambda kernel, name: ConvBlock(  # noqa: E731
        self.channels, padding=kernel // 2, kernel=kernel, strides=1, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    x = block(1, "reduce_conv")(x, train)
    outputs = []
    for i in range(self.levels):
      if i:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      outputs.append(block(3, f"convs_{i}")(x, train))
    return outputs


class IDIHHRNet(nn.Module):
  """iDIH-HRNet (foreground-aware paper sec. 3.3, Fig. 3): iDIH whose encoder takes the
  128-channel OCR features of the foreground-aware HRNetV2 ('backbone').

  The backbone sees the same normalised image and mask; its features (1/4 resolution) are
  concatenated to the output of encoder block 1 (1/4 resolution), so block 2 takes 64 + 128
  channels. With `downsize_backbone_input` (the reference's 512-px variants) the backbone gets
  the image and mask halved (bilinear, align_corners=True as the reference) and its 1/8-res
  features join after block 2.

  With `pyramid_channels` > 0 (the paper's "pass features using feature pyramid" ablation, the
  reference's hrnet18s_v2p_idih256 / hrnet18_v2p_idih256 with 256 channels) the OCR features
  first go through a `FeaturePyramid` ('downsize') whose level k is concatenated to the output
  of encoder block join + k (join = 1, or 2 with the half-size backbone input), each at that
  block's resolution. The paper only says "a variant of feature pyramid as in HRNetV2p, passed
  to the encoder layers with appropriate resolutions"; the choices it leaves open are the
  reference's:
  - built from the 128-channel OCR output (HRNetV2p average-pools the concatenated HRNet
    branches instead) by a 1x1 reduction, 2x2 max pooling and one 3x3 conv per level, all with
    BatchNorm and ELU like the iDIH blocks;
  - min(depth - 1 - join, 4) levels: one per encoder block output from block join on that feeds
    another block, at most 4. At 256 px (depth 7) levels at 64, 32, 16, 8 px join the outputs of
    blocks 1-4 (blocks 2-5 take 256 more channels); the 4x4 output of block 5 gets none;
  - joined by concatenation (as the single map), to the encoder only;
  - the pyramid trains at the full learning rate (it is not part of the ImageNet trunk) and
    is initialised like the rest (N(0, 2 / fan_avg) kernels, zero biases).

  Attributes:
    width: HRNetV2 variant 'w18s', 'w18' or 'w32'.
    depth, ch, max_channels, batchnorm_from: the iDIH's (7, 64, 512, 2 at 256 px).
    downsize_backbone_input: half-size backbone input (512-px models).
    pyramid_channels: channels of every feature-pyramid map (reference 256); 0 = no pyramid,
      the single OCR map joins after block `join`.
    mask_fusion: the backbone's mask-fusion conv (`HRNetOCR.mask_fusion`); False is the
      reference's hrnet18s_no_mask_idih ablation.
  """
  width: str = "w18s"
  depth: int = 7
  ch: int = 64
  max_channels: int = 512
  batchnorm_from: int = 2
  downsize_backbone_input: bool = False
  pyramid_channels: int = 0
  mask_fusion: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array, mask: jax.Array, train: bool = False) -> jax.Array:
    """[B, H, W, 3] normalised composite + [B, H, W, 1] mask -> [B, H, W, 3] prediction."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    b_image, b_mask = image, mask
    if self.downsize_backbone_input:
      half = (image.shape[1] // 2, image.shape[2] // 2)
      b_image = resize_bilinear_align_corners(image, half)
      b_mask = resize_bilinear_align_corners(mask, half)
    features = [HRNetOCR(self.width, self.mask_fusion, name="backbone", **kw)(b_image, b_mask,
                                                                            train)]
    join = 2 if self.downsize_backbone_input else 1
    if self.pyramid_channels > 0:
      levels = min(self.depth - 1 - join, PYRAMID_MAX_LEVELS)
      features = FeaturePyramid(self.pyramid_channels, levels, name="downsize",
                                **kw)(features[0], train)
    return IDIH(self.depth, self.ch, self.max_channels, self.batchnorm_from, image_fusion=True,
                backbone_join_at=join, name="model", **kw)(image, mask, features, train)
