"""The held-out static-camera check of a video-inpainting run: its clips (one photo in every
frame, a moving silhouette as the hole), its rows, and the command line on the tiny demo run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np

from conftest import REPO, load_config
from cpjax import tasks
from experiments import video_heldout


def test_clips_repeat_one_photo_under_a_moving_silhouette_that_the_previous_frame_fills():
  """Every frame is the same held-out crop; the target's hole is non-empty and differs from the
  other frames' holes; the 'prev_frame' baseline copies the photo exactly wherever the
  previous frame sees the hole, and the inputs are the frames with the holes mean-filled."""
  task = tasks.build(load_config("video_demo", "tiny"))
  made = list(video_heldout.problems(task, 2, seed=0))
  assert [name for name, _ in made][::2] == list(video_heldout.PHOTOS)
  baselines = jax.jit(task._baselines)  # pylint: disable=protected-access
  prev = task.target - 1
  for _, ex in made:
    frames, holes = ex["frames"][0], ex["holes"][0]
    assert frames.shape == (5, 32, 32, 3) and holes.shape == (5, 32, 32, 1)
    np.testing.assert_array_equal(frames, np.broadcast_to(frames[:1], frames.shape))
    assert set(np.unique(holes)) <= {0.0, 1.0} and holes[task.target].sum() > 0
    assert np.any(holes[task.target] != holes[prev])
    np.testing.assert_array_equal(ex["inputs"][0][holes[..., 0] == 0], frames[holes[..., 0] == 0])
    copied = np.asarray(baselines(ex)["prev_frame"])[0]
    seen = (holes[task.target, ..., 0] == 1) & (holes[prev, ..., 0] == 0)
    assert seen.any()
    np.testing.assert_allclose(copied[seen], frames[task.target][seen], atol=1e-6)


def test_rows_average_per_photo_then_over_all_and_tabulate():
  """rows(): one row per photo in order of appearance, then 'all'; markdown(): one line each."""
  scored = lambda v: {m: {"hole_psnr": v + i, "hole_l1": 0.1 * v}   # pylint: disable=unnecessary-lambda-assignment
                      for i, m in enumerate(video_heldout.METHODS)}
  out = video_heldout.rows([("coffee", scored(10.0)), ("camera", scored(20.0)),
                            ("coffee", scored(30.0))])
  assert [(r["photos"], r["n"]) for r in out] == [("coffee", 2), ("camera", 1), ("all", 3)]
  assert out[0]["model"] == {"hole_psnr": 20.0, "hole_l1": 2.0}
  assert out[2]["mean_fill"]["hole_psnr"] == 22.0
  table = video_heldout.markdown(out).splitlines()
  assert len(table) == 5 and table[-1].startswith("| all | 3 | 20.00 dB (2.000) |")


def test_region_psnr_pools_squared_errors_over_problems_per_region():
  """region_sums/region_psnr against a hand count: two 1x2-pixel problems, the left pixel
  visible, the right one a hole seen (c_mask 0) in the first problem and unseen in the second;
  PSNR = 10 log10(count / summed squared error) per region; the output is clipped to [0, 1]."""
  gt = np.zeros((1, 5, 1, 2, 3), np.float32)
  holes = np.zeros((1, 5, 1, 2, 1), np.float32)
  holes[:, 2, 0, 1] = 1.0
  ex = {"frames": gt, "holes": holes}
  model = np.array([[[[0.1] * 3, [0.2] * 3]]], np.float32)
  prev = np.array([[[[0.0] * 3, [-0.5] * 3]]], np.float32)   # clipped to 0: no error
  sums = [video_heldout.region_sums({"model": model, "prev_frame": prev}, ex, 2,
                                    np.full((1, 1, 1, 1), c, np.float32)) for c in (0.0, 1.0)]
  got = video_heldout.region_psnr(sums)
  assert got["model"] == {"visible": round(10 * np.log10(1 / 0.01), 2),
                          "hole_seen": round(10 * np.log10(1 / 0.04), 2),
                          "hole_unseen": round(10 * np.log10(1 / 0.04), 2)}
  assert got["prev_frame"] == {"hole_seen": 100.0, "hole_unseen": 100.0}
  assert got["seen_fraction"] == 0.5


def test_command_line_scores_the_tiny_run(video_demo_tiny_run, tmp_path):
  """The check on the tiny demo run: a row per photo and 'all', every method scored; on a
  static camera the previous frame beats the mean fill; --out holds the printed rows."""
  workdir, _ = video_demo_tiny_run
  out = tmp_path / "rows.json"
  run = subprocess.run(
      [sys.executable, "-m", "experiments.video_heldout", f"--workdir={workdir}",
       "--per_photo=2", f"--out={out}"],
      cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
  printed, (regions,) = lines[:-1], lines[-1:]
  assert [r["photos"] for r in printed] == [*video_heldout.PHOTOS, "all"]
  assert printed[-1]["n"] == 8 and printed[-1]["step"] == 2
  everything = printed[-1]
  assert everything["prev_frame"]["hole_l1"] < everything["mean_fill"]["hole_l1"]
  assert everything["model"] != everything["prev_frame"]
  assert "| all | 8 |" in run.stdout
  saved = json.loads(out.read_text())
  assert saved["rows"] == [{k: v for k, v in r.items() if k != "step"} for r in printed]
  assert regions["step"] == 2 and saved["regions"] == regions["regions"]
  assert set(regions["regions"]["model"]) == set(video_heldout.REGIONS)
  assert set(regions["regions"]["prev_frame"]) <= set(video_heldout.REGIONS[1:])
  assert 0 <= regions["regions"]["seen_fraction"] <= 1
