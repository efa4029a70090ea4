"""DAVIS video restoration: the Copy-and-Paste Networks paper's evaluation (sec. 5.1).

The paper evaluates on DAVIS videos "by putting imaginary object masks from DAVIS on the
videos"; the videos without the masks are the ground truth (PSNR, SSIM). Here the imaginary
masks of a video are the object annotations of another video of the same list:

  * pairing: sequence i of the list takes the masks of sequence (i + 1) mod n, so every video
    gets a real object's shape and motion that do not belong to it, and the pairing is the same
    at every evaluation (the paper does not say how it paired them);
  * frame t takes the mask of frame t of its mask sequence, played forwards and backwards when
    that sequence is shorter (t -> 0, 1, ..., M - 1, M - 2, ..., 1, 0, 1, ...), so the object
    keeps moving without jumps; every object of a frame is a hole (palette index > 0, the
    released test code's rule); a mask of another size is resized (nearest) to the frame's;
  * the videos: every sequence of the list, cut into clips like `video_clips` (every window of
    NUM_FRAMES frames STEP apart). The paper scores 25 randomly chosen sequences, which it does
    not name; a list file of one's own under ImageSets picks a subset.
Frames at DAVIS's 480p; the paper's frames are half that (240x424 in the released code): the
training loop's evaluation resizes them (configs/video_inpainting.py:davis). The task then
dilates the holes at that size (sequence.dilate, as the released test code dilates its masks).

Spec (`eval.source`): `davis:ROOT[:IMSET][:NUM_FRAMES[:STEP]]`, e.g. `davis:/data/DAVIS`,
`davis:/data/DAVIS:2016/val:5`. ROOT is the unzipped DAVIS-2017-trainval-480p.zip:
  ROOT/JPEGImages/480p/<seq>/00000.jpg ...    frames
  ROOT/Annotations/480p/<seq>/00000.png ...   palette PNGs of object ids, one per frame
  ROOT/ImageSets/2017/val.txt, train.txt      sequence names, one per line (also 2016/*.txt)
IMSET (default 2017/val) names ROOT/ImageSets/<IMSET>.txt; lines that are paths (DAVIS 2016's
own `/JPEGImages/480p/bear/00000.jpg /Annotations/...` lists) name their folder's sequence.
Every frame must be annotated (trainval; test-dev annotates only frame 0).

Items: `video_clips`'s frames ('image', 'frame_k') and the holes `video_clips.hole_field(k)`,
uint8 [H, W] 'label' fields in {0, 1} (nearest resize in the pipeline, as the released code
resizes masks).
"""
from __future__ import annotations

import pathlib
from typing import Any

import cv2
import numpy as np

from data_pipelines import video, video_clips
from data_pipelines.image_ops import DecodeError

RESOLUTION = "480p"
DEFAULT_IMSET = "2017/val"
_FORM = "davis:ROOT[:IMSET][:NUM_FRAMES[:STEP]]"
_GET = "unzip DAVIS-2017-trainval-480p.zip from https://davischallenge.org/davis2017/code.html"


def mask_frame(t: int, count: int) -> int:
  """The mask of frame t from a mask sequence of `count` frames, played back and forth."""
  if count == 1:
    return 0
  r = t % (2 * (count - 1))
  return r if r < count else 2 * (count - 1) - r


def read_imset(path: pathlib.Path) -> list[str]:
  """Sequence names of an ImageSets list, in order, each once (module docstring)."""
  names = []
  for line in path.read_text().splitlines():
    token = line.split()[0] if line.split() else ""
    name = pathlib.PurePosixPath(token).parent.name if "/" in token else token
    if name and name not in names:
      names.append(name)
  return names


class DavisSource:
  """Clips of DAVIS videos with the holes of another video (module docstring)."""

  def __init__(self, root: str, imset: str = DEFAULT_IMSET,
               num_frames: int = video_clips.DEFAULT_NUM_FRAMES, step: int = 1):
    """Scans ROOT's list `imset`.

    Raises:
      ValueError: a missing folder or list, fewer than two sequences, a sequence without an
        annotation per frame; one line naming the path and the fix.
    """
    self._root = pathlib.Path(root).expanduser()
    listing = self._root / "ImageSets" / f"{imset}.txt"
    if not listing.is_file():
      found = sorted(str(p.relative_to(self._root / "ImageSets"))[:-4]
                     for p in (self._root / "ImageSets").glob("**/*.txt"))
      raise ValueError(f"no sequence list {listing}; " + (
          f"use one of {', '.join(found)} ({_FORM})" if found else
          f"is {self._root} a DAVIS root? ({_GET})"))
    self._names = read_imset(listing)
    if len(self._names) < 2:
      raise ValueError(f"{listing} lists {len(self._names)} sequence; the evaluation puts the "
                       "masks of one video on another, so it needs at least two")
    frames_dirs, self._mask_files = [], []
    for name in self._names:
      frames_dir = self._root / "JPEGImages" / RESOLUTION / name
      masks_dir = self._root / "Annotations" / RESOLUTION / name
      try:
        count, masks = len(video.image_files(frames_dir)), video.image_files(masks_dir)
      except video.VideoError as e:
        raise ValueError(f"{e} ({listing} lists {name}; {_GET})") from e
      if len(masks) != count:
        raise ValueError(f"{masks_dir} holds {len(masks)} masks for {count} frames; the "
                         "evaluation needs every frame annotated (DAVIS trainval, not test-dev)")
      frames_dirs.append(frames_dir)
      self._mask_files.append([str(m) for m in masks])
    self._clips = video_clips.VideoClipSource(str(self._root), num_frames, step,
                                              sequences=frames_dirs)
    self.num_frames = num_frames
    self.fields = {**self._clips.fields,
                   **{video_clips.hole_field(k): "label" for k in range(num_frames)}}

  def __len__(self) -> int:
    return len(self._clips)

  def path(self, index: int) -> str:
    return self._clips.path(index)

  def mask_sequence(self, index: int) -> str:
    """The name of the sequence whose masks clip `index` gets."""
    sequence, _ = self._clips.window(index)
    return self._names[(sequence + 1) % len(self._names)]

  def _hole(self, path: str, size: tuple[int, int]) -> np.ndarray:
    try:
      hole = video.read_mask(path, released=True).astype(np.uint8)
    except video.VideoError as e:
      raise DecodeError(path, str(e)) from e
    if hole.shape != size:
      hole = cv2.resize(hole, size[::-1], interpolation=cv2.INTER_NEAREST)
    return hole

  def __getitem__(self, index: int) -> dict[str, Any]:
    item = self._clips[index]
    sequence, frames = self._clips.window(index)
    masks = self._mask_files[(sequence + 1) % len(self._names)]
    size = item["image"].shape[:2]
    for k, t in enumerate(frames):
      item[video_clips.hole_field(k)] = self._hole(masks[mask_frame(t, len(masks))], size)
    return item

  def __repr__(self) -> str:
    return (f"DavisSource({self._root}, {len(self._names)} sequences, {len(self)} clips of "
            f"{self.num_frames} frames with another sequence's masks)")


def source_from_spec(rest: str, *, image_key: str = "image") -> DavisSource:
  """The source of 'davis:' + rest, rest = 'ROOT[:IMSET][:NUM_FRAMES[:STEP]]'."""
  del image_key
  parts = rest.split(":")
  numbers = []
  while len(parts) > 1 and parts[-1].strip().isdigit() and len(numbers) < 2:
    numbers.insert(0, int(parts.pop()))
  if not parts[0]:
    raise ValueError(f"davis source needs a root: {_FORM}")
  if len(parts) > 2:
    raise ValueError(f"bad davis source 'davis:{rest}'; write {_FORM}")
  return DavisSource(parts[0], *(parts[1:] or [DEFAULT_IMSET]), *numbers)
