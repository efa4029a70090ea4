r"""Benchmark of Poisson seamless cloning: cpjax.ops.poisson.seamless_clone (jitted, after
warm-up) beside cv2.seamlessClone(NORMAL_CLONE) in the same run.

  python -m experiments.benchmarks.poisson [--sizes=512x512,2048x1024]  (W x H) [--iters=10] \
      [--out=experiments/benchmarks/results.jsonl]

One JSON row per size: seconds per call of ours ('box' domain, the OpenCV problem, and 'mask'
domain, Perez's), of cv2 on uint8 images, and the ratio ours_box / cv2 (< 1: ours is faster).
The source and target have the target's size; the mask is an ellipse covering about a third of
the image, placed so the box stays inside. cv2 runs on the host's CPU threads
(cv2.getNumThreads() is reported); ours on whatever device JAX sees.
"""
from __future__ import annotations

import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cpjax.ops import poisson
from experiments.benchmarks import harness

_SIZES = flags.DEFINE_string("sizes", "512x512,2048x1024",
                             "Comma-separated WxH target sizes (width x height).")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations first (compilation, caches).")
_OUT = flags.DEFINE_string("out", None, "Append the JSON rows to this file.")


def _cv2_seconds(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, center: tuple[int, int],
                 iters: int, warmup: int) -> float:
  """Median seconds per cv2.seamlessClone call (it edits its mask in place: pass a copy)."""
  times = []
  for i in range(warmup + iters):
    m = mask.copy()
    start = time.perf_counter()
    cv2.seamlessClone(src, dst, m, center, cv2.NORMAL_CLONE)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def _row(height: int, width: int, iters: int, warmup: int) -> dict:
  rng = np.random.default_rng(0)
  src8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  dst8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:height, :width]
  mask8 = (((yy - height / 2) / (0.33 * height)) ** 2 + ((xx - width / 2) / (0.33 * width)) ** 2
           < 1).astype(np.uint8) * 255
  dx, dy = width // 16, -height // 16  # moved right and up, still inside the target
  ys, xs = np.nonzero(mask8)
  y0, x0, h, w = ys.min(), xs.min(), ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()
  center = (int(x0 + dx + w // 2), int(y0 + dy + h // 2))  # cv2's p for our offset
  src, dst = jnp.asarray(src8 / 255.0, jnp.float32), jnp.asarray(dst8 / 255.0, jnp.float32)
  mask = jnp.asarray(mask8[..., None] / 255.0, jnp.float32)
  ours = {}
  for domain in ("box", "mask"):
    # The mask is an argument (a closed-over constant would be constant-folded by XLA); the box
    # size is static, the tight one: the same problem as cv2's.
    fn = jax.jit(lambda s, t, m, d=domain: poisson.seamless_clone(
        s, t, m, offset=(dx, dy), domain=d, box=(int(h), int(w))))
    ours[domain] = harness.measure(fn, src, dst, mask, iters=iters,
                                   warmup=warmup)["seconds_per_call"]
  cv_s = _cv2_seconds(src8, dst8, mask8, center, iters, warmup)
  return {"benchmark": "poisson_seamless_clone", "height": height, "width": width,
          "mask_pixels": int((mask8 > 0).sum()), "box": [int(h), int(w)],
          "ours_box_seconds": ours["box"], "ours_mask_seconds": ours["mask"],
          "cv2_seconds": cv_s, "ratio_ours_box_over_cv2": ours["box"] / cv_s,
          "ratio_ours_mask_over_cv2": ours["mask"] / cv_s, "cv2_version": cv2.__version__,
          "cv2_threads": cv2.getNumThreads(), **harness.environment()}


def main(argv):
  del argv
  for size in _SIZES.value.split(","):
    width, height = (int(v) for v in size.lower().split("x"))
    harness.write_row(_OUT.value, _row(height, width, _ITERS.value, _WARMUP.value))


if __name__ == "__main__":
  app.run(main)
