"""iHarmony4 (Cong et al., DoveNet) in its on-disk format, as a multi-field grain source.

Spec (`data.source`): `iharmony4:/root[:split][:subsets]`, e.g. `iharmony4:/data/iHarmony4`,
`iharmony4:/data/iHarmony4:test`, `iharmony4:/data/iHarmony4:train:HCOCO,HFlickr`.
split is 'train' (default) or 'test'; subsets a comma list of HCOCO, HAdobe5k, HFlickr,
Hday2night (any case; default all four, in that order).

Layout (as distributed, and as the reference loader `HDataset` reads it), per subset:

  root/<Subset>/composite_images/<name>.jpg    the composite (input)
  root/<Subset>/real_images/<real>.jpg         the ground truth
  root/<Subset>/masks/<mask>.png               the foreground mask (channel 0, 0 / 255)
  root/<Subset>/<Subset>_train.txt, <Subset>_test.txt   one composite name per line

with real = the name's first '_'-separated token + '.jpg' and mask = the name without its last
'_k' token + '.png': composite `c360951_1097742_1.jpg` -> real `c360951.jpg`, mask
`c360951_1097742.png`. Sizes (train / test): HCOCO 38545 / 4283, HAdobe5k 19437 / 2160,
HFlickr 7449 / 828, Hday2night 311 / 133.

Items: {'image': composite uint8 [H, W, 3], 'real': uint8 [H, W, 3], 'mask': uint8 [H, W, 1]
(channel 0 of the mask file), 'subset': int (index in `SUBSETS`), 'path': composite path}.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from data_pipelines import image_ops
from data_pipelines.image_ops import DecodeError

SUBSETS = ("HCOCO", "HAdobe5k", "HFlickr", "Hday2night")
SPLITS = ("train", "test")
DOWNLOAD = "https://github.com/bcmi/Image-Harmonization-Dataset-iHarmony4"
LAYOUT = ("<root>/<Subset>/{composite_images,real_images,masks}/ and "
          "<root>/<Subset>/<Subset>_{train,test}.txt for Subset in HCOCO, HAdobe5k, HFlickr, "
          "Hday2night")


def real_name(composite_name: str) -> str:
  """'c360951_1097742_1.jpg' -> 'c360951.jpg' (the reference's rule)."""
  return composite_name.split("_")[0] + ".jpg"


def mask_name(composite_name: str) -> str:
  """'c360951_1097742_1.jpg' -> 'c360951_1097742.png' (the reference's rule)."""
  return "_".join(composite_name.split("_")[:-1]) + ".png"


class IHarmony4Source:
  """The composites of some iHarmony4 subsets in one split, listed in the subsets' order."""

  fields = {"image": "image", "real": "image", "mask": "mask"}
  scalars = ("subset",)

  def __init__(self, root: str, split: str = "train", subsets: tuple[str, ...] = SUBSETS):
    root = os.path.expanduser(root)
    if split not in SPLITS:
      raise ValueError(f"unknown iHarmony4 split {split!r}; use train or test "
                       "(iharmony4:/root[:split][:subsets])")
    self._root, self._split, self._subsets = root, split, tuple(subsets)
    missing_fix = (f"download iHarmony4 from {DOWNLOAD} and unzip it into {root}; expected "
                   f"layout: {LAYOUT}")
    if not os.path.isdir(root):
      raise FileNotFoundError(f"iHarmony4 not found: {root} does not exist; {missing_fix}")
    self._items: list[tuple[int, str]] = []  # (subset id, composite name)
    for name in self._subsets:
      listing = os.path.join(root, name, f"{name}_{split}.txt")
      if not os.path.isfile(listing):
        raise FileNotFoundError(f"iHarmony4 subset {name} not found: no {listing}; "
                                f"{missing_fix} (or select subsets, e.g. "
                                f"iharmony4:{root}:{split}:HCOCO)")
      with open(listing, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
      subset_id = SUBSETS.index(name)
      self._items.extend((subset_id, os.path.basename(n)) for n in names)
    if not self._items:
      raise ValueError(f"the iHarmony4 {split} lists of {', '.join(self._subsets)} under {root} "
                       "are empty; check the download")

  def __len__(self) -> int:
    return len(self._items)

  def _paths(self, index: int) -> tuple[str, str, str]:
    subset_id, name = self._items[index]
    base = os.path.join(self._root, SUBSETS[subset_id])
    return (os.path.join(base, "composite_images", name),
            os.path.join(base, "real_images", real_name(name)),
            os.path.join(base, "masks", mask_name(name)))

  def path(self, index: int) -> str:
    return self._paths(index)[0]

  def __getitem__(self, index: int) -> dict[str, Any]:
    composite_path, real_path, mask_path = self._paths(index)
    composite, real = image_ops.read_image(composite_path), image_ops.read_image(real_path)
    mask = image_ops.read_image(mask_path)[..., :1]
    for other, path in ((real, real_path), (mask, mask_path)):
      if other.shape[:2] != composite.shape[:2]:
        raise DecodeError(path, f"is {other.shape[0]}x{other.shape[1]} but the composite "
                          f"{composite_path} is {composite.shape[0]}x{composite.shape[1]}")
    return {"image": composite, "real": real, "mask": np.ascontiguousarray(mask),
            "subset": self._items[index][0], "path": composite_path}

  def __repr__(self) -> str:
    return (f"IHarmony4Source({self._root}, {self._split}, {','.join(self._subsets)}, "
            f"{len(self)} composites)")


def parse_subsets(text: str) -> tuple[str, ...]:
  """'hcoco,HFlickr' -> ('HCOCO', 'HFlickr') (case-insensitive; ValueError naming the choices)."""
  by_lower = {s.lower(): s for s in SUBSETS}
  out = []
  for token in text.split(","):
    token = token.strip()
    if token.lower() not in by_lower:
      raise ValueError(f"unknown iHarmony4 subset {token!r}; use a comma list of "
                       f"{', '.join(SUBSETS)}")
    out.append(by_lower[token.lower()])
  return tuple(out)


def source_from_spec(rest: str, *, image_key: str = "image") -> IHarmony4Source:
  """The source of 'iharmony4:' + rest, rest = '/root[:split][:subsets]' (module docstring)."""
  del image_key  # iHarmony4 items have fixed fields
  parts = rest.split(":")
  split, subsets = "train", SUBSETS
  # Options are read from the right, so a root may itself contain ':'.
  while len(parts) > 1 and (parts[-1] in SPLITS or "," in parts[-1]
                            or parts[-1].lower() in {s.lower() for s in SUBSETS}):
    token = parts.pop()
    if token in SPLITS:
      split = token
    else:
      subsets = parse_subsets(token)
  root = ":".join(parts)
  if not root:
    raise ValueError("iharmony4 source needs a root: iharmony4:/path/to/iHarmony4[:split]"
                     "[:subsets]")
  return IHarmony4Source(root, split, subsets)
