"""Colour operations on device: RGB<->HSV, T_color and T_shading of "Smart, Deep Copy-Paste".

Paper section 3.1.1:
  T_color(I) = (Ts . Th . Tc . Tb)(I)                                        (eq. 1)
  Tc(I)_c = (I_c - m_c) * l_c + m_c,  m_c the mean of channel c               (eq. 2)
  T_shading(I) = clip(I1 * M_mix + I2 * (1 - M_mix), 0, 1),  I1, I2 ~ T_color(I)  (eq. 3)

All functions work on one example (no batch axis): images are float32 [H, W, 3] in [0, 1]; use
`jax.vmap` for batches. They are jittable and differentiable w.r.t. the image.

Out-of-range values. Tb and Tc are linear and do not clip, so mid-way through T_color values can
leave [0, 1] (brightness +0.5, contrast 1.5). HSV is only defined on [0, 1], so `rgb_to_hsv` (and
hence Th and Ts) clips its input to [0, 1] first. Consequence: T_color's output is always in
[0, 1] (Th follows Tb and Tc), and the final clip of eq. 3 is a no-op kept as a safeguard. The
clip happens exactly where the paper converts to HSV, which is the first place where an
out-of-range value has no meaning.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import dm_pix
import jax
import jax.numpy as jnp

Range = tuple[float, float]


def rgb_to_hsv(rgb: jax.Array) -> jax.Array:
  """RGB to HSV (dm_pix's definition, after clipping the input to [0, 1]).

  Args:
    rgb: [..., 3] float. Values outside [0, 1] are clipped to [0, 1] before the conversion.

  Returns:
    [..., 3] float (H, S, V), each in [0, 1]; H is a fraction of a full turn (1 only by
    rounding, equivalent to 0); H = 0 and S = 0 for grey pixels (R = G = B).
  """
  return dm_pix.rgb_to_hsv(jnp.clip(rgb, 0.0, 1.0))


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
  """HSV to RGB (dm_pix's definition): the inverse of `rgb_to_hsv` on [0, 1].

  Args:
    hsv: [..., 3] float (H, S, V). H wraps modulo 1 (any real value is fine); S and V are
      clipped to [0, 1].

  Returns:
    [..., 3] float RGB in [0, 1].
  """
  hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  hsv = jnp.stack([jnp.mod(hue, 1.0), jnp.clip(sat, 0.0, 1.0), jnp.clip(val, 0.0, 1.0)], -1)
  return dm_pix.hsv_to_rgb(hsv)


def adjust_brightness(image: jax.Array, delta: jax.Array | float) -> jax.Array:
  """Tb: adds `delta` to every channel (dm_pix.adjust_brightness; no clipping).

  Args:
    image: [H, W, 3] float, nominally in [0, 1].
    delta: scalar shift (paper: U(-0.5, 0.5)).

  Returns:
    [H, W, 3] float; may leave [0, 1].
  """
  return dm_pix.adjust_brightness(image, delta)


def adjust_contrast(image: jax.Array, factors: jax.Array) -> jax.Array:
  """Tc, eq. 2: per-channel contrast, (I_c - m_c) * l_c + m_c, m_c = mean of channel c.

  Our own: the paper draws one factor per channel, dm_pix documents a single scalar factor.
  No clipping.

  Args:
    image: [H, W, 3] float.
    factors: [3] (or a scalar) contrast factors l_c (paper: each U(0.5, 1.5)).

  Returns:
    [H, W, 3] float; may leave [0, 1].
  """
  mean = jnp.mean(image, axis=(-3, -2), keepdims=True)
  return (image - mean) * jnp.asarray(factors, image.dtype) + mean


def adjust_hue(image: jax.Array, delta: jax.Array | float) -> jax.Array:
  """Th: H <- (H + delta) mod 1 (dm_pix.adjust_hue on the input clipped to [0, 1]).

  Args:
    image: [H, W, 3] float; clipped to [0, 1] first (see module docstring).
    delta: scalar hue shift in turns (paper: U(-0.5, 0.5)).

  Returns:
    [H, W, 3] float in [0, 1].
  """
  return dm_pix.adjust_hue(jnp.clip(image, 0.0, 1.0), delta)


def adjust_saturation(image: jax.Array, factor: jax.Array | float) -> jax.Array:
  """Ts: S <- clip(S * factor, 0, 1) (dm_pix.adjust_saturation on the input clipped to [0, 1]).

  Args:
    image: [H, W, 3] float; clipped to [0, 1] first (see module docstring).
    factor: scalar saturation factor (paper: U(0.5, 1.5)).

  Returns:
    [H, W, 3] float in [0, 1].
  """
  return dm_pix.adjust_saturation(jnp.clip(image, 0.0, 1.0), factor)


@dataclasses.dataclass(frozen=True)
class ColorRanges:
  """Uniform ranges (lo, hi) of T_color's parameters; defaults are the paper's (sec. 3.1.1).

  Attributes:
    saturation: factor k1 of Ts.
    hue: shift D1 of Th, in turns (1 = 360 degrees).
    contrast: per-channel factors l_c of Tc (drawn independently for each channel).
    brightness: shift D2 of Tb, added to all channels.
  """
  saturation: Range = (0.5, 1.5)
  hue: Range = (-0.5, 0.5)
  contrast: Range = (0.5, 1.5)
  brightness: Range = (-0.5, 0.5)


def _scale(u: jax.Array, bounds: Range) -> jax.Array:
  """Maps U(0, 1) samples to U(lo, hi) (lo == hi gives the constant)."""
  return bounds[0] + (bounds[1] - bounds[0]) * u


def color_params_from_uniform(u: jax.Array,
                              ranges: ColorRanges = ColorRanges()) -> dict[str, jax.Array]:
  """Maps 6 U(0, 1) numbers to T_color parameters, each uniform in its range.

  Args:
    u: [6] float in [0, 1): brightness, 3 x contrast, hue, saturation.
    ranges: uniform ranges.

  Returns:
    {'brightness': [], 'contrast': [3], 'hue': [], 'saturation': []} float32.
  """
  return {
      "brightness": _scale(u[0], ranges.brightness),
      "contrast": _scale(u[1:4], ranges.contrast),
      "hue": _scale(u[4], ranges.hue),
      "saturation": _scale(u[5], ranges.saturation),
  }


def sample_color_params(key: jax.Array,
                        ranges: ColorRanges = ColorRanges()) -> dict[str, jax.Array]:
  """Draws one set of T_color parameters, each uniform in its range (contrast per channel).

  Args:
    key: PRNG key.
    ranges: uniform ranges.

  Returns:
    {'brightness': [], 'contrast': [3], 'hue': [], 'saturation': []} float32.
  """
  return color_params_from_uniform(jax.random.uniform(key, (6,), jnp.float32), ranges)


def _hue_saturation(image: jax.Array, delta: jax.Array, factor: jax.Array) -> jax.Array:
  """Ts . Th in a single HSV round trip: H <- (H + delta) mod 1, then S <- clip(S * factor).

  Equal to adjust_saturation(adjust_hue(image, delta), factor) up to float error (converting
  Th's output back to HSV returns the shifted H, S, V), at half the conversions.
  """
  hsv = rgb_to_hsv(image)
  hue = jnp.mod(hsv[..., 0] + delta, 1.0)
  sat = jnp.clip(hsv[..., 1] * factor, 0.0, 1.0)
  return hsv_to_rgb(jnp.stack([hue, sat, hsv[..., 2]], axis=-1))


def apply_color(image: jax.Array, params: dict[str, jax.Array]) -> jax.Array:
  """T_color with fixed parameters, eq. 1: brightness, then contrast, then hue, then saturation.

  Args:
    image: [H, W, 3] float in [0, 1].
    params: as returned by `sample_color_params`.

  Returns:
    [H, W, 3] float in [0, 1] (clipped before the HSV steps, see module docstring).
  """
  image = adjust_brightness(image, params["brightness"])
  image = adjust_contrast(image, params["contrast"])
  return _hue_saturation(image, params["hue"], params["saturation"])


def random_color(key: jax.Array, image: jax.Array,
                 ranges: ColorRanges = ColorRanges()) -> jax.Array:
  """T_color (eq. 1) with freshly drawn parameters.

  Args:
    key: PRNG key.
    image: [H, W, 3] float in [0, 1].
    ranges: uniform ranges of the parameters.

  Returns:
    [H, W, 3] float in [0, 1].
  """
  return apply_color(image, sample_color_params(key, ranges))


def _cells_from_uniform(u: jax.Array, grid: int) -> jax.Array:
  """[grid * grid] U(0, 1) -> [grid, grid, 1] Bernoulli(0.5) cells in {0, 1}."""
  return (u < 0.5).astype(jnp.float32).reshape(grid, grid, 1)


def upsample_mix_mask(cells: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear upsampling of the noise grid to the image size (jax.image.resize, 'linear').

  Half-pixel-centre convention with the edge cells extended (the same as cv2.resize with
  INTER_LINEAR when upsampling).

  Args:
    cells: [g, g, 1] float in [0, 1].
    height, width: output size.

  Returns:
    [height, width, 1] float32 in [0, 1].
  """
  return jax.image.resize(cells, (height, width, cells.shape[-1]), method="linear")


def sample_shading_params(key: jax.Array, height: int, width: int,
                          ranges: ColorRanges = ColorRanges(),
                          mix_grid: int = 10) -> dict[str, Any]:
  """Draws T_shading's randomness: two independent T_color draws and the mix mask.

  Args:
    key: PRNG key.
    height, width: image size.
    ranges: T_color ranges (shared by both draws).
    mix_grid: side of M_mix's noise grid.

  Returns:
    {'color1': params, 'color2': params, 'mix': [height, width, 1] in [0, 1]}.
  """
  # One PRNG call for everything (12 colour numbers, then the grid): disjoint uniform numbers
  # are independent draws, and a single call keeps jit compile times short on CPU.
  u = jax.random.uniform(key, (12 + mix_grid * mix_grid,), jnp.float32)
  cells = _cells_from_uniform(u[12:], mix_grid)
  return {
      "color1": color_params_from_uniform(u[0:6], ranges),
      "color2": color_params_from_uniform(u[6:12], ranges),
      "mix": upsample_mix_mask(cells, height, width),
  }


def apply_shading(image: jax.Array, params: dict[str, Any]) -> jax.Array:
  """T_shading with fixed parameters, eq. 3: clip(I1 * M_mix + I2 * (1 - M_mix), 0, 1).

  Args:
    image: [H, W, 3] float in [0, 1].
    params: as returned by `sample_shading_params`.

  Returns:
    [H, W, 3] float in [0, 1].
  """
  image1 = apply_color(image, params["color1"])
  image2 = apply_color(image, params["color2"])
  mix = params["mix"]
  return jnp.clip(image1 * mix + image2 * (1.0 - mix), 0.0, 1.0)


def random_shading(key: jax.Array, image: jax.Array, ranges: ColorRanges = ColorRanges(),
                   mix_grid: int = 10) -> jax.Array:
  """T_shading (eq. 3): locally varying colour change from two independent T_color draws.

  Args:
    key: PRNG key.
    image: [H, W, 3] float in [0, 1].
    ranges: T_color ranges.
    mix_grid: side of M_mix's noise grid (paper: 10).

  Returns:
    [H, W, 3] float in [0, 1].
  """
  height, width = image.shape[-3], image.shape[-2]
  return apply_shading(image, sample_shading_params(key, height, width, ranges, mix_grid))


# ImageNet statistics of torchvision / most PyTorch reference code (RGB, on [0, 1] images).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(image: jax.Array) -> jax.Array:
  """[..., 3] RGB in [0, 1] -> (image - mean) / std, the input space of ImageNet-trained nets."""
  mean = jnp.asarray(IMAGENET_MEAN, image.dtype)
  std = jnp.asarray(IMAGENET_STD, image.dtype)
  return (image - mean) / std


def imagenet_denormalize(normalized: jax.Array) -> jax.Array:
  """Inverse of `imagenet_normalize`: [..., 3] normalised -> RGB (not clipped)."""
  mean = jnp.asarray(IMAGENET_MEAN, normalized.dtype)
  std = jnp.asarray(IMAGENET_STD, normalized.dtype)
  return normalized * std + mean
