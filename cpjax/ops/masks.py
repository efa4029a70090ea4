"""Masks on device: bounding boxes and random rotated rectangles (copy-paste masks M).

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
