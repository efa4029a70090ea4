"""What a person watches: console progress, TensorBoard event files, PNG sample grids, profiles.

Only process 0 writes (`Writer(enabled=jax.process_index() == 0)`); on other processes every
method is a no-op. TensorBoard files are written by tensorboardX, which needs no TensorFlow.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any, Sequence

import numpy as np
from absl import logging
from PIL import Image


def image_grid(columns: dict[str, np.ndarray], max_rows: int = 8) -> np.ndarray:
  """Tiles images into a grid: one row per example, one column per entry of `columns`.

  Args:
    columns: name -> [B, H, W, 3] float in [0, 1] (values outside are clipped).
    max_rows: at most this many examples.

  Returns:
    uint8 [rows * H, len(columns) * W, 3].
  """
  arrays = [np.asarray(v, np.float32)[:max_rows] for v in columns.values()]
  rows = [np.concatenate([a[i] for a in arrays], axis=1) for i in range(arrays[0].shape[0])]
  grid = np.concatenate(rows, axis=0)
  return np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)


class Progress:
  """Steps/s, examples/s and ETA over the interval since the last report."""

  def __init__(self, total_steps: int, global_batch_size: int, first_step: int):
    self.total_steps, self.batch_size = total_steps, global_batch_size
    self._last_step, self._last_time = first_step, time.perf_counter()

  def report(self, step: int) -> dict[str, float]:
    now = time.perf_counter()
    steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self.total_steps - step) / steps_per_sec if steps_per_sec > 0 else float("inf")
    return {"steps_per_sec": steps_per_sec, "examples_per_sec": steps_per_sec * self.batch_size,
            "eta_sec": eta}


def format_eta(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _summary_writer_class() -> type:
  """tensorboardX's SummaryWriter, imported without PyTorch.

  When PyTorch is installed (the `[torch]` extra), importing tensorboardX imports it too, only to
  accept torch tensors, which cpjax never passes: 2 s of every run's start on a 2-core CPU. Unless
  something imported torch already, `import torch` fails while tensorboardX loads.
  """
  blocked = "torch" not in sys.modules
  if blocked:
    sys.modules["torch"] = None   # `import torch` raises ImportError
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if blocked:
      del sys.modules["torch"]
  return SummaryWriter


class Writer:
  """TensorBoard scalars and images under `workdir/tensorboard/<name>`, PNGs under `samples/`."""

  def __init__(self, workdir: str | pathlib.Path, name: str, *, enabled: bool):
    self.enabled = enabled
    self.workdir = pathlib.Path(workdir)
    self._tb = None
    if enabled:
      self._tb = _summary_writer_class()(str(self.workdir / "tensorboard" / name))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if not self.enabled:
      return
    for name, value in values.items():
      self._tb.add_scalar(name, float(value), step)
    self._tb.flush()

  def grid(self, step: int, name: str, columns: dict[str, np.ndarray]) -> pathlib.Path | None:
    """Writes a sample grid as `samples/<name>_<step>.png` and to TensorBoard."""
    if not self.enabled:
      return None
    grid = image_grid(columns)
    path = self.workdir / "samples" / f"{name}_{step:08d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    self._tb.add_image(name, grid, step, dataformats="HWC")
    self._tb.flush()
    logging.info("wrote %s (columns: %s)", path, ", ".join(columns))
    return path

  def close(self) -> None:
    """Writes out and closes the event files; every writer thread has ended when it returns.

    tensorboardX hands events to its writer thread through a `multiprocessing.Queue`, whose own
    feeder thread `SummaryWriter.close()` tells to stop but does not wait for: it is joined here,
    so a closed writer leaves no thread behind (a run in a notebook or a sweep would otherwise
    see one more thread for a moment after every close).
    """
    if self._tb is None:
      return
    queues = [getattr(w.event_writer, "_event_queue", None)   # gone from tensorboardX on close
              for w in (self._tb.all_writers or {}).values()]   # None once closed
    self._tb.close()
    for queue in queues:
      if queue is not None:
        queue.join_thread()


def parse_step_range(spec: str) -> tuple[int, int] | None:
  """'A,B' (first and last step, A <= B) -> (A, B); '' -> None.

  Raises:
    ValueError: anything else, naming the expected form.
  """
  if not spec:
    return None
  parts = spec.split(",")
  try:
    first, last = (int(p) for p in parts)
  except ValueError:
    first, last = 0, -1
  if len(parts) != 2 or not 1 <= first <= last:
    raise ValueError(f"profile_steps={spec!r}; give 'A,B', the first and last train step to "
                     "trace (1 <= A <= B), e.g. --config.profile_steps=10,12.")
  return first, last


class Profiler:
  """A `jax.profiler` trace of train steps A..B (`config.profile_steps='A,B'`), process 0 only.

  Written to `workdir/tensorboard/plugins/profile/<time>/`: TensorBoard's profile tab reads the
  `.xplane.pb` (trace viewer, per-op statistics), and `perfetto_trace.json.gz` opens in
  https://ui.perfetto.dev without TensorBoard. Tracing starts before step A runs and stops after
  step B has finished (its outputs are waited for), so the trace holds exactly those steps.
  """

  def __init__(self, workdir: str | pathlib.Path, spec: str, *, enabled: bool):
    self.steps = parse_step_range(spec)
    self.enabled = enabled
    self.directory = pathlib.Path(workdir) / "tensorboard"
    self._active = False

  def before_step(self, step: int) -> None:
    """Called with the number of the step about to run (1 for the first)."""
    if self.enabled and self.steps is not None and step == self.steps[0] and not self._active:
      import jax  # pylint: disable=g-import-not-at-top
      jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
      self._active = True

  def after_step(self, step: int, outputs) -> None:
    """Called after `step` was dispatched, with its outputs (waited for at the last step)."""
    if self._active and step >= self.steps[1]:
      self.stop(outputs)

  def stop(self, outputs=None) -> None:
    if not self._active:
      return
    import jax  # pylint: disable=g-import-not-at-top
    jax.block_until_ready(outputs)
    jax.profiler.stop_trace()
    self._active = False
    logging.info("wrote a profile of steps %d-%d under %s (TensorBoard's profile tab, or "
                 "perfetto_trace.json.gz in ui.perfetto.dev)", *self.steps,
                 self.directory / "plugins" / "profile")


TRAIN_HISTORY = "train_metrics.jsonl"   # under the workdir: one line per logged interval


def append_train_metrics(workdir: str | pathlib.Path, step: int, means: dict[str, float]) -> None:
  """Appends {'step', metric means} as one JSON line to `workdir/train_metrics.jsonl`."""
  path = pathlib.Path(workdir) / TRAIN_HISTORY
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a", encoding="utf-8") as f:
    f.write(json.dumps({"step": step, **means}) + "\n")


def _lookup(result: dict, path: str) -> float | None:
  """The number at a '/'-separated path of an eval result (None where it is missing)."""
  value: Any = result
  for key in path.split("/"):
    if not isinstance(value, dict) or key not in value:
      return None
    value = value[key]
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plot_curves(workdir: str | pathlib.Path,
                panels: Sequence[tuple[str, str, dict[str, str]]]) -> pathlib.Path | None:
  """Writes `workdir/eval/curves.png`: the training loss, and each evaluation metric against
  the step with its baselines as dashed lines.

  Args:
    workdir: the run's directory (reads `train_metrics.jsonl` and `eval/step_*.json`).
    panels: (title, result path, {baseline label: path}) per panel, paths '/'-separated into
      the eval JSON (`Task.curves`).

  Returns:
    The PNG's path, or None before the first evaluation.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  workdir = pathlib.Path(workdir)
  evals = sorted((json.loads(p.read_text()) for p in (workdir / "eval").glob("step_*.json")),
                 key=lambda r: r["step"])
  if not evals:
    return None
  history = []
  if (workdir / TRAIN_HISTORY).exists():
    history = [json.loads(line) for line in (workdir / TRAIN_HISTORY).read_text().splitlines()
               if line.strip()]
  figure, axes = plt.subplots(1, len(panels) + 1, figsize=(4 * (len(panels) + 1), 3.2),
                              squeeze=False)
  axes = axes[0]
  axes[0].plot([h["step"] for h in history], [h["loss"] for h in history], lw=1)
  axes[0].set(title="training loss", xlabel="step")
  steps = [r["step"] for r in evals]
  for ax, (title, path, baselines) in zip(axes[1:], panels):
    ax.plot(steps, [_lookup(r, path) for r in evals], "o-", label="result")
    for (label, baseline), style in zip(baselines.items(), ("--", ":", "-.")):
      ax.plot(steps, [_lookup(r, baseline) for r in evals], style, label=label)
    ax.set(title=title, xlabel="step")
    ax.legend(fontsize="small")
  figure.tight_layout()
  out = workdir / "eval" / "curves.png"
  figure.savefig(out, dpi=80)
  plt.close(figure)
  return out
