r"""Benchmark of Poisson seamless cloning: cpjax.ops.poisson.seamless_clone (jitted, compiled
once outside the timings) beside its reference implementation, measured alternately in one run.

  python -m experiments.benchmarks.poisson [--sizes=512x512,1024x2048]  (H x W) [--iters=15] \
      [--warmup=2] [--out=experiments/benchmarks/results.jsonl]

One JSON row per size and solver, with both medians side by side and their ratio (< 1: ours is
faster):
  'opencv'  domain='opencv' (one DST solve) against cv2.seamlessClone(NORMAL_CLONE) on uint8
            images, the same problem; with the agreement (255 ours - cv2 lies in [0, 1] when
            they agree: cv2 truncates) and the share of pixels whose floors differ. On these
            noise images the solution spans about -70..320 levels and both float32 solvers
            stray from its exact value: cv2 by up to 0.08 (512x512) and 0.32 (1024x2048)
            levels, ours by 0.002 and 0.016 (measured against a float64 solve).
  'box'     domain='box' (one DST solve, Perez's guidance on the box) against the same cv2 call.
  'mask'    domain='mask' (multigrid-preconditioned CG) against SciPy's sparse direct solve of
            the same system (the mask's pixels unknown, 3 right-hand sides): SuperLU with the
            MMD_AT_PLUS_A ordering (`splu(...).solve`) and with the default one (`spsolve`),
            the faster median as the reference; the system is assembled outside the timing.
            With the largest difference from SciPy's solution.
The source and target are uniform noise of the target's size; the mask an ellipse covering about
a third of the image, moved right and up. Ours calls the public function under jax.jit with the
bounding box's static size (the mask is an argument: as a closed-over constant XLA would fold
it); 'compile_seconds' is that compilation. cv2 and SciPy run on the host's CPU threads; ours
on whatever device JAX sees.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from absl import app, flags

from cpjax.ops import poisson
from data_pipelines import image_ops
from experiments.benchmarks import harness

_SIZES = flags.DEFINE_string("sizes", "512x512,1024x2048",
                             "Comma-separated HxW target sizes (height x width), as every "
                             "other size in cpjax.")
_ITERS = flags.DEFINE_integer("iters", 15, "Timed iterations of each implementation.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations first (caches).")
_OUT = flags.DEFINE_string("out", None, "Append the JSON rows to this file.")


def _problem(height: int, width: int) -> dict[str, Any]:
  """uint8 noise source and target [H, W, 3], an elliptic uint8 mask, the offset and the
  bounding box (y0, x0, h, w) in the source."""
  rng = np.random.default_rng(0)
  src8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  dst8 = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  yy, xx = np.mgrid[:height, :width]
  mask8 = (((yy - height / 2) / (0.33 * height)) ** 2 + ((xx - width / 2) / (0.33 * width)) ** 2
           < 1).astype(np.uint8) * 255
  ys, xs = np.nonzero(mask8)
  bbox = (int(ys.min()), int(xs.min()), int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1)
  return {"src8": src8, "dst8": dst8, "mask8": mask8, "offset": (width // 16, -height // 16),
          "bbox": bbox}


def _mask_system(src: np.ndarray, dst: np.ndarray, mask: np.ndarray,
                 offset: tuple[int, int]) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
  """The 'mask' domain's system (mode 'normal') in the target frame: for each mask pixel p,
  4 f_p - (its mask neighbours) = sum over its 4 edges of s_p - s_q + the target at neighbours
  outside the mask. Returns A (CSC), B [n, 3] and the unknowns' (y, x) [n, 2]."""
  dx, dy = offset
  height, width = dst.shape[:2]
  placed = np.zeros(dst.shape, np.float64)
  inside = np.zeros((height, width), bool)
  sy, sx = np.nonzero(np.ones(src.shape[:2], bool))
  keep = (sy + dy >= 0) & (sy + dy < height) & (sx + dx >= 0) & (sx + dx < width)
  placed[sy[keep] + dy, sx[keep] + dx] = src[sy[keep], sx[keep]]
  ys, xs = np.nonzero(mask > 127)
  inside[ys + dy, xs + dx] = True
  pts = np.argwhere(inside)
  index = -np.ones((height, width), int)
  index[inside] = np.arange(len(pts))
  y, x = pts[:, 0], pts[:, 1]
  n = len(pts)
  rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
  b = np.zeros((n, dst.shape[2]))
  for oy, ox in ((-1, 0), (1, 0), (0, -1), (0, 1)):
    qy, qx = y + oy, x + ox
    b += placed[y, x] - placed[qy, qx]
    known = ~inside[qy, qx]
    b[known] += dst[qy[known], qx[known]]
    rows.append(np.flatnonzero(~known))
    cols.append(index[qy[~known], qx[~known]])
    vals.append(-np.ones(int((~known).sum())))
  a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                    shape=(n, n))
  return a, b, pts


def _alternate(fns: dict[str, Callable[[], Any]], iters: int, warmup: int) -> dict[str, float]:
  """Median seconds per call of each function, called in turn (a, b, a, b, ...) so that load
  from other processes falls on all of them alike."""
  times: dict[str, list[float]] = {k: [] for k in fns}
  for i in range(warmup + iters):
    for name, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      if i >= warmup:
        times[name].append(time.perf_counter() - start)
  return {k: float(np.median(v)) for k, v in times.items()}


def _compiled(problem: dict[str, Any], domain: str) -> tuple[Callable[[], jax.Array], float]:
  """Ours for one domain, compiled (timed) once: a no-argument call and the compile seconds."""
  y0, x0, h, w = problem["bbox"]
  args = (jnp.asarray(problem["src8"] / 255.0, jnp.float32),
          jnp.asarray(problem["dst8"] / 255.0, jnp.float32),
          jnp.asarray(problem["mask8"][..., None] / 255.0, jnp.float32))
  fn = jax.jit(lambda s, t, m: poisson.seamless_clone(s, t, m, offset=problem["offset"],
                                                      domain=domain, box=(h, w)))
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return (lambda: compiled(*args)), time.perf_counter() - start


def _rows(height: int, width: int, iters: int, warmup: int) -> list[dict[str, Any]]:
  problem = _problem(height, width)
  y0, x0, h, w = problem["bbox"]
  dx, dy = problem["offset"]
  center = (x0 + dx + w // 2, y0 + dy + h // 2)           # cv2's p for our offset
  src8, dst8, mask8 = problem["src8"], problem["dst8"], problem["mask8"]
  # cv2 erodes its mask argument in place: each call gets a fresh copy.
  cv_call = lambda: cv2.seamlessClone(src8, dst8, mask8.copy(), center,  # noqa: E731
                                      cv2.NORMAL_CLONE)
  common = {"benchmark": "poisson_seamless_clone", "height": height, "width": width,
            "mask_pixels": int((mask8 > 0).sum()), "box": [h, w], "iters": iters}
  env = {"cv2_version": cv2.__version__, "cv2_threads": cv2.getNumThreads(),
         **harness.environment()}
  rows = []
  for domain in ("opencv", "box"):
    ours, compile_s = _compiled(problem, domain)
    t = _alternate({"ours": ours, "cv2": cv_call}, iters, warmup)
    row = {**common, "solver": domain, "reference": "cv2.seamlessClone(NORMAL_CLONE)",
           "ours_seconds": t["ours"], "reference_seconds": t["cv2"],
           "ratio_ours_over_reference": t["ours"] / t["cv2"], "compile_seconds": compile_s}
    if domain == "opencv":
      f = np.clip(np.asarray(ours(), np.float64) * 255, 0, 255)
      cv = cv_call().astype(np.float64)
      row.update(ours_255_minus_cv2_min=float((f - cv).min()),
                 ours_255_minus_cv2_max=float((f - cv).max()),
                 floor_differs_share=float(np.mean(np.floor(f) != cv)))
    rows.append({**row, **env})
  ours, compile_s = _compiled(problem, "mask")
  a, b, pts = _mask_system(src8 / 255.0, dst8 / 255.0, mask8, problem["offset"])
  t = _alternate({"ours": ours,
                  "splu_mmd": lambda: spl.splu(a, permc_spec="MMD_AT_PLUS_A").solve(b),
                  "spsolve": lambda: spl.spsolve(a, b)}, iters, warmup)
  reference = min(t["splu_mmd"], t["spsolve"])
  solution = spl.splu(a, permc_spec="MMD_AT_PLUS_A").solve(b)
  diff = np.abs(np.asarray(ours(), np.float64)[pts[:, 0], pts[:, 1]] - solution).max()
  rows.append({**common, "solver": "mask",
               "reference": "SciPy SuperLU direct solve (faster of splu MMD_AT_PLUS_A, spsolve)",
               "ours_seconds": t["ours"], "reference_seconds": reference,
               "splu_mmd_seconds": t["splu_mmd"], "spsolve_seconds": t["spsolve"],
               "ratio_ours_over_reference": t["ours"] / reference, "compile_seconds": compile_s,
               "max_abs_diff_vs_scipy": float(diff), **env})
  return rows


def main(argv):
  del argv
  for size in _SIZES.value.split(","):
    height, width = image_ops.parse_pair(size)
    for row in _rows(height, width, _ITERS.value, _WARMUP.value):
      harness.write_row(_OUT.value, row)


if __name__ == "__main__":
  app.run(main)
