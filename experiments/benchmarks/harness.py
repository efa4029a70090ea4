"""Shared benchmark pieces: timing of jitted functions, XLA FLOP counts, JSON rows.

Benchmarks report throughput measured side by side in one run; they are never tests (shared
machines are noisy). Each system's script builds its jitted functions and calls `measure`.
"""
from __future__ import annotations

import json
import pathlib
import platform
import time
from typing import Any, Callable

import jax


def compiled_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs of one call of a jitted function according to XLA's cost analysis (0 if unknown)."""
  analysis = fn.lower(*args).compile().cost_analysis()
  if isinstance(analysis, list):  # older JAX returned one dict per computation
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def measure(fn: Callable[..., Any], *args: Any, iters: int = 10, warmup: int = 2,
            chain: bool = False) -> dict[str, float]:
  """Seconds per call (median of `iters`) after `warmup` calls, and achieved GFLOP/s.

  With `chain`, the first output is fed back as the first argument (train steps whose state is
  donated); otherwise the same arguments are reused.
  """
  flops = compiled_flops(fn, *args)
  args = list(args)
  times = []
  for i in range(warmup + iters):
    start = time.perf_counter()
    out = fn(*args)
    jax.block_until_ready(out)
    if i >= warmup:
      times.append(time.perf_counter() - start)
    if chain:
      args[0] = out[0]
  times.sort()
  seconds = times[len(times) // 2]
  return {"seconds_per_call": seconds, "gflops_per_call": flops / 1e9,
          "achieved_gflops_per_sec": flops / seconds / 1e9}


def environment() -> dict[str, Any]:
  devices = jax.devices()
  return {"jax": jax.__version__, "platform": devices[0].platform,
          "device_kind": devices[0].device_kind, "device_count": len(devices),
          "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def write_row(path: str | None, row: dict[str, Any]) -> None:
  """Prints the row and appends it as one JSON line to `path` (if given)."""
  print(json.dumps(row, indent=2))
  if path:
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
