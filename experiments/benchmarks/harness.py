"""Shared benchmark pieces: timing of jitted functions, XLA FLOP counts, JSON rows.

Benchmarks report throughput measured side by side in one run; they are never tests (shared
machines are noisy). Each system's script builds its jitted functions and calls `measure`.
"""
from __future__ import annotations

import json
import pathlib
import platform
import time
from typing import Any, Callable, NamedTuple

import jax

from cpjax import compilation

compilation.set_cpu_flags()   # before JAX's backend starts: benchmarks compile as cpjax.main


class TaskBench(NamedTuple):
  """A system to benchmark, built as training builds it: `system` (`cpjax.system.System`: the
  task, the mesh over all local devices, the state shardings) and its jitted donated
  `train_step` (`System.jit_train_step`)."""
  system: Any
  train_step: Callable[..., Any]

  @property
  def config(self) -> Any:
    return self.system.config

  @property
  def mesh(self) -> Any:
    return self.system.mesh

  @property
  def task(self) -> Any:
    return self.system.task

  def init(self) -> Any:
    """A fresh train state as a new run starts (`System.init_state`: the trainer's RNG mode,
    then the config's warm start)."""
    return self.system.init_state()


def task_bench(config: Any, image_size: int | None = None,
               batch_size: int | None = None) -> TaskBench:
  """`config`'s system and train step (`TaskBench`), with the image size and global batch
  optionally overridden. For a task with phases (`Task.train_phase`), the step of the run's
  last phase: the copy-paste step at full size after a low-resolution phase."""
  from cpjax import system  # pylint: disable=g-import-not-at-top
  if image_size:
    config.data.image_size = image_size
  if batch_size:
    config.batch_size = batch_size
  built = system.System(config)
  return TaskBench(built, built.jit_train_step(built.task.train_phase(config.total_steps - 1)))


def _flops(compiled: Any) -> float:
  """FLOPs of one call of a compiled executable according to XLA's cost analysis (0 if unknown)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # older JAX returned one dict per computation
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def measure(fn: Callable[..., Any], *args: Any, iters: int = 10, warmup: int = 2,
            chain: bool = False) -> dict[str, float]:
  """Seconds per call (median of `iters`) after `warmup` calls, achieved GFLOP/s and compile time.

  `fn` is a `jax.jit` function: it is compiled once, outside the timings, and that executable is
  both costed and timed (so `warmup=0` is fine for steps too slow to run twice). With `chain`, the
  first output is fed back as the first argument (train steps whose state is donated); otherwise
  the same arguments are reused.
  """
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  flops = _flops(compiled)
  args = list(args)
  times = []
  for i in range(warmup + iters):
    start = time.perf_counter()
    out = compiled(*args)
    jax.block_until_ready(out)
    if i >= warmup:
      times.append(time.perf_counter() - start)
    if chain:
      args[0] = out[0]
  times.sort()
  seconds = times[len(times) // 2]
  return {"seconds_per_call": seconds, "gflops_per_call": flops / 1e9,
          "achieved_gflops_per_sec": flops / seconds / 1e9, "compile_seconds": compile_seconds}


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
