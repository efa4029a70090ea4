"""Copy-and-Paste Networks for video inpainting (Lee et al. 2019): alignment, copy, paste.

Layer specs follow the released test code (shleecs/Copy-and-Paste-Networks-for-Deep-Video-
Inpainting, CPNet_test.py) so that its weights can be loaded: plain convs with ReLU, no
normalisation, He init (fan_out, as its `init_He`). Frames are [B, H, W, 3] in [0, 1] (ImageNet
normalisation happens inside, as in the reference); H and W must be multiples of 8
(`pad_to_multiple`). Maps are [B, H, W, 1]: `hole` 1 = missing pixel, `visible` = 1 - hole.

Parameter tree of `CPNet` (flax names; reference state-dict names in brackets,
`module.` prefix and `.conv.0` dropped; PyTorch conv weights [O, I, kh, kw] -> flax
[kh, kw, I, O] by transpose(2, 3, 1, 0), fc.weight [6, 512] -> kernel [512, 6] by .T):
  align_encoder/conv12, conv2, conv23, conv3, conv34, conv4a, conv4b        [A_Encoder.*]
  align_regressor/conv45, conv5a, conv5b, conv56, (conv6a, conv6b), fc     [A_Regressor.*]
  encoder/conv12, conv2, conv23, conv3, value3                              [Encoder.*]
  decoder/conv4, conv5_1, conv5_2, convA4_1 .. convA4_4, conv3c, conv3b, conv3a, conv32,
          conv2, conv21                                                     [Decoder.*]
The released regressor applies conv5a/conv5b a second time where conv6a/conv6b were meant
(`reuse_conv5=True`, the default, reproduces it; its checkpoint's conv6a/conv6b are unused and
are then absent here).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cpjax.layers import conv_general_dilated
from cpjax.ops import geometry
from cpjax.ops.color import imagenet_denormalize, imagenet_normalize

Dtype = Any

# He normal with fan_out (PyTorch kaiming_normal_(mode='fan_out', nonlinearity='relu')).
_HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _conv(features: int, kernel: int, stride: int = 1, dilation: int = 1, *, name: str,
          dtype: Dtype, param_dtype: Dtype) -> nn.Conv:
  """PyTorch Conv2d(k, stride, padding=dilation * (k // 2), dilation): 'same'-style padding."""
  pad = dilation * (kernel // 2)
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                 kernel_init=_HE_FAN_OUT, dtype=dtype, param_dtype=param_dtype,
                 conv_general_dilated=conv_general_dilated, name=name)


def resize_bilinear(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """PyTorch `F.interpolate(mode='bilinear', align_corners=False)`: half-pixel, no antialias.

  Args:
    x: [B, H, W, C].
    size: (h, w).

  Returns:
    [B, h, w, C], x's dtype.
  """
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "linear", antialias=False)


class AlignmentEncoder(nn.Module):
  """A_Encoder: (frame, hole map) resized to `input_size`^2 -> features at 1/8 of it.

  Attributes:
    widths: output channels of conv12 (5x5 s2), conv2, conv23 (s2), conv3, conv34 (s2), conv4a,
      conv4b; reference (64, 64, 128, 128, 256, 256, 256).
    input_size: side of the square the input is resized to (reference 224 -> 28x28 features).
  """
  widths: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256)
  input_size: int = 224
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, frame: jax.Array, hole: jax.Array) -> jax.Array:
    """Args: frame [B, H, W, 3] in [0, 1]; hole [B, H, W, 1] in {0, 1}.

    Returns: [B, s/8, s/8, widths[-1]] with s = input_size.
    """
    x = jnp.concatenate([imagenet_normalize(frame), hole.astype(frame.dtype)], axis=-1)
    x = resize_bilinear(x, (self.input_size, self.input_size)).astype(self.dtype)
    names = ("conv12", "conv2", "conv23", "conv3", "conv34", "conv4a", "conv4b")
    kernels, strides = (5, 3, 3, 3, 3, 3, 3), (2, 1, 2, 1, 2, 1, 1)
    for name, width, k, s in zip(names, self.widths, kernels, strides):
      x = nn.relu(_conv(width, k, s, name=name, dtype=self.dtype, param_dtype=self.param_dtype)(x))
    return x


class AlignmentRegressor(nn.Module):
  """A_Regressor: (target, reference) alignment features -> affine theta [B, 2, 3].

  cat(target, reference) -> conv45 (s2), conv5a, conv5b, conv56 (s2), then conv5a, conv5b again
  (`reuse_conv5`, the released code) or conv6a, conv6b -> global average pool -> fc to 6 numbers
  initialised to the identity (zero weights, bias (1, 0, 0, 0, 1, 0)).

  theta maps normalised target coordinates to normalised reference coordinates
  (`cpjax.ops.geometry.affine_grid_sample`): aligned_reference(p) = reference(theta p).

  Attributes:
    width: channels of every conv (reference 512 = twice the alignment features).
    reuse_conv5: reproduce the released code's reuse of conv5a/conv5b.
  """
  width: int = 512
  reuse_conv5: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, target_feat: jax.Array, ref_feat: jax.Array) -> jax.Array:
    """Args: target_feat, ref_feat [B, h, w, C]. Returns: theta [B, 2, 3] float32."""
    conv = lambda name, stride=1: _conv(self.width, 3, stride, name=name, dtype=self.dtype,  # pylint: disable=unnecessary-lambda-assignment
                                        param_dtype=self.param_dtype)
    x = jnp.concatenate([target_feat, ref_feat], axis=-1).astype(self.dtype)
    x = nn.relu(conv("conv45", 2)(x))
    conv5a, conv5b = conv("conv5a"), conv("conv5b")
    x = nn.relu(conv5b(nn.relu(conv5a(x))))
    x = nn.relu(conv("conv56", 2)(x))
    if self.reuse_conv5:
      x = nn.relu(conv5b(nn.relu(conv5a(x))))
    else:
      x = nn.relu(conv("conv6b")(nn.relu(conv("conv6a")(x))))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    theta = nn.Dense(6, kernel_init=nn.initializers.zeros,
                     bias_init=lambda *_: jnp.asarray(_IDENTITY_THETA, self.param_dtype),
                     dtype=jnp.float32, param_dtype=self.param_dtype, name="fc")(x)
    return theta.reshape(-1, 2, 3).astype(jnp.float32)


class CopyEncoder(nn.Module):
  """Encoder of the copy network: (frame, 1-channel map) -> features at 1/4, no final ReLU.

  Attributes:
    widths: conv12 (5x5 s2), conv2, conv23 (s2), conv3, value3 (no activation); reference
      (64, 64, 128, 128, 128).
  """
  widths: tuple[int, ...] = (64, 64, 128, 128, 128)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, frame: jax.Array, map_: jax.Array) -> jax.Array:
    """Args: frame [B, H, W, 3] in [0, 1]; map_ [B, H, W, 1]. Returns [B, H/4, W/4, widths[-1]]."""
    x = jnp.concatenate([imagenet_normalize(frame), map_.astype(frame.dtype)], axis=-1)
    x = x.astype(self.dtype)
    names = ("conv12", "conv2", "conv23", "conv3")
    for name, width, k, s in zip(names, self.widths[:4], (5, 3, 3, 3), (2, 1, 2, 1)):
      x = nn.relu(_conv(width, k, s, name=name, dtype=self.dtype, param_dtype=self.param_dtype)(x))
    return _conv(self.widths[4], 3, name="value3", dtype=self.dtype,
                 param_dtype=self.param_dtype)(x)


class PasteDecoder(nn.Module):
  """Decoder (paste network): context-matching output at 1/4 -> frame [B, H, W, 3].

  conv4, conv5_1, conv5_2 (3x3 at the input width), dilated 3x3 convA4_1..4 (rates
  `dilations`), conv3c, conv3b, conv3a at 1/4, nearest x2, conv32, conv2, nearest x2, conv21
  (5x5 -> 3, no activation), then ImageNet de-normalisation (not clipped).

  Attributes:
    widths: (conv3b, conv3a, conv32, conv2) outputs; reference (128, 128, 64, 64). The first
      seven convs keep the input width (257 in the reference).
    dilations: reference (2, 4, 8, 16).
  """
  widths: tuple[int, ...] = (128, 128, 64, 64)
  dilations: tuple[int, ...] = (2, 4, 8, 16)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Args: x [B, h, w, C]. Returns [B, 4h, 4w, 3] RGB, roughly in [0, 1] (not clipped)."""
    conv = lambda width, name, k=3, d=1: _conv(width, k, 1, d, name=name, dtype=self.dtype,  # pylint: disable=unnecessary-lambda-assignment
                                               param_dtype=self.param_dtype)
    width = x.shape[-1]
    x = x.astype(self.dtype)
    for name in ("conv4", "conv5_1", "conv5_2"):
      x = nn.relu(conv(width, name)(x))
    for i, rate in enumerate(self.dilations):
      x = nn.relu(conv(width, f"convA4_{i + 1}", d=rate)(x))
    x = nn.relu(conv(width, "conv3c")(x))
    x = nn.relu(conv(self.widths[0], "conv3b")(x))
    x = nn.relu(conv(self.widths[1], "conv3a")(x))
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)      # nearest x2
    x = nn.relu(conv(self.widths[2], "conv32")(x))
    x = nn.relu(conv(self.widths[3], "conv2")(x))
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    x = conv(3, "conv21", k=5)(x)
    return imagenet_denormalize(x.astype(jnp.float32))


def masked_softmax(scores: jax.Array, mask: jax.Array, present: jax.Array | None = None,
                   axis: int = 1) -> jax.Array:
  """The CPN masked softmax over references (paper fig. 5, reference `CM_Module`).

  w_r = exp(s_r m_r - max) m_r / sum_r' exp(s_r' m_r' - max) m_r', where the max runs over the
  masked scores s m of the present references; where no reference is visible (sum < 1e-4) the
  denominator is increased by 1, so the weights are 0 there.

  Args:
    scores: [B, T, ...] similarities (broadcast against mask).
    mask: [B, T, ...] visibility in {0, 1}.
    present: [T] bool, references that exist (False = padding of a fixed-size reference set:
      weight 0 and excluded from the max; with none present every weight is 0); None = all.
    axis: the reference axis.

  Returns:
    weights, the shape of mask.
  """
  masked = scores * mask
  if present is not None:
    shape = [1] * masked.ndim
    shape[axis] = -1
    present = present.reshape(shape)
    mask = mask * present
    top = jnp.max(jnp.where(present, masked, -jnp.inf), axis=axis, keepdims=True)
    top = jnp.where(jnp.isneginf(top), 0.0, top)   # no reference at all: weights 0, not NaN
  else:
    top = jnp.max(masked, axis=axis, keepdims=True)
  exps = jnp.exp(masked - top) * mask
  sums = jnp.sum(exps, axis=axis, keepdims=True)
  return exps / (sums + (sums < 1e-4))


def context_matching(target_feat: jax.Array, ref_feats: jax.Array, target_visible: jax.Array,
                     ref_visible: jax.Array, present: jax.Array | None = None
                     ) -> dict[str, jax.Array]:
  """Context matching (paper sec. 3.2, reference `CM_Module`).

  Visibility maps are resized bilinearly to the feature size and thresholded (> 0.5). Per
  reference r a scalar similarity g_r = sum(v_t v_r f_t f_r) / (C * sum(v_t v_r)) (0 where
  nothing is jointly visible); weights w_r(p) = `masked_softmax`(g, v_r)(p); aggregated
  features sum_r w_r f_r; c_mask = 1 - sum_r w_r v_r (1 where no reference sees the pixel).

  Args:
    target_feat: [B, h, w, C] features of the target.
    ref_feats: [B, T, h, w, C] features of the aligned references.
    target_visible: [B, H, W, 1] in {0, 1} (1 - hole), any size.
    ref_visible: [B, T, H, W, 1] in {0, 1}, aligned reference visibility.
    present: [T] bool, real references (None: all).

  Returns:
    {'decoder_input': [B, h, w, 2C + 1] = cat(target, aggregated, c_mask),
     'c_mask': [B, h, w, 1], 'weights': [B, T, h, w, 1], 'similarity': [B, T]} float32.
  """
  b, t, h, w, c = ref_feats.shape
  target_feat = target_feat.astype(jnp.float32)
  ref_feats = ref_feats.astype(jnp.float32)
  tv = (resize_bilinear(target_visible.astype(jnp.float32), (h, w)) > 0.5).astype(jnp.float32)
  rv = resize_bilinear(ref_visible.reshape(b * t, *ref_visible.shape[2:]).astype(jnp.float32),
                       (h, w))
  rv = (rv > 0.5).astype(jnp.float32).reshape(b, t, h, w, 1)
  joint = tv[:, None] * rv
  dot = jnp.sum(joint * target_feat[:, None] * ref_feats, axis=(2, 3, 4))
  count = jnp.sum(joint, axis=(2, 3, 4))
  empty = count < 1e-4
  similarity = jnp.where(empty, 0.0, dot) / (count + empty) / c
  weights = masked_softmax(similarity[:, :, None, None, None], rv, present)
  # The sum over references as t - 1 adds of [B, h, w, C] maps: XLA:CPU reduces the middle
  # axis of the 5-D product 70x slower (90 ms for 10 references at 60x106x128).
  aggregated = sum(ref_feats[:, r] * weights[:, r] for r in range(t))
  c_mask = 1.0 - jnp.sum(weights * rv, axis=1)
  return {"decoder_input": jnp.concatenate([target_feat, aggregated, c_mask], axis=-1),
          "c_mask": c_mask, "weights": weights, "similarity": similarity}


def align(frames: jax.Array, maps: jax.Array, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Warps references into the target: grid_sample(x, affine_grid(theta)), zeros outside.

  Args:
    frames: [B, T, H, W, 3]; maps: [B, T, H, W, 1] visibility; theta: [B, T, 2, 3].

  Returns:
    (aligned frames [B, T, H, W, 3], aligned visibility [B, T, H, W, 1] thresholded > 0.5;
    pixels from outside the reference are invisible).
  """
  warp = jax.vmap(jax.vmap(geometry.affine_grid_sample))
  aligned = warp(frames.astype(jnp.float32), theta)
  visible = (warp(maps.astype(jnp.float32), theta) > 0.5).astype(jnp.float32)
  return aligned, visible


class CPNet(nn.Module):
  """The whole network (reference `CPNet`): alignment, copy (encoder + matching), paste.

  Attributes:
    align_widths, align_size, regressor_width, reuse_conv5: `AlignmentEncoder` /
      `AlignmentRegressor` settings (regressor_width 0 = twice align_widths[-1]).
    encoder_widths: `CopyEncoder.widths`.
    decoder_widths, dilations: `PasteDecoder` settings.
  """
  align_widths: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 256)
  align_size: int = 224
  regressor_width: int = 0
  reuse_conv5: bool = True
  encoder_widths: tuple[int, ...] = (64, 64, 128, 128, 128)
  decoder_widths: tuple[int, ...] = (128, 128, 64, 64)
  dilations: tuple[int, ...] = (2, 4, 8, 16)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.align_encoder = AlignmentEncoder(self.align_widths, self.align_size, **kw)
    self.align_regressor = AlignmentRegressor(
        self.regressor_width or 2 * self.align_widths[-1], self.reuse_conv5, **kw)
    self.encoder = CopyEncoder(self.encoder_widths, **kw)
    self.decoder = PasteDecoder(self.decoder_widths, self.dilations, **kw)

  def encode_alignment(self, frames: jax.Array, holes: jax.Array) -> jax.Array:
    """Alignment features of frames (reference `CPNet.encoding`, per frame).

    Args: frames [N, H, W, 3] in [0, 1]; holes [N, H, W, 1]. Returns [N, s/8, s/8, C].
    """
    return self.align_encoder(frames, holes)

  def __call__(self, ref_align_feats: jax.Array, ref_frames: jax.Array, ref_holes: jax.Array,
               frame: jax.Array, hole: jax.Array, present: jax.Array | None = None
               ) -> dict[str, jax.Array]:
    """Completes a target frame from T references (reference `CPNet.inpainting`).

    Args:
      ref_align_feats: [B, T, s/8, s/8, C] `encode_alignment` of the references.
      ref_frames: [B, T, H, W, 3] references in [0, 1] (holes filled with anything).
      ref_holes: [B, T, H, W, 1] their holes.
      frame: [B, H, W, 3] the target in [0, 1], H and W multiples of 8.
      hole: [B, H, W, 1] the target's hole.
      present: [T] bool, real references (None: all); padding references are ignored.

    Returns:
      {'pred': [B, H, W, 3] decoder output (not clipped), 'comp': clip(pred hole + frame
      (1 - hole), 0, 1), 'theta': [B, T, 2, 3], 'aligned': [B, T, H, W, 3],
      'aligned_visible': [B, T, H, W, 1], 'c_mask': [B, H/4, W/4, 1] (1 = seen by no
      reference)} float32.
    """
    b, t = ref_frames.shape[:2]
    target_align = self.align_encoder(frame, hole)
    flat = lambda x: x.reshape(b * t, *x.shape[2:])  # pylint: disable=unnecessary-lambda-assignment
    repeated = jnp.repeat(target_align, t, axis=0)
    theta = self.align_regressor(repeated, flat(ref_align_feats)).reshape(b, t, 2, 3)
    aligned, aligned_visible = align(ref_frames, 1.0 - ref_holes, theta)
    # As the released code: the target's encoder map is its hole, a reference's its visibility.
    target_feat = self.encoder(frame, hole)
    ref_feats = self.encoder(flat(aligned), flat(aligned_visible))
    ref_feats = ref_feats.reshape(b, t, *ref_feats.shape[1:])
    matched = context_matching(target_feat, ref_feats, 1.0 - hole, aligned_visible, present)
    pred = self.decoder(matched["decoder_input"])
    comp = jnp.clip(pred * hole + frame * (1.0 - hole), 0.0, 1.0)
    return {"pred": pred, "comp": comp, "theta": theta, "aligned": aligned,
            "aligned_visible": aligned_visible, "c_mask": matched["c_mask"]}


def pad_to_multiple(x: jax.Array, multiple: int = 8) -> tuple[jax.Array, tuple[int, int, int, int]]:
  """Zero-pads H and W of [..., H, W, C] up to multiples, centred as the reference
  (`pad_divide_by`: top/left get floor(extra / 2)).

  Returns:
    (padded array, (top, bottom, left, right)).
  """
  h, w = x.shape[-3], x.shape[-2]
  dh, dw = -h % multiple, -w % multiple
  pads = (dh // 2, dh - dh // 2, dw // 2, dw - dw // 2)
  widths = [(0, 0)] * (x.ndim - 3) + [(pads[0], pads[1]), (pads[2], pads[3]), (0, 0)]
  return jnp.pad(x, widths), pads


def crop_padding(x: jax.Array, pads: tuple[int, int, int, int]) -> jax.Array:
  """Inverse of `pad_to_multiple` on [..., H, W, C]."""
  top, bottom, left, right = pads
  h, w = x.shape[-3], x.shape[-2]
  return x[..., top:h - bottom, left:w - right, :]
