"""Masks on device: bounding boxes, random rotated rectangles (copy-paste masks M) and moving
object masks (video-inpainting holes).

Masks follow the library convention: float32 [H, W, 1] in {0, 1}, 1 = pasted region / hole.
Coordinates are continuous: pixel (row i, column j) covers [i, i + 1) x [j, j + 1), so its centre
is at (i + 0.5, j + 0.5) (the convention of `cpjax.ops.geometry.crop_and_resize`). Points and sizes
are (y, x) / (h, w) here.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from cpjax.ops import geometry

Range = tuple[float, float]


def bounding_box(mask: jax.Array) -> jax.Array:
  """Tight bounding box of a mask's foreground.

  Args:
    mask: [H, W, 1] or [H, W] in {0, 1}.

  Returns:
    [4] float32 (y0, x0, y1, x1) in continuous pixel coordinates: the box covers pixel rows
    y0 .. y1 - 1 and columns x0 .. x1 - 1. An empty mask gives the whole image.
  """
  m = mask.reshape(mask.shape[0], mask.shape[1]) > 0.5
  height, width = m.shape
  rows, cols = jnp.any(m, axis=1), jnp.any(m, axis=0)
  y_idx, x_idx = jnp.arange(height), jnp.arange(width)
  y0 = jnp.min(jnp.where(rows, y_idx, height))
  y1 = jnp.max(jnp.where(rows, y_idx + 1, 0))
  x0 = jnp.min(jnp.where(cols, x_idx, width))
  x1 = jnp.max(jnp.where(cols, x_idx + 1, 0))
  empty = ~jnp.any(rows)
  box = jnp.stack([y0, x0, y1, x1]).astype(jnp.float32)
  return jnp.where(empty, jnp.array([0.0, 0.0, height, width], jnp.float32), box)


@dataclasses.dataclass(frozen=True)
class MaskRanges:
  """Uniform ranges (lo, hi) of the random rotated rectangles M (paper sec. 3.1.2).

  The paper follows FaceShop ("randomly rotated rectangular masks of random size and position")
  and gives no numbers; these defaults are ours.

  Attributes:
    size: side lengths as fractions of the image side: the rectangle's width is U(lo, hi) * W and
      its height, independently, U(lo, hi) * H, before rotation. Default (0.15, 0.5): from a
      small patch (~2 % of the image) to a quarter of the image, large enough to hold an object,
      small enough to leave context around it.
    angle: rotation in radians, U(lo, hi). Default (-pi/2, pi/2), every orientation (a rectangle
      is symmetric under a half turn). Positive angles turn the width axis from +x (right)
      towards +y (down), i.e. clockwise on screen.
    center: rectangle centre as fractions of the image side (each axis independently
      U(lo, hi)). Default (0.25, 0.75): the centre stays a quarter of the image away from the
      borders, so most of the rectangle lies inside (it may be cut by the border when large).
  """
  size: Range = (0.15, 0.5)
  angle: Range = (-math.pi / 2, math.pi / 2)
  center: Range = (0.25, 0.75)


def sample_rectangle_params(key: jax.Array, height: int, width: int,
                            ranges: MaskRanges = MaskRanges()) -> dict[str, jax.Array]:
  """Draws the geometry of one random rotated rectangle.

  Args:
    key: PRNG key.
    height, width: image size.
    ranges: uniform ranges.

  Returns:
    {'center': [2] (y, x), 'size': [2] (h, w), both in pixels, continuous coordinates
    (module docstring), 'angle': [] radians} float32.
  """
  u = jax.random.uniform(key, (5,), jnp.float32)
  side = jnp.array([height, width], jnp.float32)
  scale = lambda x, bounds: bounds[0] + (bounds[1] - bounds[0]) * x
  center = scale(u[0:2], ranges.center) * side
  size = scale(u[2:4], ranges.size) * side
  angle = scale(u[4], ranges.angle)
  return {"center": center, "size": size, "angle": angle}


def rotated_rectangle(height: int, width: int, center: jax.Array, size: jax.Array,
                      angle: jax.Array | float) -> jax.Array:
  """Rasterises a rotated rectangle, evaluated at pixel centres (hard, no anti-aliasing).

  A pixel is inside when its centre (i + 0.5, j + 0.5) lies in the closed rectangle.

  Args:
    height, width: image size.
    center: [2] (y, x) centre in continuous coordinates.
    size: [2] (h, w) side lengths in pixels; w lies along the rotated x axis.
    angle: radians; positive turns the width axis from +x towards +y (clockwise on screen).

  Returns:
    [height, width, 1] float32 in {0, 1}.
  """
  ys = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5 - center[0]
  xs = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5 - center[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  along_w = xs * cos + ys * sin      # coordinate along the rotated width axis
  along_h = -xs * sin + ys * cos     # coordinate along the rotated height axis
  inside = (jnp.abs(along_w) <= size[1] / 2) & (jnp.abs(along_h) <= size[0] / 2)
  return inside.astype(jnp.float32)[..., None]


def random_rotated_rectangle(key: jax.Array, height: int, width: int,
                             ranges: MaskRanges = MaskRanges()) -> jax.Array:
  """The copy-paste mask M: a randomly rotated rectangle of random size and position.

  Args:
    key: PRNG key.
    height, width: image size.
    ranges: uniform ranges of size, angle and centre (see `MaskRanges`).

  Returns:
    [height, width, 1] float32 in {0, 1}, 1 inside the rectangle.
  """
  p = sample_rectangle_params(key, height, width, ranges)
  return rotated_rectangle(height, width, p["center"], p["size"], p["angle"])


def random_blob_shape(key: jax.Array, harmonics: int = 4, roughness: float = 0.5
                      ) -> dict[str, jax.Array]:
  """A random star-shaped blob: radius r(phi) = 1 + sum_k a_k cos(k phi + b_k), k = 2..K+1.

  The amplitudes a_k ~ U(0, 1) are rescaled so that sum_k a_k = roughness * U(0.2, 1), hence
  r(phi) >= 1 - roughness > 0: smooth, object-like outlines from near-discs to lobed shapes.

  Args:
    key: PRNG key.
    harmonics: number K of cosine terms.
    roughness: largest total amplitude, in [0, 1).

  Returns:
    {'amplitude': [K], 'phase': [K]} float32: the shape in its own frame (unit mean radius).
  """
  k_amp, k_phase, k_total = jax.random.split(key, 3)
  amplitude = jax.random.uniform(k_amp, (harmonics,), jnp.float32)
  total = roughness * jax.random.uniform(k_total, (), jnp.float32, 0.2, 1.0)
  amplitude = amplitude / jnp.maximum(jnp.sum(amplitude), 1e-6) * total
  phase = jax.random.uniform(k_phase, (harmonics,), jnp.float32, 0.0, 2 * math.pi)
  return {"amplitude": amplitude, "phase": phase}


def blob_mask(height: int, width: int, shape: dict[str, jax.Array],
              placement: jax.Array) -> jax.Array:
  """Rasterises a `random_blob_shape` placed in the image by an affine map.

  A pixel is inside when its centre p (index coordinates x = column, y = row, the convention
  of `cpjax.ops.geometry`) maps to q = placement^-1 p with |q| <= r(atan2(q_y, q_x)).

  Args:
    height, width: image size.
    shape: from `random_blob_shape`.
    placement: [2, 3] affine map from the blob's frame (unit mean radius at the origin) to
      index coordinates, e.g. `geometry.affine_about_center` composed with a motion path.

  Returns:
    [height, width, 1] float32 in {0, 1}.
  """
  linear, offset = placement[:, :2], placement[:, 2]
  det = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
  inv = jnp.array([[linear[1, 1], -linear[0, 1]], [-linear[1, 0], linear[0, 0]]]) / det
  ys, xs = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                        jnp.arange(width, dtype=jnp.float32), indexing="ij")
  px, py = xs - offset[0], ys - offset[1]
  qx = inv[0, 0] * px + inv[0, 1] * py
  qy = inv[1, 0] * px + inv[1, 1] * py
  phi = jnp.arctan2(qy, qx)
  orders = jnp.arange(2, 2 + shape["amplitude"].shape[0], dtype=jnp.float32)
  radius = 1.0 + jnp.sum(shape["amplitude"] * jnp.cos(orders * phi[..., None] + shape["phase"]),
                         axis=-1)
  inside = qx * qx + qy * qy <= radius * radius
  return inside.astype(jnp.float32)[..., None]


@dataclasses.dataclass(frozen=True)
class MovingMaskRanges:
  """Random moving object masks for video inpainting (CPN paper sec. 4.2; numbers are ours).

  Attributes:
    radius: blob mean radius as a fraction of the shorter image side, U(lo, hi).
    center: blob start centre as fractions of the image side, each axis U(lo, hi).
    rotation, shear, scale, translation: per-frame motion ranges of the object, as in
      `cpjax.ops.geometry.random_affine` (translation in fractions of the image side).
  """
  radius: Range = (0.12, 0.3)
  center: Range = (0.25, 0.75)
  rotation: float = 0.1
  shear: float = 0.05
  scale: float = 0.05
  translation: float = 0.06


def _blob_radius(u: jax.Array, height: int, width: int, ranges: MovingMaskRanges) -> jax.Array:
  """The blob's mean radius in pixels for a uniform draw u in [0, 1) (`ranges.radius`)."""
  lo, hi = ranges.radius
  return (lo + (hi - lo) * u) * min(height, width)


def _blob_placement(height: int, width: int, radius: jax.Array, center: jax.Array,
                    angle: jax.Array) -> jax.Array:
  """[2, 3] map from the blob's unit frame to index coordinates: scaled by radius, rotated by
  angle, centred at center (x, y) in pixels."""
  return geometry.affine_about_center(height, width, rotation=angle, scale=radius,
                                      translation=center, center=jnp.zeros(2, jnp.float32))


def moving_blob_masks(key: jax.Array, num_frames: int, height: int, width: int,
                      ranges: MovingMaskRanges = MovingMaskRanges()) -> jax.Array:
  """A hole sequence: one random blob moving along its own random affine path.

  Frame t's placement is D_t o ... o D_1 o P_0, with P_0 a random start (centre, radius,
  rotation) and D_t random per-frame motions (`object_path`).

  Args:
    key: PRNG key.
    num_frames: T.
    height, width: frame size.
    ranges: shape and motion ranges.

  Returns:
    [T, height, width, 1] float32 in {0, 1}, 1 = hole.
  """
  k_shape, k_start, k_path = jax.random.split(key, 3)
  u = jax.random.uniform(k_start, (4,), jnp.float32)
  radius = _blob_radius(u[0], height, width, ranges)
  c_lo, c_hi = ranges.center
  center = (c_lo + (c_hi - c_lo) * u[1:3]) * jnp.array([width, height], jnp.float32)
  start = _blob_placement(height, width, radius, center, 2 * math.pi * u[3])
  path = object_path(k_path, num_frames, height, width, ranges)
  shape = random_blob_shape(k_shape)
  placements = jax.vmap(lambda a: geometry.compose_affine(a, start))(path)
  return jax.vmap(lambda p: blob_mask(height, width, shape, p))(placements)


def wandering_blob_masks(key: jax.Array, num_frames: int, height: int, width: int,
                         ranges: MovingMaskRanges = MovingMaskRanges(),
                         period: Range = (40.0, 120.0)) -> jax.Array:
  """A hole sequence of any length that stays in the frame: one random blob on a smooth loop.

  `moving_blob_masks` random-walks, so over hundreds of frames its blob drifts out of the
  image; for whole videos (`cpjax.tools.inpaint_video --masks=random:SEED`) the blob's centre
  instead follows c(t) = 0.5 + 0.25 sin(2 pi t / P + phi) per axis (fractions of the side, so
  within [0.25, 0.75]) and its angle theta_0 + 0.5 sin(2 pi t / P_r + phi_r), each period P ~
  U(period) frames and phase phi ~ U(0, 2 pi); radius as in `ranges.radius`. The largest
  step, 2 pi 0.25 / min(period) = 4 % of the side per frame, is within the training masks'
  per-frame translation (`ranges.translation`).

  Returns:
    [T, height, width, 1] float32 in {0, 1}, 1 = hole; no frame is empty.
  """
  k_shape, k_u = jax.random.split(key)
  u = jax.random.uniform(k_u, (8,), jnp.float32)
  radius = _blob_radius(u[0], height, width, ranges)
  periods = period[0] + (period[1] - period[0]) * u[1:4]
  phases = 2 * math.pi * u[4:7]
  t = jnp.arange(num_frames, dtype=jnp.float32)[:, None]
  waves = jnp.sin(2 * math.pi * t / periods + phases)                   # [T, 3]: x, y, angle
  centers = (0.5 + 0.25 * waves[:, :2]) * jnp.array([width, height], jnp.float32)
  angles = 2 * math.pi * u[7] + 0.5 * waves[:, 2]
  shape = random_blob_shape(k_shape)

  def frame(center, angle):
    return blob_mask(height, width, shape, _blob_placement(height, width, radius, center, angle))

  return jax.vmap(frame)(centers, angles)


def object_path(key: jax.Array, num_frames: int, height: int, width: int,
                ranges: MovingMaskRanges = MovingMaskRanges()) -> jax.Array:
  """An object's motion A_t = D_t o ... o D_1 with the per-frame ranges of `ranges`.

  Args:
    key: PRNG key.
    num_frames: T.
    height, width: frame size (the motions act about its centre).
    ranges: rotation, shear, scale, translation are used.

  Returns:
    [T, 2, 3] float32 affine maps (index coordinates, `geometry.random_affine_path`); A_0 = I.
  """
  return geometry.random_affine_path(key, num_frames, height, width, rotation=ranges.rotation,
                                     shear=ranges.shear, scale=ranges.scale,
                                     translation=ranges.translation)


def moving_shape_masks(key: jax.Array, shape: jax.Array, num_frames: int,
                       ranges: MovingMaskRanges = MovingMaskRanges()) -> jax.Array:
  """A hole sequence: a given shape moving along its own random affine path.

  Frame t is the shape warped by A_t (`object_path`; bilinear samples > 0.5, nothing enters
  from outside the image), so frame 0 is `shape` itself; a blob moves the same way in
  `moving_blob_masks`. `ranges.radius` and `ranges.center` are unused: the shape is placed.

  Args:
    key: PRNG key.
    shape: [H, W, 1] in {0, 1}: the hole in frame 0 (e.g. a mask from a folder of objects).
    num_frames: T.
    ranges: motion ranges.

  Returns:
    [T, H, W, 1] float32 in {0, 1}, 1 = hole.
  """
  path = object_path(key, num_frames, shape.shape[0], shape.shape[1], ranges)
  moved = jax.vmap(lambda a: geometry.affine_warp(shape, a, fill="constant"))(path)
  return (moved > 0.5).astype(jnp.float32)
