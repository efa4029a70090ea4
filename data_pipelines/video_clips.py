"""Real frame sequences for video-inpainting training: clips of consecutive frames from folders.

Spec (`data.source` / `eval.source`): `video_clips:ROOT[:NUM_FRAMES[:STEP]]`. ROOT is a folder
of sequences, each a folder of frames whose names sort in time order (numbers compared as
numbers, `video.image_files`), e.g. DAVIS `DAVIS/JPEGImages/480p` (`<seq>/00000.jpg ...`) or
YouTube-VOS `train/JPEGImages`; a ROOT that holds frames itself is one sequence. Every window of
NUM_FRAMES frames taken STEP frames apart (frames i, i + STEP, ..., i + (NUM_FRAMES - 1) STEP) is
one item; NUM_FRAMES must equal the task's `sequence.num_frames` (default 5, the paper's T;
STEP default 1). Sequences shorter than one window are left out.

Items hold the frames as aligned 'image' fields, so the pipeline crops, resizes and flips every
frame of a clip identically (`data_pipelines.pipeline`): frame 0 is 'image', frame k is
`frame_field(k)` = 'frame_k', all uint8 [H, W, 3]; `clip_length(batch)` counts them.
An unreadable frame is a `DecodeError` naming it (training replaces the clip with the next one).
"""
from __future__ import annotations

import os
import pathlib
from typing import Any, Mapping

from data_pipelines import image_ops
from data_pipelines.image_ops import DecodeError
from data_pipelines.sources import IMAGE_SUFFIXES
from data_pipelines.video import image_files

DEFAULT_NUM_FRAMES = 5
_FORM = "video_clips:ROOT[:NUM_FRAMES[:STEP]]"


def frame_field(k: int) -> str:
  """The batch field of frame k of a clip ('image' for frame 0)."""
  return "image" if k == 0 else f"frame_{k}"


def clip_length(batch: Mapping[str, Any]) -> int:
  """The number of frames of the clips in a batch (1 for a batch of still images)."""
  k = 1
  while frame_field(k) in batch:
    k += 1
  return k


def _holds_frames(folder: pathlib.Path) -> bool:
  return any(f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() for f in folder.iterdir())


def _sequence_folders(root: pathlib.Path) -> list[pathlib.Path]:
  if not root.is_dir():
    raise FileNotFoundError(
        f"video clip root {root} {'is not a folder' if root.exists() else 'does not exist'}; "
        f"give {_FORM} with ROOT a folder of frame folders (e.g. DAVIS/JPEGImages/480p from "
        "https://davischallenge.org/davis2017/code.html)")
  if _holds_frames(root):
    return [root]
  return sorted(d for d in root.iterdir() if d.is_dir() and _holds_frames(d))


class VideoClipSource:
  """Windows of consecutive frames from a folder of frame folders (module docstring)."""

  def __init__(self, root: str, num_frames: int = DEFAULT_NUM_FRAMES, step: int = 1):
    if num_frames < 2 or step < 1:
      raise ValueError(f"video clips need NUM_FRAMES >= 2 and STEP >= 1 (got {num_frames}, "
                       f"{step}); write {_FORM}")
    self._root, self.num_frames, self.step = pathlib.Path(root).expanduser(), num_frames, step
    self.fields = {frame_field(k): "image" for k in range(num_frames)}
    span = (num_frames - 1) * step + 1
    self._sequences: list[list[str]] = []
    self._windows: list[tuple[int, int]] = []      # (sequence, first frame)
    short = []
    for folder in _sequence_folders(self._root):
      frames = [str(f) for f in image_files(folder)]
      if len(frames) < span:
        short.append(f"{folder.name} ({len(frames)})")
        continue
      self._windows += [(len(self._sequences), i) for i in range(len(frames) - span + 1)]
      self._sequences.append(frames)
    if not self._windows:
      raise ValueError(
          f"no sequence under {self._root} has the {span} frames one clip spans "
          f"({num_frames} frames, step {step})" + (f"; too short: {', '.join(short)}" if short
                                                   else "; it holds no folder of frames")
          + f". Give {_FORM} with ROOT a folder of frame folders, or fewer frames")

  def __len__(self) -> int:
    return len(self._windows)

  def frame_paths(self, index: int) -> list[str]:
    sequence, first = self._windows[index]
    return self._sequences[sequence][first:first + self.num_frames * self.step:self.step]

  def path(self, index: int) -> str:
    return self.frame_paths(index)[0]

  def __getitem__(self, index: int) -> dict[str, Any]:
    item: dict[str, Any] = {"path": self.path(index)}
    for k, path in enumerate(self.frame_paths(index)):
      try:
        with open(path, "rb") as f:
          data = f.read()
      except OSError as e:
        raise DecodeError(path, e.strerror or str(e)) from e
      item[frame_field(k)] = image_ops.decode_image(data, path)
    first = item["image"].shape
    for k in range(1, self.num_frames):
      if item[frame_field(k)].shape != first:
        raise DecodeError(self.frame_paths(index)[k], f"is {item[frame_field(k)].shape[:2]} but "
                          f"the clip's first frame is {first[:2]}; frames of a sequence must "
                          "have one size")
    return item

  def __repr__(self) -> str:
    return (f"VideoClipSource({self._root}, {len(self._sequences)} sequences, {len(self)} clips "
            f"of {self.num_frames} frames, step {self.step})")


def source_from_spec(rest: str, *, image_key: str = "image") -> VideoClipSource:
  """The source of 'video_clips:' + rest, rest = 'ROOT[:NUM_FRAMES[:STEP]]'."""
  del image_key
  parts = rest.split(":")
  numbers = []
  while len(parts) > 1 and parts[-1].strip().isdigit() and len(numbers) < 2:
    numbers.insert(0, int(parts.pop()))
  root = ":".join(parts)
  if not root:
    raise ValueError(f"video_clips source needs a root: {_FORM}")
  return VideoClipSource(os.path.expanduser(root), *numbers)
