"""PASCAL VOC 2012 semantic segmentation (+ the optional SBD annotations) for FCN.

Spec (`data.source`): `voc:VOC_ROOT:SPLIT[@SBD_ROOT]`, e.g.
  voc:/data/VOCdevkit/VOC2012:train        ImageSets/Segmentation/train.txt (1464 images)
  voc:/data/VOCdevkit/VOC2012:val          ImageSets/Segmentation/val.txt (1449 images)
  voc:/data/VOCdevkit/VOC2012:seg11valid   any list file placed in ImageSets/Segmentation/
  voc:/data/VOCdevkit/VOC2012:sbd_train@/data/benchmark_RELEASE/dataset   SBD's train.txt (8498)
  voc:/data/VOCdevkit/VOC2012:train_aug@/data/benchmark_RELEASE/dataset
      VOC train + SBD train + SBD val, minus VOC val (10582 images, the usual "trainaug").

Layout of VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/):
  VOC_ROOT/JPEGImages/<id>.jpg
  VOC_ROOT/SegmentationClass/<id>.png     palette PNG: pixel value = class id (0..20), 255 = the
                                          'void' outline around objects (ignored by loss/metrics)
  VOC_ROOT/ImageSets/Segmentation/{train,val,trainval}.txt   one image id per line
SBD (benchmark.tgz, http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/
semantic_contours/benchmark.tgz):
  SBD_ROOT/img/<id>.jpg, SBD_ROOT/cls/<id>.mat (MATLAB struct GTcls.Segmentation, class ids
  0..20, no void outline), SBD_ROOT/{train,val}.txt.
An id found in both is read from VOC.

Labels: a palette ('P') or grey ('L') PNG holds class ids directly; an RGB PNG (a re-saved copy)
is mapped back through the VOC colour map (`PALETTE`); a colour outside it is a decode error.

Items: {'image': uint8 [H, W, 3], 'label': uint8 [H, W] in {0..20, 255}, 'path'}.
"""
from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from data_pipelines import image_ops
from data_pipelines.image_ops import DecodeError

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
           "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
           "sheep", "sofa", "train", "tvmonitor")
IGNORE_LABEL = 255
VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)"
SBD_URL = ("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
           "benchmark.tgz")
_SBD_SPLITS = {"sbd_train": ("train",), "sbd_val": ("val",)}


def voc_palette() -> np.ndarray:
  """The VOC colour map (VOCdevkit's labelcolormap): uint8 [256, 3], class id -> RGB.

  Colour of id c: bit k of c (k = 0..7, read three at a time) sets bit 7 - j of R, G, B for
  k = 3j, 3j + 1, 3j + 2. Id 255 (void) is (224, 224, 192).
  """
  palette = np.zeros((256, 3), np.uint8)
  for c in range(256):
    value, rgb = c, [0, 0, 0]
    for j in range(8):
      for channel in range(3):
        rgb[channel] |= ((value >> channel) & 1) << (7 - j)
      value >>= 3
    palette[c] = rgb
  return palette


PALETTE = voc_palette()


def decode_label_png(data: bytes, path: str) -> np.ndarray:
  """A SegmentationClass PNG -> uint8 [H, W] class ids (module docstring).

  Raises:
    DecodeError: unreadable file, or an RGB label with a colour that is not a VOC class.
  """
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      if img.mode in ("P", "L"):
        return np.asarray(img, np.uint8).copy()
      rgb = np.asarray(img.convert("RGB"), np.uint8)
  except Exception as e:  # PIL raises many types
    raise DecodeError(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
  codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
  known = (PALETTE[:, 0].astype(np.int32) << 16) | (PALETTE[:, 1].astype(np.int32) << 8) | (
      PALETTE[:, 2])
  valid = np.r_[np.arange(len(CLASSES)), IGNORE_LABEL]
  order = np.argsort(known[valid])
  pos = np.clip(np.searchsorted(known[valid][order], codes), 0, len(valid) - 1)
  ids = valid[order][pos]
  if np.any(known[ids] != codes):
    bad = rgb[known[ids] != codes][0]
    raise DecodeError(path, f"colour {tuple(int(v) for v in bad)} is not a VOC class colour; "
                      "save labels as palette PNGs of class ids")
  return ids.astype(np.uint8)


def read_sbd_mat(path: str) -> np.ndarray:
  """SBD cls/<id>.mat -> uint8 [H, W] class ids (GTcls.Segmentation)."""
  import scipy.io  # pylint: disable=import-outside-toplevel

  try:
    mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, np.uint8)
  except (OSError, ValueError, KeyError, AttributeError) as e:
    raise DecodeError(path, f"not an SBD class annotation ({e})") from e


def _read_ids(list_path: str) -> list[str]:
  with open(list_path) as f:
    return [line.split()[0] for line in f if line.strip()]


def _layout_help(root: str) -> str:
  return (f"download {VOC_URL} and extract it so that {root}/JPEGImages/<id>.jpg, "
          f"{root}/SegmentationClass/<id>.png and {root}/ImageSets/Segmentation/{{train,val}}.txt "
          "exist (voc:/path/to/VOCdevkit/VOC2012:split)")


class VOCSegmentationSource:
  """Images and class-id label maps of one VOC / SBD split (see the module docstring)."""

  fields = {"image": "image", "label": "label"}

  def __init__(self, root: str, split: str, sbd_root: str | None = None):
    root = os.path.expanduser(root)
    self._root, self._split = root, split
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
      if not os.path.isdir(os.path.join(root, sub)):
        raise FileNotFoundError(f"PASCAL VOC 2012 not found: {os.path.join(root, sub)} does not "
                                f"exist; {_layout_help(root)}")
    list_dir = os.path.join(root, "ImageSets", "Segmentation")
    needs_sbd = split in _SBD_SPLITS or split == "train_aug"
    if needs_sbd and not sbd_root:
      raise ValueError(f"VOC split {split!r} needs the SBD annotations: give "
                       f"voc:{root}:{split}@/path/to/benchmark_RELEASE/dataset (from {SBD_URL})")
    if sbd_root:
      sbd_root = os.path.expanduser(sbd_root)
      for sub in ("img", "cls"):
        if not os.path.isdir(os.path.join(sbd_root, sub)):
          raise FileNotFoundError(f"SBD not found: {os.path.join(sbd_root, sub)} does not exist; "
                                  f"download {SBD_URL} and give its benchmark_RELEASE/dataset "
                                  "folder after '@'")
    self._sbd_root = sbd_root
    if split in _SBD_SPLITS:
      ids, voc_ids = self._sbd_ids(_SBD_SPLITS[split]), set()
    elif split == "train_aug":
      voc_ids = _read_ids(os.path.join(list_dir, "train.txt"))
      val = set(_read_ids(os.path.join(list_dir, "val.txt")))
      sbd = [i for i in self._sbd_ids(("train", "val")) if i not in val]
      ids = sorted(set(voc_ids) | set(sbd))
    else:
      list_path = os.path.join(list_dir, f"{split}.txt")
      if not os.path.isfile(list_path):
        have = sorted(n[:-4] for n in os.listdir(list_dir) if n.endswith(".txt"))
        raise FileNotFoundError(f"no list {list_path} for VOC split {split!r}; splits here: "
                                f"{', '.join(have) or 'none'}, and with @SBD_ROOT: sbd_train, "
                                "sbd_val, train_aug")
      ids = voc_ids = _read_ids(list_path)
    if not ids:
      raise ValueError(f"VOC split {split!r} under {root} lists no images")
    voc_set = set(voc_ids)
    self._items = [(i, i in voc_set) for i in ids]

  def _sbd_ids(self, lists: tuple[str, ...]) -> list[str]:
    ids: list[str] = []
    for name in lists:
      path = os.path.join(self._sbd_root, f"{name}.txt")
      if not os.path.isfile(path):
        raise FileNotFoundError(f"SBD list {path} does not exist; give the benchmark_RELEASE/"
                                f"dataset folder of {SBD_URL} after '@'")
      ids.extend(_read_ids(path))
    return ids

  def __len__(self) -> int:
    return len(self._items)

  def path(self, index: int) -> str:
    image_id, from_voc = self._items[index]
    if from_voc:
      return os.path.join(self._root, "JPEGImages", f"{image_id}.jpg")
    return os.path.join(self._sbd_root, "img", f"{image_id}.jpg")

  def label_path(self, index: int) -> str:
    image_id, from_voc = self._items[index]
    if from_voc:
      return os.path.join(self._root, "SegmentationClass", f"{image_id}.png")
    return os.path.join(self._sbd_root, "cls", f"{image_id}.mat")

  def __getitem__(self, index: int) -> dict[str, Any]:
    path, label_path = self.path(index), self.label_path(index)
    for p in (path, label_path):
      if not os.path.isfile(p):
        raise DecodeError(p, "no such file")
    with open(path, "rb") as f:
      image = image_ops.decode_image(f.read(), path)
    if label_path.endswith(".mat"):
      label = read_sbd_mat(label_path)
    else:
      with open(label_path, "rb") as f:
        label = decode_label_png(f.read(), label_path)
    if label.shape != image.shape[:2]:
      raise DecodeError(label_path, f"is {label.shape[0]}x{label.shape[1]} but {path} is "
                        f"{image.shape[0]}x{image.shape[1]}")
    return {"image": image, "label": label, "path": path}

  def __repr__(self) -> str:
    return f"VOCSegmentationSource({self._root}, {self._split}, {len(self)} images)"


def source_from_spec(rest: str, *, image_key: str = "image") -> VOCSegmentationSource:
  """The source of 'voc:' + rest, rest = 'VOC_ROOT:SPLIT[@SBD_ROOT]'."""
  del image_key  # VOC items have one image
  spec, _, sbd_root = rest.partition("@")
  root, sep, split = spec.rpartition(":")
  if not sep or not root or not split:
    raise ValueError(f"voc source {'voc:' + rest!r} needs a root and a split: "
                     "voc:/path/to/VOCdevkit/VOC2012:train (or :val, :train_aug@SBD_ROOT)")
  return VOCSegmentationSource(root, split, sbd_root or None)
