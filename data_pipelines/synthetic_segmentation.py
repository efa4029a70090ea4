"""Synthetic semantic segmentation from the photos bundled with scikit-image (offline).

Spec (`data.source`): `seg_samples[:train|:eval]` ('seg_samples' alone is the train split).

Four objects are cut from bundled photos with simple known-shape masks, and pasted onto crops of
other bundled photos; the label map records which object covers each pixel:

  id  class       cut from                          mask (photo pixels; centre y, x / radii)
  0   background  -
  1   cat         skimage.data.chelsea  (300x451)   ellipse (160, 220) / (135, 170): the face
  2   cup         skimage.data.coffee   (400x600)   ellipse (228, 277) / (155, 200): cup + saucer
  3   person      skimage.data.astronaut (512x512)  ellipse (88, 228) / (75, 68): face and hair
  4   rocket      skimage.data.rocket   (427x640)   rectangle rows 128-407, columns 306-339

Backgrounds: train = immunohistochemistry, retina, motorcycle_left, hubble_deep_field, grass,
brick; eval = motorcycle_right, gravel, moon (held out). Item i of a split is a 128x128 canvas,
a function of (split, i) only (`np.random.default_rng([split_id, i])`):
  - a random square crop of a random background (side 40-100 % of the photo's shorter side),
    resized to the canvas;
  - one or two objects of distinct classes, each scaled so that its longer side is 35-75 % of
    the canvas, flipped left-right with probability 1/2, placed uniformly inside the canvas and
    pasted with its binary mask (later objects cover earlier ones).
Train has 2048 items, eval 64.

Items: {'image': uint8 [128, 128, 3], 'label': uint8 [128, 128] in 0..4, 'path'}.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from data_pipelines import image_ops
from data_pipelines.sources import DecodeError, _sample_loader

CLASSES = ("background", "cat", "cup", "person", "rocket")
CANVAS = 128
SPLITS = {"train": (0, 2048, ("immunohistochemistry", "retina", "motorcycle_left",
                              "hubble_deep_field", "grass", "brick")),
          "eval": (1, 64, ("motorcycle_right", "gravel", "moon"))}
# class -> (photo, shape, (centre_y, centre_x), (radius_y, radius_x)); a rectangle's "radii" are
# half its size, its centre the middle of rows 128-407 and columns 306-339.
OBJECTS = {"cat": ("chelsea", "ellipse", (160, 220), (135, 170)),
           "cup": ("coffee", "ellipse", (228, 277), (155, 200)),
           "person": ("astronaut", "ellipse", (88, 228), (75, 68)),
           "rocket": ("rocket", "rectangle", (267.5, 322.5), (140, 17))}
_SCALE = (0.35, 0.75)       # longer side of an object / canvas
_CROP = (0.4, 1.0)          # background crop side / the photo's shorter side


def shape_mask(height: int, width: int, shape: str, center: tuple[float, float],
               radii: tuple[float, float]) -> np.ndarray:
  """bool [height, width]: pixels strictly inside the ellipse (as skimage.draw.ellipse) or
  inside the axis-aligned rectangle (edges included)."""
  y, x = np.mgrid[:height, :width]
  dy, dx = (y - center[0]) / radii[0], (x - center[1]) / radii[1]
  if shape == "ellipse":
    return dy**2 + dx**2 < 1.0
  return (np.abs(dy) <= 1.0) & (np.abs(dx) <= 1.0)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
  path, load = _sample_loader(name)
  try:
    return image_ops.to_rgb(load(), path)
  except Exception as e:  # e.g. a scikit-image release without the file
    raise DecodeError(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from e


@functools.lru_cache(maxsize=None)
def cutout(name: str) -> tuple[np.ndarray, np.ndarray]:
  """The object of class `name` cropped to its mask's bounding box.

  Returns:
    (uint8 [h, w, 3] pixels, uint8 [h, w, 1] mask in {0, 255}).
  """
  photo_name, shape, center, radii = OBJECTS[name]
  photo = _photo(photo_name)
  mask = shape_mask(*photo.shape[:2], shape, center, radii)
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  return photo[box], (mask[box][..., None] * 255).astype(np.uint8)


def compose(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
  """Item `index` of `split`: (uint8 [128, 128, 3] image, uint8 [128, 128] labels)."""
  split_id, _, backgrounds = SPLITS[split]
  rng = np.random.default_rng([split_id, index])
  photo = _photo(backgrounds[rng.integers(len(backgrounds))])
  height, width = photo.shape[:2]
  side = int(rng.uniform(*_CROP) * min(height, width))
  top, left = rng.integers(height - side + 1), rng.integers(width - side + 1)
  image = image_ops.resize(photo[top:top + side, left:left + side], CANVAS).copy()
  labels = np.zeros((CANVAS, CANVAS), np.uint8)
  classes = rng.choice(np.arange(1, len(CLASSES)), size=rng.integers(1, 3), replace=False)
  for class_id in classes:
    pixels, mask = cutout(CLASSES[class_id])
    scale = rng.uniform(*_SCALE) * CANVAS / max(pixels.shape[:2])
    size = (max(1, round(pixels.shape[0] * scale)), max(1, round(pixels.shape[1] * scale)))
    pixels = image_ops.resize_field(pixels, size, "image")
    inside = image_ops.resize_field(mask, size, "mask")[..., 0] > 127
    if rng.random() < 0.5:
      pixels, inside = pixels[:, ::-1], inside[:, ::-1]
    y, x = rng.integers(CANVAS - size[0] + 1), rng.integers(CANVAS - size[1] + 1)
    window = np.s_[y:y + size[0], x:x + size[1]]
    image[window][inside] = pixels[inside]
    labels[window][inside] = class_id
  return image, labels


class SyntheticSegmentationSource:
  """`seg_samples` items (module docstring): deterministic, nothing to download."""

  fields = {"image": "image", "label": "label"}

  def __init__(self, split: str = "train"):
    if split not in SPLITS:
      raise ValueError(f"unknown seg_samples split {split!r}; use seg_samples, "
                       "seg_samples:train or seg_samples:eval")
    self._split = split

  def __len__(self) -> int:
    return SPLITS[self._split][1]

  def path(self, index: int) -> str:
    return f"seg_samples:{self._split}[{index}]"

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(f"{self.path(index)} is out of range (size {len(self)})")
    image, labels = compose(self._split, index)
    return {"image": image, "label": labels, "path": self.path(index)}

  def __repr__(self) -> str:
    return f"SyntheticSegmentationSource({self._split}, {len(self)} images)"


def source_from_spec(rest: str, *, image_key: str = "image") -> SyntheticSegmentationSource:
  """The source of 'seg_samples' + (':' + rest): rest = '', 'train' or 'eval'."""
  del image_key  # one image per item
  return SyntheticSegmentationSource(rest or "train")
