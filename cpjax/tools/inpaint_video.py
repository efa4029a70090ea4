r"""Remove the masked regions of a video with a Copy-and-Paste Network, trained or released.

  python -m cpjax.tools.inpaint_video --workdir=DIR --frames=FRAMES_DIR_OR_VIDEO \
      [--masks=MASKS_DIR | --exposure=LOW,HIGH] --out=OUT_DIR [--size=HxW] [--[no]released] \
      [--step=N] [--window=120] [--stride=2] [--dilate=4] [--evaluate] [--fps=10] [--overwrite] \
      [--verbose]

--workdir: a training run (`configs/video_*.py`) or a directory of converted released weights
(`python -m cpjax.tools.convert --model=cpn_video`).

Inference follows the released test code (shleecs/Copy-and-Paste-Networks-for-Deep-Video-
Inpainting, CPNet_test.py and DAVIS_dataset.py):
  1. masks dilated with a 3x3 cross `--dilate` times; holes filled with the ImageNet mean
     colour;
  2. references of frame f: every `--stride`-th frame within `--window` frames of f, f excluded
     (`reference_indices`, the released code's window rule);
  3. pass 0 completes the frames in reverse order, pass 1 in order (from the original frames,
     keeping pass 0's alignment features as the released code does); after each frame the
     completed frame replaces it as a reference (frame, hole = 0, alignment features);
  4. result f = pass0[f] (N - f) / N + pass1[f] f / N (float32, the released order of operations).
The per-frame step is jitted once (fixed number of reference slots, unused ones masked out) and
the reference memory (frames, holes, alignment features) stays on the device.

Frame preparation, two procedures (`--released`, default on for converted released weights and
off for training runs):
  * released (the released test, step by step): frames decoded to RGB, divided by 255 in
    float64, resized with cv2.resize INTER_LINEAR (half-pixel centres, no antialiasing) and
    stored as float32; the size is --size, default 240x424 (the released 'half' size, whatever
    the video's aspect ratio), each side rounded to the nearest multiple of 8 (a remainder <= 4
    rounds down), so no padding is needed; a mask pixel is a hole where PIL's convert('P')
    gives an index > 0 (a palette PNG's object ids, any non-black grey or colour pixel),
    resized with cv2 INTER_NEAREST (source pixel floor(i * in / out)) before the dilation; the
    result, at that size, becomes 8-bit by truncation ((x * 255).astype(uint8)). The released
    code saves JPEG (PIL's default quality 75); the tool writes the same 8-bit values as PNG.
  * --noreleased: frames keep their size unless --size is given (PIL's antialiased bilinear on
    the 8-bit frames, masks PIL nearest; antialiasing suits downscaling for a network trained on
    the training pipeline's antialiased crops), are zero-padded (centred) to a multiple of 8
    for the network and cropped after; a mask pixel is a hole where a palette index is > 0 or
    the first channel >= 128; the result is rounded to 8 bits.

--frames: a folder of images (e.g. DAVIS JPEGImages/480p/<seq>) or a video file. --masks: a
folder with one mask per frame; omitted for a DAVIS folder, its Annotations folder is used;
--masks=random:SEED draws a moving synthetic object mask per frame (a blob like the training
masks, on a smooth path that keeps it in every frame), for DAVIS-style evaluation of real frames
with --evaluate.
--exposure=LOW,HIGH (paper sec. 5.3): instead of masks, the holes are the under/over-exposed
pixels of the prepared frames, luminance <= LOW or >= HIGH (in [0, 1]).

Writes OUT_DIR/00000.png ... (the completed frames), OUT_DIR/video.mp4 if OpenCV is installed,
and with --evaluate OUT_DIR/metrics.json: PSNR / SSIM per frame and per video of the result and
of a mean-colour fill against the prepared input frames, which are the ground truth when the
masks are synthetic (DAVIS-style evaluation), and a flow-free temporal-consistency error.
OUT_DIR must be new or empty; with --overwrite the tool writes into a used one, replacing the
files of the same names (other files stay), but never into the frames or masks folder nor over
an input file (`cpjax.tools.common`, the outputs rule).
"""
from __future__ import annotations

import functools
import json
import pathlib
import re
import sys
import time
from typing import Any, Callable

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from PIL import Image

from cpjax import metrics
from cpjax.convert import checkpoint as converted_weights
from cpjax.models import video_cpn
from cpjax.models.video_cpn import CPNet
from cpjax.ops import masks as mask_ops
from cpjax.tasks.video_inpainting import dilate_cross, fill_holes_with_mean
from cpjax.tools import common
from cpjax.tools.common import ToolError
from data_pipelines import image_ops, video

_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)
RELEASED_SIZE = (240, 424)   # the released test's frame size ('half': DAVIS 480x854 halved)
FRAME_NAME = "{:05d}.png"    # the name of result frame i in OUT_DIR


def reference_indices(f: int, n: int, window: int = 120, stride: int = 2) -> list[int]:
  """References of frame f among n frames: the released code's rule.

  If f - window < 0: range(0, min(2 window, ...)) (end 2 window, or n - 1 if that exceeds n);
  elif f + window > n: range(max(n - 2 window, 0), n - 1); else range(f - window, f + window);
  every `stride`-th index of the range, f excluded.
  """
  start, end = f - window, f + window
  if f - window < 0:
    end = 2 * window
    if end > n:
      end = n - 1
    start = 0
  elif f + window > n:
    start = max(n - 2 * window, 0)
    end = n - 1
  return [i for i in range(start, end, stride) if i != f]


def blend_passes(reverse: np.ndarray, forward: np.ndarray) -> np.ndarray:
  """result[f] = reverse[f] (N - f) / N + forward[f] f / N for float32 [N, ...] arrays, with
  the released code's operations in its order (multiply, divide, add; float32), so that a
  pixel both passes leave unchanged keeps its exact value."""
  n = reverse.shape[0]
  f = np.arange(n, dtype=np.float32).reshape(-1, *([1] * (reverse.ndim - 1)))
  return reverse * (np.float32(n) - f) / np.float32(n) + forward * f / np.float32(n)


def exposure_holes(frames: np.ndarray, low: float, high: float) -> np.ndarray:
  """bool [N, H, W]: luminance (ITU-R 601) of float frames [N, H, W, 3] <= low or >= high."""
  luma = frames @ _LUMA
  return (luma <= low) | (luma >= high)


def released_size(size: tuple[int, int]) -> tuple[int, int]:
  """Each side to the nearest multiple of 8 as the released test does: a remainder <= 4 rounds
  down, a larger one up (e.g. 480x854 -> 480x856, 250x427 -> 248x424)."""
  return tuple(n - n % 8 if n % 8 <= 4 else n + 8 - n % 8 for n in size)


def parse_size(text: str | None) -> tuple[int, int] | None:
  """--size 'HxW' -> (h, w), each side at least 8; None for no text."""
  if not text:
    return None
  try:
    size = image_ops.parse_pair(text)
  except ValueError:
    size = (0, 0)
  if min(size) < 8:
    raise ToolError(f"--size={text!r} is not HxW; give the frame size such as --size=240x424 "
                    "(each side at least 8).")
  return size


def parse_exposure(text: str) -> tuple[float, float]:
  match = re.fullmatch(r"\s*([0-9.]+)\s*,\s*([0-9.]+)\s*", text)
  if match is None or not 0 <= float(match.group(1)) < float(match.group(2)) <= 1:
    raise ToolError(f"--exposure={text!r} is not LOW,HIGH with 0 <= LOW < HIGH <= 1; give "
                    "luminance thresholds such as --exposure=0.02,0.98.")
  return float(match.group(1)), float(match.group(2))


def resize_released(frames: np.ndarray, holes: np.ndarray | None, size: tuple[int, int]
                    ) -> tuple[np.ndarray, np.ndarray | None]:
  """The released preparation (module docstring): uint8 [N, H, W, 3] frames -> float32
  [N, h, w, 3] in [0, 1] (float64 / 255, cv2 INTER_LINEAR, float32), bool [N, H, W] holes ->
  bool [N, h, w] (cv2 INTER_NEAREST); (h, w) = size, resized even when equal."""
  h, w = size
  frames = np.stack([cv2.resize(f / 255.0, (w, h), interpolation=cv2.INTER_LINEAR)
                     for f in frames]).astype(np.float32)
  if holes is not None:
    holes = np.stack([cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                      for m in holes]) > 0
  return frames, holes


def resize_antialiased(frames: np.ndarray, holes: np.ndarray | None,
                       size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
  """The --noreleased preparation: uint8 frames (PIL antialiased bilinear, rounded to 8 bits)
  and bool holes (PIL nearest) to size (h, w), or kept for None; frames float32 in [0, 1]."""
  if size is not None:
    h, w = size
    frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR))
                       for f in frames])
    if holes is not None:
      holes = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8)).resize(
          (w, h), Image.Resampling.NEAREST)) for m in holes]) > 0
  return frames.astype(np.float32) / 255.0, holes


def to_uint8(result: np.ndarray, released: bool) -> np.ndarray:
  """float [..., 3] in [0, 1] -> uint8: truncated as the released code does, else rounded."""
  scaled = np.asarray(result, np.float32) * np.float32(255.0)
  return (scaled if released else np.round(scaled)).astype(np.uint8)


class Progress:
  """A one-line progress bar on stderr: done/total, seconds per item, ETA."""

  def __init__(self, total: int, label: str = "frames", stream=None):
    self.total, self.label, self.stream = total, label, stream or sys.stderr
    self.done, self.start = 0, time.perf_counter()

  def update(self, n: int = 1) -> None:
    self.done += n
    elapsed = time.perf_counter() - self.start
    per = elapsed / max(self.done, 1)
    filled = int(30 * self.done / self.total)
    self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} "
                      f"{self.label}  {per:.2f} s/{self.label[:-1]}  ETA "
                      f"{per * (self.total - self.done):.0f} s")
    if self.done == self.total:
      self.stream.write("\n")
    self.stream.flush()


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(2, 3, 4))
def _complete_frame(task: Any, params: Any, frames: jax.Array, holes: jax.Array,
                    feats: jax.Array, f: jax.Array, refs: jax.Array, present: jax.Array):
  """Completes frame f from references `refs` (present ones) and updates the memory.

  Args: frames [N, H, W, 3] (holes mean-filled), holes [N, H, W, 1], feats [N, s, s, C]
  (the memory, donated), f int scalar, refs [K] int32, present [K] bool.

  Returns: (completed frame [H, W, 3] in [0, 1], frames, holes, feats updated at f).
  """
  net, variables = task.net, {"params": params}
  out = net.apply(variables, feats[refs][None], frames[refs][None], holes[refs][None],
                  frames[f][None], holes[f][None], present)
  comp = out["comp"][0]
  frames = frames.at[f].set(comp)
  holes = holes.at[f].set(jnp.zeros_like(holes[f]))
  new_feat = net.apply(variables, comp[None], holes[f][None], method=CPNet.encode_alignment)
  return comp, frames, holes, feats.at[f].set(new_feat[0])


@functools.partial(jax.jit, static_argnums=(0,))
def _encode_all(task: Any, params: Any, frames: jax.Array, holes: jax.Array) -> jax.Array:
  return task.net.apply({"params": params}, frames, holes, method=CPNet.encode_alignment)


def inpaint(task: Any, params: Any, frames: np.ndarray, holes: np.ndarray, *, window: int = 120,
            stride: int = 2, progress: Callable[[], None] | None = None) -> np.ndarray:
  """The two-pass completion of a whole video (module docstring).

  Args:
    task: a `VideoInpaintingTask` (its `net`).
    params: the network's parameters.
    frames: float32 [N, H, W, 3] in [0, 1], any H, W; N >= 2.
    holes: float32 [N, H, W, 1] in {0, 1} (already dilated).
    window, stride: reference selection (`reference_indices`).
    progress: called once per completed frame (2 N times).

  Returns:
    float32 [N, H, W, 3] in [0, 1]; outside the holes equal to the input frames.
  """
  # Everything committed to one device, so that every call of the jitted step sees the same
  # shardings as its own outputs (one compilation for the whole video).
  device = jax.local_devices()[0]
  params = jax.device_put(params, device)
  n = frames.shape[0]
  ref_lists = [reference_indices(f, n, window, stride) for f in range(n)]
  k = max(1, max(len(r) for r in ref_lists))
  refs = np.zeros((n, k), np.int32)
  present = np.zeros((n, k), bool)
  for f, r in enumerate(ref_lists):
    refs[f, :len(r)], present[f, :len(r)] = r, True
  padded_frames, pads = video_cpn.pad_to_multiple(jax.device_put(frames.astype(np.float32),
                                                                  device))
  padded_holes, _ = video_cpn.pad_to_multiple(jax.device_put(holes.astype(np.float32), device))
  originals = fill_holes_with_mean(padded_frames, padded_holes)
  feats = _encode_all(task, params, originals, padded_holes)
  results = []
  for order in (range(n - 1, -1, -1), range(n)):
    mem_frames, mem_holes = jnp.array(originals), jnp.array(padded_holes)  # fresh copies
    completed = [None] * n
    for f in order:
      comp, mem_frames, mem_holes, feats = _complete_frame(
          task, params, mem_frames, mem_holes, feats, jax.device_put(np.int32(f), device),
          jax.device_put(refs[f], device), jax.device_put(present[f], device))
      completed[f] = comp
      if progress is not None:
        jax.block_until_ready(comp)
        progress()
    results.append(np.asarray(video_cpn.crop_padding(jnp.stack(completed), pads)))
  return np.clip(blend_passes(results[0], results[1]), 0.0, 1.0)


def evaluate(result: np.ndarray, truth: np.ndarray, holes: np.ndarray) -> dict[str, Any]:
  """DAVIS-style scores of a completed video against its ground truth.

  Args:
    result, truth: float32 [N, H, W, 3] in [0, 1]; holes: [N, H, W, 1] in {0, 1}.

  Returns:
    {'result': {'psnr', 'ssim' (means over the frames that have a hole: a frame without one is
    its ground truth, which says nothing), 'frames_scored', 'psnr_per_frame', 'ssim_per_frame'
    (every frame), 'temporal_error'}, 'mean_fill': the same for holes filled with each frame's
    mean visible colour}. temporal_error = mean over consecutive frames and over the pixels in
    either hole of |(x_{t+1} - x_t) - (g_{t+1} - g_t)|: flicker that the ground truth does not
    have.
  """
  visible = 1.0 - holes
  mean = np.sum(truth * visible, axis=(1, 2), keepdims=True) / np.maximum(
      np.sum(visible, axis=(1, 2), keepdims=True), 1.0)
  mean_fill = truth * visible + mean * holes
  either = np.maximum(holes[1:], holes[:-1])
  scored = np.sum(holes, axis=(1, 2, 3)) > 0
  out = {}
  for name, pred in (("result", result), ("mean_fill", mean_fill)):
    psnr = np.asarray(jax.jit(metrics.psnr)(pred, truth))
    ssim = np.asarray(jax.jit(metrics.ssim)(pred, truth))
    flicker = np.abs((pred[1:] - pred[:-1]) - (truth[1:] - truth[:-1])) * either
    temporal = float(np.sum(flicker) / max(3.0 * np.sum(either), 1.0))
    out[name] = {"psnr": float(np.mean(psnr[scored])), "ssim": float(np.mean(ssim[scored])),
                 "frames_scored": int(np.sum(scored)),
                 "temporal_error": temporal, "psnr_per_frame": psnr.round(4).tolist(),
                 "ssim_per_frame": ssim.round(5).tolist()}
  return out


def synthetic_holes(spec: str, n: int, size: tuple[int, int]) -> np.ndarray:
  """'random:SEED' -> bool [n, H, W]: one random blob (the training masks' shapes) moving on a
  smooth loop that keeps it in every frame however long the video
  (`cpjax.ops.masks.wandering_blob_masks`), for DAVIS-style evaluation."""
  seed = spec.partition(":")[2]
  if not seed.isdigit():
    raise ToolError(f"--masks={spec} is not random:SEED; give e.g. --masks=random:0.")
  holes = jax.jit(mask_ops.wandering_blob_masks, static_argnums=(1, 2, 3))(
      jax.random.key(int(seed)), n, *size)
  return np.asarray(holes)[..., 0] > 0.5


def masks_folder(frames_path: str, masks_path: str | None, exposure: str | None
                 ) -> str | pathlib.Path | None:
  """The folder the hole masks are read from: --masks, or for DAVIS frames their Annotations
  folder; None for --exposure and random:SEED masks.

  Raises:
    ToolError: both --masks and --exposure, or neither given nor found.
  """
  if exposure is not None and masks_path is not None:
    raise ToolError("give either --masks or --exposure, not both.")
  if exposure is not None or (masks_path or "").startswith("random:"):
    return None
  folder = masks_path or video.davis_annotations(frames_path)
  if folder is None:
    raise ToolError("no --masks given; give a folder with one mask per frame (white = "
                    "remove), or --exposure=LOW,HIGH to restore badly exposed pixels.")
  return folder


def check_outputs(out_dir: pathlib.Path, frames_path: str, masks: str | pathlib.Path | None,
                  names: list[str]) -> None:
  """Checks that writing the files `names` into `out_dir` overwrites no input: `out_dir` is not
  the frames or masks folder, and no name there is (a link to) an input file.

  Raises:
    ToolError: naming the folder or the file.
  """
  for what, source in (("frames", video.resolve(frames_path)), ("masks", masks)):
    if source is None:
      continue
    source = pathlib.Path(source).expanduser()
    if source.is_dir() and common.same_path(source, out_dir):
      raise ToolError(f"--out={out_dir} is the folder of the input {what}; give another output "
                      "folder.")
    common.note_inputs(video.image_files(source) if source.is_dir() else [source])
  for name in names:
    common.check_output(out_dir / name, overwrite=True, png=False)


def load_inputs(frames_path: str, masks_path: str | None, exposure: str | None,
                size: tuple[int, int] | None, dilate: int, released: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
  """Frames float32 [N, H, W, 3] and dilated holes float32 [N, H, W, 1], prepared by the
  released procedure or not (module docstring), checked.

  size: (h, w) or None (released: 240x424; else the frames' own size).
  """
  frames = video.read_frames(frames_path)
  n = frames.shape[0]
  if n < 2:
    raise ToolError(f"{frames_path} has {n} frame; video inpainting needs at least 2 frames.")
  folder = masks_folder(frames_path, masks_path, exposure)
  holes = None if folder is None else video.read_masks(folder, n, frames.shape[1:3],
                                                       released=released)
  if released:
    frames, holes = resize_released(frames, holes, released_size(size or RELEASED_SIZE))
  else:
    frames, holes = resize_antialiased(frames, holes, size)
  if masks_path is not None and masks_path.startswith("random:"):
    holes = synthetic_holes(masks_path, n, frames.shape[1:3])
  elif holes is None:
    low, high = parse_exposure(exposure)
    holes = exposure_holes(frames, low, high)
  holes = np.asarray(jax.jit(dilate_cross, static_argnums=1)(
      holes.astype(np.float32)[..., None], dilate))
  if not holes.any():
    raise ToolError(f"no hole in any frame of {frames_path} (empty masks, or no pixel past the "
                    "exposure thresholds); nothing to inpaint.")
  return frames, holes


def run(workdir: str, frames: str, out: str, masks: str | None = None,
        exposure: str | None = None, size: str | None = None, step: int | None = None,
        window: int = 120, stride: int = 2, dilate: int = 4, evaluate_scores: bool = False,
        fps: float = 10.0, released: bool | None = None, overwrite: bool = False
        ) -> dict[str, Any]:
  """The command line without flags: checks inputs, inpaints, writes OUT; returns a summary.

  released: the frame preparation (module docstring); None: the released one for converted
  released weights, the other for a training run.
  """
  if window < 1 or stride < 1 or dilate < 0:
    raise ToolError(f"--window={window}, --stride={stride}, --dilate={dilate}: give window and "
                    "stride >= 1 and dilate >= 0.")
  if released is None:
    released = converted_weights.is_converted(workdir)
  out_dir = common.check_output_dir(out, overwrite, "to write into it (files of the same names "
                                    "are replaced)")
  video_frames, holes = load_inputs(frames, masks, exposure, parse_size(size), dilate, released)
  n = video_frames.shape[0]
  frame_names = [FRAME_NAME.format(i) for i in range(n)]
  check_outputs(out_dir, frames, masks_folder(frames, masks, exposure),
                frame_names + ["video.mp4"] + (["metrics.json"] if evaluate_scores else []))
  loaded = common.load_system(workdir, step, "video_inpainting")
  task, state = loaded.task, loaded.state
  bar = Progress(2 * n)
  start = time.perf_counter()
  result = inpaint(task, state.params, video_frames, holes, window=window, stride=stride,
                   progress=bar.update)
  seconds = time.perf_counter() - start
  out_dir.mkdir(parents=True, exist_ok=True)
  uint8 = to_uint8(result, released)
  for name, frame in zip(frame_names, uint8):
    Image.fromarray(frame).save(out_dir / name)
  summary: dict[str, Any] = {"frames": n, "size": list(result.shape[1:3]),
                             "procedure": "released" if released else "cpjax",
                             "seconds": round(seconds, 2),
                             "mp4": video.write_video(out_dir / "video.mp4", uint8, fps)}
  if evaluate_scores:
    scores = evaluate(result, video_frames, holes)
    (out_dir / "metrics.json").write_text(json.dumps(scores, indent=2))
    summary.update({name: {k: s[k] for k in ("psnr", "ssim", "temporal_error")}
                    for name, s in scores.items()})
  return summary


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", None, "Training run whose checkpoint to use.")
  flags.DEFINE_string("frames", None, "Folder of frames (e.g. DAVIS JPEGImages/480p/SEQ) or a "
                      "video file.")
  flags.DEFINE_string("masks", None, "Folder with one mask per frame (white or palette index > "
                      "0 = remove); default for DAVIS frames: the Annotations folder; "
                      "random:SEED = moving synthetic masks.")
  flags.DEFINE_string("exposure", None, "LOW,HIGH: restore pixels with luminance <= LOW or >= "
                      "HIGH instead of using masks (paper sec. 5.3).")
  flags.DEFINE_string("out", None, "New (or empty) output folder for the PNG frames, video.mp4 "
                      "and metrics.json.")
  flags.DEFINE_string("size", None, "HxW to resize the video to first; default: 240x424 with "
                      "--released, else the video's size.")
  flags.DEFINE_bool("released", None, "Prepare frames and write results as the released test "
                    "code does (cv2 resize on float frames, truncation); default: on for "
                    "converted released weights, off for training runs.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_integer("window", 120, "References within this many frames of the target.")
  flags.DEFINE_integer("stride", 2, "Every stride-th frame of the window is a reference.")
  flags.DEFINE_integer("dilate", 4, "Dilations of the masks with a 3x3 cross.")
  flags.DEFINE_bool("evaluate", False, "Score the result against the input frames (synthetic "
                    "masks over real frames) and write metrics.json.")
  flags.DEFINE_float("fps", 10.0, "Frame rate of video.mp4.")
  common.define_overwrite_flag()
  flags.mark_flags_as_required(["workdir", "frames", "out"])


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}; give every input as a flag.")
  f = flags.FLAGS
  summary = run(f.workdir, f.frames, f.out, f.masks, f.exposure, f.size, f.step, f.window,
                f.stride, f.dilate, f.evaluate, f.fps, f.released, f.overwrite)
  print(f"wrote {summary['frames']} frames to {f.out}: {json.dumps(summary)}")
  return 0


if __name__ == "__main__":
  define_flags()
  common.run_tool(main, "cpjax.tools.inpaint_video")
