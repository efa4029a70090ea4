"""Object-mask shapes from a folder of mask images: the holes of video-inpainting training.

The CPN paper (sec. 4.2) makes its holes from object masks (PASCAL VOC 2012, MIT saliency): "a
mask is randomly resized to be smaller than the size of the background frames" and then moved
along a random path. `data.mask_source` names such a folder (`data_pipelines.pipeline` adds one
drawn mask per example as the field 'object_mask'); the task moves it (`cpjax.ops.masks.
moving_shape_masks`).

Files: every *.jpg, *.jpeg, *.png, *.webp under the folder, recursively (`sources.image_paths`).
  * A palette PNG (PIL mode 'P', like VOC's `SegmentationObject/`) holds object ids: every
    value in 1..254 is one object, a separate mask; 0 (background) and 255 (VOC's void outline
    around objects) are not foreground.
  * Any other image (binary or greyscale; colour is averaged over its channels) is one mask:
    foreground = value > 127.
The folder is scanned once when a pipeline starts (every file decoded, about a second per
thousand VOC files): the masks are the (file, object id) pairs with foreground. Files without
foreground are left out (with a warning); a folder without any mask is an error.

Drawing (`MaskFolder.draw`): a mask uniformly among all objects; its bounding box is cut out
and resized (bilinear, `image_ops.resize_field`), aspect kept, so that its longer side is
U(lo, hi) times the shorter side of the training image (`size`, data.mask_size: default
(0.2, 0.5), the diameters of the configs' blobs); thresholded at 127 (binary again), flipped
left-right with probability 1/2 and placed at a uniform offset with the whole box inside the
image. Cutting the box out makes the hole size
independent of the object's size in its own photo (VOC objects range from a few pixels to the
whole image), so the size range alone sets how much of the frame is hidden, and the whole shape
is a hole at least in the first frame. A draw that comes out empty (a thin object resized
away) is redrawn from the same generator, so the result stays a function of the generator (100
empty draws in a row are an error).
"""
from __future__ import annotations

import io
import os

import numpy as np
from absl import logging
from PIL import Image

from data_pipelines import image_ops
from data_pipelines import sources
from data_pipelines import voc

FIELD = "object_mask"   # the batch field: uint8 [B, h, w, 1] in {0, 255}
_STREAM = 0x6D61736B    # 'mask': the mask draws' own random stream beside the crops'
_TRIES = 100


def mask_rng(seed: int, position: int) -> np.random.Generator:
  """The generator of the mask of stream position `position`: a function of (seed, position)
  only, separate from the pipeline's crop and flip generator `default_rng([seed, position])`."""
  return np.random.default_rng([seed, position, _STREAM])


def _mode(data: bytes) -> str:
  """PIL mode of encoded bytes; '' when PIL cannot open them (`decode_image` then names why)."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      return img.mode
  except Exception:  # PIL raises many types; decode_image then names the problem
    return ""


def read_objects(path: str) -> np.ndarray:
  """A mask file -> uint8 [H, W] object ids: 0 = background, 1..254 = objects.

  Palette PNGs keep their values (255 becomes 0); other images give 1 where the channel mean is
  > 127, else 0 (module docstring).

  Raises:
    DecodeError: the file cannot be read or decoded (the message names it).
  """
  data = image_ops.read_bytes(path)
  if _mode(data) == "P":
    ids = voc.decode_label_png(data, path)
    return np.where(ids == voc.IGNORE_LABEL, 0, ids).astype(np.uint8)
  return (image_ops.decode_image(data, path).mean(axis=-1) > 127).astype(np.uint8)


_FIX = ("set data.mask_source to a folder of mask images (e.g. VOCdevkit/VOC2012/"
        "SegmentationObject) or to '' for random blobs")


class MaskFolder:
  """The object masks of a folder (module docstring); picklable for grain worker processes."""

  def __init__(self, root: str, size: tuple[float, float] = (0.2, 0.5)):
    """Scans `root`.

    Args:
      root: the folder.
      size: (lo, hi) with 0 < lo <= hi <= 1: range of the drawn mask's longer box side, as a
        fraction of the image's shorter side.

    Raises:
      ValueError: no such folder, no image files, no foreground in any file, a bad size range,
        or an undecodable file (`DecodeError`); one line naming the fix.
    """
    root = os.path.expanduser(root)
    lo, hi = map(float, size)
    if not 0 < lo <= hi <= 1:
      raise ValueError(f"data.mask_size is {tuple(size)}; use (lo, hi) with 0 < lo <= hi <= 1 "
                       "(the mask's longer side as a fraction of the image's shorter side)")
    if not os.path.isdir(root):
      what = "is not a directory" if os.path.exists(root) else "does not exist"
      raise ValueError(f"mask folder {root} {what}; {_FIX}")
    self._paths = sources.image_paths(root)
    if not self._paths:
      raise ValueError(f"no mask images under {root} (searched *.jpg, *.jpeg, *.png, *.webp "
                       f"recursively); {_FIX}")
    files, ids = [], []
    for i, path in enumerate(self._paths):
      present = np.flatnonzero(np.bincount(read_objects(path).ravel(), minlength=256)[1:]) + 1
      files.extend([i] * len(present))
      ids.extend(present)
    if not ids:
      raise ValueError(f"none of the {len(self._paths)} mask files under {root} has foreground "
                       "(palette PNGs: object ids 1..254; other images: pixels > 127); give "
                       "white objects on black or VOC SegmentationObject PNGs, or set "
                       "data.mask_source to '' for random blobs")
    empty = len(self._paths) - len(set(files))
    if empty:
      logging.warning("%d of the %d mask files under %s have no foreground and are not used",
                      empty, len(self._paths), root)
    self._root, self._size = root, (lo, hi)
    self._files, self._ids = np.asarray(files, np.int32), np.asarray(ids, np.uint8)

  def __len__(self) -> int:
    """The number of masks (objects), not of files."""
    return len(self._ids)

  def mask(self, index: int) -> np.ndarray:
    """Mask `index` at its file's size: bool [H, W]."""
    return read_objects(self._paths[self._files[index]]) == self._ids[index]

  def draw(self, rng: np.random.Generator, image_size: tuple[int, int]) -> np.ndarray:
    """A random mask resized and placed in an image (module docstring).

    Args:
      rng: the generator, e.g. `mask_rng(seed, position)`; the result is a function of it.
      image_size: (h, w) of the training image.

    Returns:
      uint8 [h, w, 1] in {0, 255}, with foreground.

    Raises:
      ValueError: 100 draws in a row came out empty.
    """
    h, w = image_size
    for _ in range(_TRIES):
      obj = self.mask(int(rng.integers(len(self))))
      rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
      box = obj[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
      scale = rng.uniform(*self._size) * min(h, w) / max(box.shape)
      shape = (max(1, round(box.shape[0] * scale)), max(1, round(box.shape[1] * scale)))
      resized = image_ops.resize_field(box[..., None].astype(np.uint8) * 255, shape, "mask")
      resized = np.where(resized > 127, np.uint8(255), np.uint8(0))
      if not resized.any():
        continue
      if rng.random() < 0.5:
        resized = image_ops.flip_left_right(resized)
      top, left = int(rng.integers(0, h - shape[0] + 1)), int(rng.integers(0, w - shape[1] + 1))
      return np.pad(resized, ((top, h - top - shape[0]), (left, w - left - shape[1]), (0, 0)))
    raise ValueError(f"{_TRIES} masks drawn from {self._root} all vanished when resized to "
                     f"{self._size} of {h}x{w}; raise data.mask_size or data.image_size, or "
                     "remove masks of thin objects")

  def __repr__(self) -> str:
    return f"MaskFolder({self._root}, {len(self)} masks in {len(self._paths)} files)"
