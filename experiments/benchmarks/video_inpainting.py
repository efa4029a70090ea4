r"""Benchmark of the video-inpainting system: inference seconds per frame, train examples/s.

  python -m experiments.benchmarks.video_inpainting --config=configs/video_inpainting.py \
      [--height=240 --width=424] [--frames=12] [--batch_size=4] [--out=rows.jsonl]

Inference times the tool's jitted per-frame step (`cpjax.tools.inpaint_video`) on a random
clip of --frames frames at HxW (paper: DAVIS at half size, 240x424), with the released window
rule (a short clip gives about frames/2 references per frame; the paper's +-120-frame window
gives up to 120 on long videos). Training times `train_step` on --batch_size synthetic
sequences of data.image_size crops. Parameters are random (speed does not depend on them);
the perceptual/style losses are timed with a random VGG16 if their weights are non-zero.
"""
from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cpjax.tools import inpaint_video
from cpjax.train import partitioning
from experiments.benchmarks import harness

_CONFIG = config_flags.DEFINE_config_file("config", "configs/video_inpainting.py",
                                          "Config to benchmark.")
_HEIGHT = flags.DEFINE_integer("height", 240, "Inference frame height.")
_WIDTH = flags.DEFINE_integer("width", 424, "Inference frame width.")
_FRAMES = flags.DEFINE_integer("frames", 12, "Frames of the inference clip.")
_BATCH = flags.DEFINE_integer("batch_size", 4, "Global training batch (0: skip training).")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed training iterations.")
_OUT = flags.DEFINE_string("out", None, "Append the JSON row to this file.")


def inference_seconds_per_frame(task, params, frames: np.ndarray, holes: np.ndarray) -> dict:
  """Median seconds of one per-frame step, after a full warm-up pass (compilation)."""
  times = []
  last = [time.perf_counter()]

  def tick():
    now = time.perf_counter()
    times.append(now - last[0])
    last[0] = now

  start = time.perf_counter()
  inpaint_video.inpaint(task, params, frames, holes, progress=tick)     # compiles, then runs
  first_pass = time.perf_counter() - start
  steady = sorted(times[1:])
  refs = [len(inpaint_video.reference_indices(f, len(frames))) for f in range(len(frames))]
  return {"seconds_per_frame": steady[len(steady) // 2], "first_call_seconds": times[0],
          "video_seconds_incl_compile": first_pass, "references_per_frame": max(refs),
          "frames": len(frames), "size": list(frames.shape[1:3])}


def main(argv):
  del argv
  config = _CONFIG.value
  config.loss.vgg_weights = config.loss.vgg_weights or "random"
  bench = harness.task_bench(config, None, _BATCH.value or None)
  task, key = bench.task, jax.random.key(0)
  state = bench.init()
  rng = np.random.default_rng(0)
  n, h, w = _FRAMES.value, _HEIGHT.value, _WIDTH.value
  frames = rng.random((n, h, w, 3)).astype(np.float32)
  holes = np.zeros((n, h, w, 1), np.float32)
  holes[:, h // 3:2 * h // 3, w // 3:2 * w // 3] = 1.0
  row = {"benchmark": "video_inpainting", **harness.environment(),
         "model": config.model.to_dict(), "inference": inference_seconds_per_frame(
             task, state.params, frames, holes)}
  row["params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
  if _BATCH.value:
    size = task.size
    batch = partitioning.global_batch(
        {"image": rng.integers(0, 256, (_BATCH.value, *size, 3), dtype=np.uint8),
         "index": np.arange(_BATCH.value, dtype=np.int32)}, bench.mesh)
    stats = harness.measure(bench.train_step, state, batch, key, iters=_ITERS.value, warmup=1,
                            chain=True)
    row["train"] = {**stats, "batch_size": _BATCH.value, "image_size": list(size),
                    "examples_per_sec": _BATCH.value / stats["seconds_per_call"]}
  harness.write_row(_OUT.value, row)


if __name__ == "__main__":
  app.run(main)
