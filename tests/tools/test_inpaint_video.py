"""cpjax.tools.inpaint_video: the released procedure's pieces (reference windows, two-pass
blend, mask dilation), a 50-frame clip end to end on CPU, and clear errors for bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, subprocess_env
from cpjax.ops import masks as mask_ops
from cpjax.tools import inpaint_video
from cpjax.tools.common import ToolError
from data_pipelines import video


@pytest.mark.parametrize("f, n, want", [
    (0, 50, list(range(2, 49, 2))),                     # short video: range(0, n - 1, 2) \ {f}
    (10, 50, [i for i in range(0, 49, 2) if i != 10]),
    (49, 50, list(range(0, 49, 2))),
    (10, 300, [i for i in range(0, 240, 2) if i != 10]),  # near the start: range(0, 240, 2)
    (150, 300, [i for i in range(30, 270, 2) if i != 150]),  # inside: f +- 120
    (290, 300, [i for i in range(60, 299, 2) if i != 290]),  # near the end: (n - 240, n - 1)
])
def test_reference_indices_follow_the_released_window_rule(f, n, want):
  assert inpaint_video.reference_indices(f, n) == want


def test_two_pass_blend_weights():
  """result f = reverse f (N - f) / N + forward f f / N: frame 0 is the reverse pass, the
  middle frame the average."""
  n = 4
  reverse = np.zeros((n, 2, 2, 3), np.float32)
  forward = np.ones((n, 2, 2, 3), np.float32)
  got = inpaint_video.blend_passes(reverse, forward)
  np.testing.assert_allclose(got[:, 0, 0, 0], [0.0, 0.25, 0.5, 0.75])


@pytest.mark.parametrize("size, want", [((480, 854), (480, 856)), ((250, 427), (248, 424)),
                                        ((240, 424), (240, 424)), ((12, 13), (8, 16))])
def test_released_size_rounds_to_the_nearest_multiple_of_eight(size, want):
  """The released test's rule: a remainder <= 4 rounds down, a larger one up."""
  assert inpaint_video.released_size(size) == want


@pytest.mark.parametrize("text, want", [("240x424", (240, 424)), (" 48 , 64 ", (48, 64)),
                                        ("48X64", (48, 64)), ("", None), (None, None)])
def test_size_flag_is_h_x_w(text, want):
  assert inpaint_video.parse_size(text) == want


@pytest.mark.parametrize("text", ["big", "4x400", "240x", "0x0"])
def test_bad_size_flag_is_one_line_naming_it(text):
  with pytest.raises(ToolError, match=rf"--size='{text}' is not HxW; .*each side at least 8"):
    inpaint_video.parse_size(text)


def _released_reference(frame_files, mask_files, size, dilate=4):
  """The released test's preparation, step by step with OpenCV (DAVIS_dataset.py): RGB / 255
  (float64), cv2 INTER_LINEAR to (W, H), float32; palette index > 0.5, cv2 INTER_NEAREST,
  cv2.dilate with the 3x3 cross."""
  h, w = size
  frames = np.stack([cv2.resize(np.array(Image.open(f).convert("RGB")) / 255.0, dsize=(w, h),
                                interpolation=cv2.INTER_LINEAR) for f in frame_files])
  cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
  holes = []
  for m in mask_files:
    raw = (np.array(Image.open(m).convert("P"), dtype=np.uint8) > 0.5).astype(np.uint8)
    raw = cv2.resize(raw, dsize=(w, h), interpolation=cv2.INTER_NEAREST)
    holes.append(cv2.dilate(raw, cross, iterations=dilate))
  return frames.astype(np.float32), np.stack(holes).astype(np.float32)[..., None]


def _davis_like_clip(folder, n=3, size=(50, 70), seed=0):
  """JPEG frames (a smooth random image per frame) and palette masks with two object ids."""
  rng = np.random.default_rng(seed)
  (folder / "frames").mkdir(parents=True)
  (folder / "masks").mkdir()
  for i in range(n):
    small = rng.integers(0, 256, (size[0] // 5, size[1] // 5, 3), dtype=np.uint8)
    frame = Image.fromarray(small).resize(size[::-1], Image.Resampling.BICUBIC)
    frame.save(folder / "frames" / f"{i:05d}.jpg", quality=90)
    ids = np.zeros(size, np.uint8)
    ids[5 + i:20 + i, 10:30], ids[30:45, 40 + 2 * i:60] = 1, 2
    mask = Image.fromarray(ids, "P")
    mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    mask.save(folder / "masks" / f"{i:05d}.png")
  return (sorted((folder / "frames").iterdir()), sorted((folder / "masks").iterdir()))


@pytest.mark.parametrize("size, want", [(None, (240, 424)), ((27, 37), (24, 40))])
def test_released_preparation_is_the_released_test_code(tmp_path, size, want):
  """--released: frames, holes (and their size, default 240x424) are exactly those of the
  released test's OpenCV steps on float frames, not PIL's antialiased resize of 8-bit frames."""
  frame_files, mask_files = _davis_like_clip(tmp_path)
  frames, holes = inpaint_video.load_inputs(str(tmp_path / "frames"), str(tmp_path / "masks"),
                                            None, size, 4, released=True)
  want_frames, want_holes = _released_reference(frame_files, mask_files, want)
  assert frames.dtype == np.float32 and frames.shape == (3, *want, 3)
  np.testing.assert_array_equal(frames, want_frames)
  np.testing.assert_array_equal(holes, want_holes)


def test_released_procedure_truncates_and_keeps_the_unmasked_pixels(video_demo_tiny_run,
                                                                    tmp_path):
  """A run with --released writes, outside the dilated holes, exactly the released test's
  pixels: (blend of the two passes, both the cv2-resized float frame there) * 255 truncated
  to uint8; truncation differs from rounding on many of them, and the holes are filled, also
  in frame 0, which the window rule leaves without references in a 3-frame video."""
  workdir, _ = video_demo_tiny_run
  frame_files, mask_files = _davis_like_clip(tmp_path, n=3)
  assert inpaint_video.reference_indices(0, 3) == []
  summary = inpaint_video.run(str(workdir), str(tmp_path / "frames"), str(tmp_path / "out"),
                              masks=str(tmp_path / "masks"), size="40x56", released=True)
  assert summary["procedure"] == "released" and summary["size"] == [40, 56]
  gt, holes = _released_reference(frame_files, mask_files, (40, 56))
  n = len(frame_files)
  f = np.arange(n, dtype=np.float32)[:, None, None, None]
  est = gt * (np.float32(n) - f) / np.float32(n) + gt * f / np.float32(n)   # CPNet_test.py
  want = (est * 255.0).astype(np.uint8)
  got = np.stack([np.asarray(Image.open(tmp_path / "out" / f"{i:05d}.png")) for i in range(n)])
  outside = np.broadcast_to(holes < 0.5, got.shape)
  np.testing.assert_array_equal(got[outside], want[outside])
  assert np.mean(np.round(est * 255.0)[outside] != want[outside]) > 0.2
  assert np.any(got[~outside] != want[~outside])


def test_exposure_holes_by_luminance():
  frames = np.array([[[[0.0, 0.0, 0.01], [1.0, 1.0, 1.0], [0.5, 0.2, 0.9], [1.0, 1.0, 0.0]]]],
                    np.float32)
  got = inpaint_video.exposure_holes(frames, 0.02, 0.98)
  np.testing.assert_array_equal(got, [[[True, True, False, False]]])


def _clip_and_masks(folder, n=50, size=(24, 32), seed=0):
  """A real-photo clip (moving camera) and moving synthetic blob masks, written as PNGs."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  frames = video.camera_clip(skimage.data.coffee(), n, size, seed=seed)
  holes = np.asarray(jax.jit(lambda k: mask_ops.moving_blob_masks(
      k, n, *size, mask_ops.MovingMaskRanges(radius=(0.12, 0.15))))(jax.random.key(seed)))
  (folder / "frames").mkdir(parents=True)
  (folder / "masks").mkdir()
  for i in range(n):
    Image.fromarray(frames[i]).save(folder / "frames" / f"{i:05d}.jpg", quality=95)
    Image.fromarray((holes[i, ..., 0] * 255).astype(np.uint8)).save(folder / "masks" / f"{i:05d}.png")
  return frames, holes


def test_fifty_frame_clip_end_to_end(video_demo_tiny_run, tmp_path, capsys):
  """50 frames on CPU: one compilation of the per-frame step for all 100 steps, a progress bar,
  50 PNGs + an MP4 + metrics.json; outside the (dilated) holes the output is the input."""
  workdir, _ = video_demo_tiny_run
  _clip_and_masks(tmp_path)
  out = tmp_path / "out"
  before = inpaint_video._complete_frame._cache_size()  # pylint: disable=protected-access
  summary = inpaint_video.run(str(workdir), str(tmp_path / "frames"), str(out),
                              masks=str(tmp_path / "masks"), evaluate_scores=True)
  assert inpaint_video._complete_frame._cache_size() == before + 1  # pylint: disable=protected-access
  assert "100/100 frames" in capsys.readouterr().err
  written = sorted(out.glob("*.png"))
  assert len(written) == 50 and summary["frames"] == 50
  assert (out / "video.mp4").stat().st_size > 0 and summary["mp4"]
  result = np.stack([np.asarray(Image.open(p)) for p in written]).astype(np.float32) / 255
  frames, holes = inpaint_video.load_inputs(str(tmp_path / "frames"), str(tmp_path / "masks"),
                                            None, None, 4)
  outside = holes[..., 0] < 0.5
  assert np.abs(result - frames)[outside].max() <= 1.0 / 255 + 1e-6
  scores = json.loads((out / "metrics.json").read_text())
  assert len(scores["result"]["psnr_per_frame"]) == 50
  assert 0 < scores["result"]["ssim"] <= 1 and scores["mean_fill"]["psnr"] > 10


def test_bad_inputs_are_clear_errors(video_demo_tiny_run, tmp_path):
  """Frame/mask count and size mismatches, empty folders, a used output folder, a run of
  another task: each a one-line error naming the problem, before any work is done."""
  workdir, _ = video_demo_tiny_run
  clip, holes = _clip_and_masks(tmp_path, n=4)
  run = lambda **kw: inpaint_video.run(str(workdir), **kw)  # pylint: disable=unnecessary-lambda-assignment
  frames_dir, masks_dir = str(tmp_path / "frames"), str(tmp_path / "masks")
  (tmp_path / "masks" / "00003.png").unlink()
  with pytest.raises(video.VideoError, match="holds 3 masks but the video has 4 frames"):
    run(frames=frames_dir, masks=masks_dir, out=str(tmp_path / "o1"))
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "00003.png")
  with pytest.raises(video.VideoError, match="is 10x10 but 00000.png is 24x32"):
    run(frames=frames_dir, masks=masks_dir, out=str(tmp_path / "o2"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(video.VideoError, match="holds no images"):
    run(frames=str(tmp_path / "empty"), masks=masks_dir, out=str(tmp_path / "o3"))
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "00000.png").write_bytes(b"keep me")
  with pytest.raises(ToolError, match="not an empty folder"):
    run(frames=frames_dir, masks=masks_dir, out=str(tmp_path / "used"))
  assert (tmp_path / "used" / "00000.png").read_bytes() == b"keep me"
  with pytest.raises(ToolError, match="no --masks given"):
    run(frames=frames_dir, out=str(tmp_path / "o4"))


def test_command_line_error_is_one_line(tmp_path):
  """The CLI prints `cpjax.tools.inpaint_video: ...` with exit status 1 and no traceback."""
  (tmp_path / "frames").mkdir()
  run = subprocess.run(
      [sys.executable, "-m", "cpjax.tools.inpaint_video", f"--workdir={tmp_path}",
       f"--frames={tmp_path / 'frames'}", f"--masks={tmp_path}", f"--out={tmp_path / 'out'}"],
      cwd=REPO, env=subprocess_env(), capture_output=True,
      text=True, timeout=300)
  assert run.returncode == 1
  lines = run.stderr.strip().splitlines()
  assert lines == [f"cpjax.tools.inpaint_video: {tmp_path / 'frames'} holds no images (*.jpg, "
                   "*.jpeg, *.png, *.webp); give a folder of frames."]


def test_exposure_mode_holes_are_the_badly_exposed_pixels(tmp_path):
  """--exposure=LOW,HIGH: the holes are the pixels past the luminance thresholds, dilated;
  with masks as well it is an error."""
  frames = np.full((2, 16, 16, 3), 128, np.uint8)
  frames[0, 3, 4] = 255                       # over-exposed
  frames[1, 10, 10] = 0                       # under-exposed
  folder = tmp_path / "frames"
  folder.mkdir()
  for i, f in enumerate(frames):
    Image.fromarray(f).save(folder / f"{i}.png")
  _, holes = inpaint_video.load_inputs(str(folder), None, "0.02,0.98", None, 1)
  assert holes.sum() == 10                    # two crosses of 5 pixels
  assert holes[0, 3, 4, 0] == 1 and holes[0, 2, 4, 0] == 1 and holes[1, 10, 11, 0] == 1
  with pytest.raises(ToolError, match="either --masks or --exposure"):
    inpaint_video.load_inputs(str(folder), str(folder), "0.02,0.98", None, 1)
  with pytest.raises(ToolError, match="LOW,HIGH"):
    inpaint_video.load_inputs(str(folder), None, "0.9,0.1", None, 1)


def test_random_masks_stay_in_every_frame_of_a_long_video_and_move_smoothly():
  """500 frames: every hole keeps at least half the largest hole's area (it never leaves the
  frame), consecutive holes overlap (IoU > 0.5), and the blob travels across the frame."""
  holes = inpaint_video.synthetic_holes("random:7", 500, (72, 128))
  areas = holes.sum(axis=(1, 2))
  assert holes.shape == (500, 72, 128) and areas.min() > 0.5 * areas.max() > 0
  inter = np.sum(holes[1:] & holes[:-1], axis=(1, 2))
  union = np.sum(holes[1:] | holes[:-1], axis=(1, 2))
  assert np.min(inter / union) > 0.5
  centres = np.array([np.argwhere(h).mean(axis=0) for h in holes[::25]])
  assert np.ptp(centres[:, 1]) > 0.3 * 128 and np.ptp(centres[:, 0]) > 0.3 * 72
  assert not np.array_equal(holes, inpaint_video.synthetic_holes("random:8", 500, (72, 128)))


def test_video_scores_average_the_frames_that_have_a_hole():
  """A frame without a hole is its own ground truth: it gets a per-frame score but does not
  enter the video means (here frame 1 of 3; frames 0 and 2 have equal errors)."""
  truth = np.full((3, 8, 8, 3), 0.5, np.float32)
  holes = np.zeros((3, 8, 8, 1), np.float32)
  holes[0, :4], holes[2, 4:] = 1.0, 1.0
  result = truth + 0.1 * holes
  scores = inpaint_video.evaluate(result, truth, holes)["result"]
  want = 10 * np.log10(1 / (0.01 / 2))
  assert scores["frames_scored"] == 2
  np.testing.assert_allclose(scores["psnr"], want, rtol=1e-5)
  np.testing.assert_allclose(scores["psnr_per_frame"][::2], [want, want], rtol=1e-4)
  assert scores["psnr_per_frame"][1] == 100.0


def test_random_masks_are_moving_blobs_of_the_frame_size(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.full((16, 24, 3), 100, np.uint8)).save(folder / f"{i}.png")
  _, holes = inpaint_video.load_inputs(str(folder), "random:3", None, None, 0)
  assert holes.shape == (3, 16, 24, 1) and holes.sum() > 0
  assert np.any(holes[0] != holes[2])
  with pytest.raises(ToolError, match="random:SEED"):
    inpaint_video.load_inputs(str(folder), "random:x", None, None, 0)
