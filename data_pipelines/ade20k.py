"""ADE20K scene parsing (MIT SceneParsing, ADEChallengeData2016) for DIH's semantic branch.

Spec (`data.source`): `ade20k:/root[:split]`, split 'train' (default) or 'val'. Layout of
ADEChallengeData2016.zip (http://sceneparsing.csail.mit.edu/, unzipped into /root):

  root/images/training/ADE_train_XXXXXXXX.jpg      root/annotations/training/ADE_train_XXXXXXXX.png
  root/images/validation/ADE_val_XXXXXXXX.jpg      root/annotations/validation/ADE_val_XXXXXXXX.png

Annotation PNGs hold class ids 0..150 (0 = unlabelled). DIH (Tsai et al. sec. 3.3) trains its
parsing decoder on "the top 25 frequent labels" + other, 26 classes. The benchmark numbers its
150 classes in decreasing order of pixel frequency (objectInfo150.csv of the SceneParsing
devkit: 1 wall, 2 building, 3 sky, 4 floor, 5 tree, 6 ceiling, 7 road, 8 bed, 9 windowpane,
10 grass, 11 cabinet, 12 sidewalk, 13 person, 14 earth, 15 door, 16 table, 17 mountain,
18 plant, 19 curtain, 20 chair, 21 car, 22 water, 23 painting, 24 sofa, 25 shelf, ...), so the
25 most frequent labels are ids 1..25. Mapping (`TOP25_LUT`): id k in 1..25 -> k - 1 (0..24),
ids 26..150 -> 25 ('other'), 0 (unlabelled) -> 255 (ignored by the loss). The paper's 12080-image
subset is not published; we use every image of the split.

TFDS's `scene_parse150` is not a substitute: its 'annotation' is the 2017 instance challenge's
`annotations_instance` PNG (instance-challenge object categories and instance ids), not the
150-class scene-parsing label map above, so its ids cannot be mapped to DIH's top-25 labels.

Items: {'image': uint8 [H, W, 3], 'label': uint8 [H, W] in {0..25, 255}, 'path'}.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from data_pipelines import image_ops
from data_pipelines.image_ops import DecodeError

NUM_CLASSES = 26          # top-25 labels + other
IGNORE_LABEL = 255
DOWNLOAD = "http://sceneparsing.csail.mit.edu/ (ADEChallengeData2016.zip)"
_SPLIT_DIRS = {"train": "training", "val": "validation"}


def _top25_lut() -> np.ndarray:
  lut = np.full(256, IGNORE_LABEL, np.uint8)
  lut[1:26] = np.arange(25)
  lut[26:151] = 25
  return lut


TOP25_LUT = _top25_lut()


def map_to_top25(annotation: np.ndarray) -> np.ndarray:
  """ADE20K class ids [H, W] (0..150) -> DIH's 26 classes (module docstring), uint8 [H, W]."""
  return TOP25_LUT[np.asarray(annotation, np.uint8)]


class ADE20KSource:
  """ADEChallengeData2016 images with their annotations mapped to the top-25 labels + other."""

  fields = {"image": "image", "label": "label"}

  def __init__(self, root: str, split: str = "train"):
    root = os.path.expanduser(root)
    if split not in _SPLIT_DIRS:
      raise ValueError(f"unknown ADE20K split {split!r}; use train or val (ade20k:/root[:split])")
    self._root, self._split = root, split
    image_dir = os.path.join(root, "images", _SPLIT_DIRS[split])
    self._label_dir = os.path.join(root, "annotations", _SPLIT_DIRS[split])
    fix = (f"download {DOWNLOAD} and unzip it so that {image_dir}/*.jpg and "
           f"{self._label_dir}/*.png exist")
    if not os.path.isdir(image_dir) or not os.path.isdir(self._label_dir):
      raise FileNotFoundError(f"ADE20K {split} not found under {root}; {fix}")
    self._paths = sorted(os.path.join(image_dir, n) for n in os.listdir(image_dir)
                         if n.lower().endswith(".jpg"))
    if not self._paths:
      raise ValueError(f"no ADE20K images (*.jpg) in {image_dir}; {fix}")

  def __len__(self) -> int:
    return len(self._paths)

  def path(self, index: int) -> str:
    return self._paths[index]

  def label_path(self, index: int) -> str:
    stem = os.path.splitext(os.path.basename(self._paths[index]))[0]
    return os.path.join(self._label_dir, stem + ".png")

  def __getitem__(self, index: int) -> dict[str, Any]:
    path, label_path = self._paths[index], self.label_path(index)
    try:
      with open(path, "rb") as f:
        image = image_ops.decode_image(f.read(), path)
      with Image.open(label_path) as annotation:
        ids = np.asarray(annotation)
    except OSError as e:
      raise DecodeError(label_path if os.path.exists(path) else path,
                        getattr(e, "strerror", None) or str(e)) from e
    if ids.ndim == 3:
      ids = ids[..., 0]
    if ids.shape != image.shape[:2]:
      raise DecodeError(label_path, f"is {ids.shape[0]}x{ids.shape[1]} but {path} is "
                        f"{image.shape[0]}x{image.shape[1]}")
    return {"image": image, "label": map_to_top25(ids), "path": path}

  def __repr__(self) -> str:
    return f"ADE20KSource({self._root}, {self._split}, {len(self)} images)"


def source_from_spec(rest: str, *, image_key: str = "image") -> ADE20KSource:
  """The source of 'ade20k:' + rest, rest = '/root[:split]'."""
  del image_key
  root, sep, split = rest.rpartition(":")
  if not sep or split not in _SPLIT_DIRS:
    root, split = rest, "train"
  if not root:
    raise ValueError("ade20k source needs a root: ade20k:/path/to/ADEChallengeData2016[:split]")
  return ADE20KSource(root, split)
