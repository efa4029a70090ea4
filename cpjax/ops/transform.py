"""The training transform T of "Smart, Deep Copy-Paste" (paper sec. 3.1) and training examples.

  T = T_shading . T_geometric          (geometric first, then shading)
  example: I (ground truth), M (rotated rectangle), T(I), composite I * (1 - M) + T(I) * M.

One example at a time (no batch axis), jittable and vmappable with per-example keys:
  batch = jax.vmap(make_copy_paste_example, in_axes=(0, 0, None))(keys, images, cfg)
`TransformConfig` is a frozen (hashable) dataclass, so it can also be a static jit argument.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from cpjax.ops import color
from cpjax.ops import geometry
from cpjax.ops import masks

SHADINGS = ("local", "global", "none")


@dataclasses.dataclass(frozen=True)
class TransformConfig:
  """Hyperparameters of T and of the copy-paste mask (defaults: the paper's, sec. 3.1).

  Attributes:
    sigma: maximum homography corner offset in pixels (paper: 15 at 512 px).
    color: T_color ranges.
    mix_grid: side of the salt-and-pepper grid of M_mix (paper: 10).
    shading: 'local' = T_shading (eq. 3, two T_color draws mixed by M_mix); 'global' = a single
      T_color draw (the ablation of the paper's Fig. 5); 'none' = no colour change.
    geometric: apply T_geometric (False: skip the homography).
    fill: fill mode of the homography warp (see `cpjax.ops.geometry`; 'reflect' avoids black
      borders a network could detect).
    mask: ranges of the random rotated rectangles M.
  """
  # The field `color` shadows the module `color` in this class body after this line only.
  sigma: float = 15.0
  color: color.ColorRanges = color.ColorRanges()
  mix_grid: int = 10
  shading: str = "local"
  geometric: bool = True
  fill: str = "reflect"
  mask: masks.MaskRanges = masks.MaskRanges()

  def __post_init__(self):
    if self.shading not in SHADINGS:
      raise ValueError(f"cpjax.ops.transform: shading={self.shading!r}; use one of {SHADINGS}.")
    if self.fill not in geometry.FILLS:
      raise ValueError(f"cpjax.ops.transform: fill={self.fill!r}; use one of {geometry.FILLS}.")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TransformConfig":
    """Builds a config from plain values (a dict or an ml_collections ConfigDict) whose keys
    are the attribute names: sigma, mix_grid, shading, geometric, fill, and the nested
    `color` (saturation, hue, contrast, brightness of `ColorRanges`) and `mask` (size, angle,
    center of `MaskRanges`). All optional: missing ones keep the defaults; pairs may be lists
    or tuples.

    Raises:
      ValueError: on an unknown key (at either level).
    """
    d = _plain(d)
    _check_keys(d, _SCALARS.keys() | {"color", "mask"}, "transform")
    parts = {}
    for name, ranges in (("color", color.ColorRanges), ("mask", masks.MaskRanges)):
      sub = _plain(d.get(name, {}))
      _check_keys(sub, {f.name for f in dataclasses.fields(ranges)}, f"transform.{name}")
      parts[name] = ranges(**{k: (float(v[0]), float(v[1])) for k, v in sub.items()})
    return cls(**{k: cast(d[k]) for k, cast in _SCALARS.items() if k in d}, **parts)


_SCALARS = {"sigma": float, "mix_grid": int, "shading": str, "geometric": bool, "fill": str}


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
  return dict(d.to_dict() if hasattr(d, "to_dict") else d)


def _check_keys(d: Mapping[str, Any], known: set[str], where: str) -> None:
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f"cpjax.ops.transform: unknown {where} keys {unknown}; use some of "
                     f"{sorted(known)}.")


def _shade(key: jax.Array, image: jax.Array, cfg: TransformConfig) -> jax.Array:
  """The colour part of T as selected by cfg.shading; [H, W, 3] in [0, 1] -> same."""
  if cfg.shading == "local":
    return color.random_shading(key, image, cfg.color, cfg.mix_grid)
  if cfg.shading == "global":
    return color.random_color(key, image, cfg.color)
  return image


def transform_T(key: jax.Array, image: jax.Array,
                cfg: TransformConfig = TransformConfig()) -> jax.Array:
  """T = T_shading . T_geometric (paper sec. 3.1): a random homography, then a colour change.

  At sigma = 0 and neutral colour ranges (unit factors, zero shifts) T is the identity.

  Args:
    key: PRNG key; `key_geo, key_shade = jax.random.split(key)` drive T_geometric and the
      colour part.
    image: [H, W, 3] float in [0, 1].
    cfg: hyperparameters.

  Returns:
    [H, W, 3] float32 in [0, 1] (the source image I_S before masking).
  """
  key_geo, key_shade = jax.random.split(key)
  if cfg.geometric:
    image = geometry.random_geometric(key_geo, image, cfg.sigma, cfg.fill)
  return _shade(key_shade, image, cfg)


def make_copy_paste_example(key: jax.Array, image: jax.Array,
                            cfg: TransformConfig = TransformConfig()) -> dict[str, jax.Array]:
  """One training example of smart copy-paste (paper sec. 3.1.2).

  The generator's input is concat(composite, mask) ([H, W, 4]); its target is 'image'.

  Args:
    key: PRNG key; `key_mask, key_t = jax.random.split(key)` drive M and T.
    image: [H, W, 3] float in [0, 1], the ground truth I.

  Returns:
    {'image': I [H, W, 3], 'source': T(I) [H, W, 3], 'mask': M [H, W, 1] in {0, 1},
     'composite': I * (1 - M) + T(I) * M [H, W, 3]}, float32 in [0, 1].
  """
  key_mask, key_t = jax.random.split(key)
  height, width = image.shape[-3], image.shape[-2]
  mask = masks.random_rotated_rectangle(key_mask, height, width, cfg.mask)
  source = transform_T(key_t, image, cfg)
  composite = image * (1.0 - mask) + source * mask
  return {"image": image, "source": source, "mask": mask, "composite": composite}
