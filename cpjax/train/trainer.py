"""The one training loop: steps, logging, samples, checkpoints, evaluation, preemption.

A rerun of the same command finishes what a stopped run left undone: it resumes from the
newest intact checkpoint (damaged newer ones are set aside, see `checkpointing`) and first
evaluates that step if its evaluation was due but never written. SIGTERM stops the loop between
steps with the state on disk (exit 0); a save that fails (a full disk) stops it with the last
good checkpoint named.

Used by every task (`cpjax.tasks`). Config fields read here (each config sets them):
  task, seed, total_steps, batch_size (global), fsdp,
  data.*                          training pipeline (`data_pipelines.pipeline`),
  log_every_steps, sample_every_steps, checkpoint.every_steps (0 = only at the end),
  profile_steps ('A,B': trace of steps A..B), checkpoint.max_to_keep, checkpoint.async_save,
  eval.source, eval.num_examples, eval.repeats, eval.batch_size,
  eval.every_steps (0 = only at the end), eval.step (-1 = latest), eval.follow, eval.poll_secs,
  eval.seed, eval.mode and eval.full_size (the evaluation geometry; these and eval.source,
  eval.num_examples, eval.repeats are `data_pipelines.pipeline.eval_dataset`'s arguments of the
  same names).
"""
from __future__ import annotations

import functools
import json
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Hashable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from cpjax import system as system_lib
from cpjax.train import checkpointing, defaults, partitioning, writers
from data_pipelines import pipeline, schema


def _to_json(value: Any) -> Any:
  """NumPy scalars and arrays inside nested dicts/lists -> plain Python numbers and lists."""
  if isinstance(value, dict):
    return {str(k): _to_json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_json(v) for v in value]
  if isinstance(value, (np.ndarray, np.generic)):
    return value.tolist()
  return value


def _numeric_leaves(value: Any, prefix: str = "") -> dict[str, float]:
  """The numbers of a JSON-like result, keyed by their '/'-joined path (for TensorBoard)."""
  if isinstance(value, dict):
    items = value.items()
  elif isinstance(value, list):
    items = enumerate(value)
  elif isinstance(value, (int, float)) and not isinstance(value, bool):
    return {prefix: float(value)}
  else:
    return {}
  leaves = {}
  for k, v in items:
    leaves.update(_numeric_leaves(v, f"{prefix}/{k}" if prefix else str(k)))
  return leaves


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the message names the step and the last good checkpoint."""


class _Preemption:
  """Turns SIGTERM into a flag that the loop checks between steps (single process).

  With several processes, `jax.distributed` installs its own preemption notice and the processes
  agree on a step to save at (`Checkpointer.reached_preemption`).
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    # Signal handlers can only be set from the main thread (not from a notebook's worker).
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint and exiting.")
    self.requested = True

  def should_stop(self, step: int, checkpointer: checkpointing.Checkpointer) -> bool:
    if jax.process_count() > 1:
      return checkpointer.reached_preemption(step)
    return self.requested

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _Run:
  """What train and eval share: the system, its checkpoints and the jitted functions."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
               devices: list[jax.Device] | None = None):
    self.config = config
    self.workdir = pathlib.Path(workdir)
    self.system = system_lib.System(config, devices)
    self.task, self.mesh, self.root_key = self.system.task, self.system.mesh, self.system.root_key
    # The loop decides when to save (`save_due`).
    self.checkpointer = checkpointing.Checkpointer(
        self.workdir, max_to_keep=config.checkpoint.max_to_keep,
        async_save=config.checkpoint.async_save)
    repl = partitioning.replicated(self.mesh)
    self._train_fns: dict[Hashable, Callable[..., Any]] = {}
    self.eval_fn = jax.jit(self._eval_sums, out_shardings=repl)
    self.baseline_fn = jax.jit(self._baseline_sums, out_shardings=repl)
    self._baseline_totals: dict[str, np.ndarray] | None = None
    self._samples_fn = jax.jit(self.task.samples, out_shardings=repl)
    self.is_chief = jax.process_index() == 0
    self._eval_writer: writers.Writer | None = None

  def train_fn(self, step: int) -> Callable[..., Any]:
    """The jitted train step of the update after `step` updates: that of its phase
    (`Task.train_phase`), compiled at its first use."""
    phase = self.task.train_phase(step)
    if phase not in self._train_fns:
      self._train_fns[phase] = self.system.jit_train_step(phase)
    return self._train_fns[phase]

  @property
  def eval_writer(self) -> writers.Writer:
    """The one writer of `workdir/tensorboard/eval` for this run (opened at first use)."""
    if self._eval_writer is None:
      self._eval_writer = writers.Writer(self.workdir, "eval", enabled=self.is_chief)
    return self._eval_writer

  def close(self) -> None:
    """Waits for checkpoint saves and closes the checkpointer and the eval writer."""
    self.checkpointer.close()
    if self._eval_writer is not None:
      self._eval_writer.close()

  def samples(self, state: Any, batch: dict[str, jax.Array], key: jax.Array) -> dict[str, Any]:
    """The task's sample images on the host, columns in the task's order."""
    images = jax.device_get(self._samples_fn(state, batch, key))
    order = list(self.task.sample_columns) + sorted(set(images) - set(self.task.sample_columns))
    return {name: images[name] for name in order}

  def _eval_sums(self, state: Any, batch: dict[str, jax.Array], key: jax.Array):
    """Sums over the valid examples of one global batch of each per-example metric [B, ...],
    and the number of valid examples."""
    valid = batch["valid"]
    return (_valid_sums(self.task.eval_step(state, batch, key), valid),
            jnp.sum(valid.astype(jnp.float32)))

  def _baseline_sums(self, batch: dict[str, jax.Array], key: jax.Array):
    """`_eval_sums` of the task's baselines (`Task.baseline_step`)."""
    return _valid_sums(self.task.baseline_step(batch, key), batch["valid"])

  def eval_data(self, reader: Callable[..., Any] = pipeline.eval_batches) -> Any:
    """This process's evaluation batches: `reader` (`pipeline.eval_batches` or
    `pipeline.eval_dataset`) called with data.* and the eval.* settings."""
    e = self.config.eval
    return reader(self.config.data, batch_size=e.batch_size, source=e.source,
                  num_examples=e.num_examples, repeats=e.repeats, mode=e.mode,
                  full_size=e.full_size, process_index=jax.process_index(),
                  process_count=jax.process_count())

  def evaluate(self, state: Any, step: int) -> dict[str, float]:
    """Runs the task's evaluation over the eval set; writes JSON, scalars and a sample grid."""
    writer = self.eval_writer
    eval_cfg = self.config.eval
    _require_source(eval_cfg.source, self.config, "eval.source")
    partitioning.check_batch_size(eval_cfg.batch_size, self.mesh)
    eval_key = jax.random.key(eval_cfg.seed)  # the same problems at every checkpoint
    totals: dict[str, np.ndarray] = {}
    baselines: dict[str, np.ndarray] = {}
    count = 0.0
    first = True
    for local in self.eval_data():
      batch = partitioning.global_batch(local, self.mesh)
      sums, n = jax.device_get(self.eval_fn(state, batch, eval_key))
      _accumulate(totals, sums)
      if self._baseline_totals is None:   # the first evaluation of this process
        _accumulate(baselines, jax.device_get(self.baseline_fn(batch, eval_key)))
      count += float(n)
      if first:
        writer.grid(step, "eval", self.samples(state, batch, eval_key))
        first = False
    if count == 0:
      raise ValueError(f"the evaluation set {eval_cfg.source!r} is empty.")
    if self._baseline_totals is None:
      self._baseline_totals = baselines
    results = _to_json(self.task.summarize_eval({**totals, **self._baseline_totals}, int(count)))
    results["num_examples"] = int(count)
    writer.scalars(step, {f"eval/{k}": v for k, v in _numeric_leaves(results).items()})
    if self.is_chief:
      path = self.workdir / "eval" / f"step_{step:08d}.json"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps({"step": step, "source": eval_cfg.source, **results}, indent=2))
      writers.plot_curves(self.workdir, self.task.curves or [
          (k, k, {}) for k, v in results.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)])
      logging.info("eval at step %d: %s (written to %s)", step,
                   ", ".join(f"{k}={v:.4g}" for k, v in _numeric_leaves(results).items()), path)
    return results


def _valid_sums(per_example: dict[str, jax.Array], valid: jax.Array) -> dict[str, jax.Array]:
  """Each per-example metric [B, ...] summed over the valid examples -> [...]."""
  def total(v: jax.Array) -> jax.Array:
    # where, not a product: a padding example's metric may be inf or NaN (e.g. PSNR of a zero
    # target), and inf * 0 is NaN.
    keep = valid.reshape(valid.shape + (1,) * (v.ndim - 1))
    return jnp.sum(jnp.where(keep, v.astype(jnp.float32), 0.0), axis=0)
  return {k: total(v) for k, v in per_example.items()}


def _accumulate(totals: dict[str, np.ndarray], sums: dict[str, Any]) -> None:
  for k, v in sums.items():
    totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)


def _require_source(spec: str, config: ml_collections.ConfigDict, what: str) -> None:
  """A config without data names the flag that sets it (the config's own hint if it has one)."""
  if not spec:
    hint = config.data.missing_hint or f"set --config.{what}=folder:/path/to/images"
    raise ValueError(f"no {what.replace('.source', '')} data configured: {hint}")


def _check_finite(history: list[tuple[int, dict[str, float]]], last_good: int | None,
                  checkpoint_dir: pathlib.Path) -> None:
  for step, metrics in history:
    loss = metrics["loss"]
    if not np.isfinite(loss):
      kept = (f"the last good checkpoint (step {last_good}) is kept in {checkpoint_dir}"
              if last_good is not None else "no checkpoint had been written yet")
      raise NonFiniteLossError(
          f"loss is {loss} at step {step}; training stopped and {kept}. Lower the learning rate "
          "or check the data, then rerun the same command to resume.")


def _mean_metrics(history: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
  """Each metric's mean over the steps that report it (a task's phases may report different
  metrics: the copy-paste critic's only once it trains)."""
  keys = dict.fromkeys(k for _, m in history for k in m)
  return {k: float(np.mean([m[k] for _, m in history if k in m])) for k in keys}


def _check_loop_config(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """The loop's counts, checked before anything runs: one line naming the flag."""
  if not isinstance(config.total_steps, int) or config.total_steps < 1:
    raise ValueError(f"--config.total_steps={config.total_steps}; give a number of steps >= 1.")
  for name in ("log_every_steps", "sample_every_steps", "checkpoint.every_steps",
               "eval.every_steps"):
    value = functools.reduce(lambda c, k: c[k], name.split("."), config)
    if not isinstance(value, int) or value < 0:
      raise ValueError(f"--config.{name}={value}; give a number of steps >= 1, or 0 for never "
                       "(only at the end).")
  keep = config.checkpoint.max_to_keep
  if keep is not None and (not isinstance(keep, int) or keep < 1):
    raise ValueError(f"--config.checkpoint.max_to_keep={keep}; give 1 or more (None keeps all).")
  partitioning.check_batch_size(config.batch_size, mesh)
  partitioning.check_batch_size(config.eval.batch_size, mesh, "--config.eval.batch_size")


def _check_eval_data(run: _Run) -> None:
  """Opens the evaluation set (without reading it): a bad eval.source is reported before
  training, not after it."""
  try:
    run.eval_data(pipeline.eval_dataset)
  except (ValueError, OSError) as e:
    raise ValueError(f"--config.eval.source={run.config.eval.source}: {e} (checked before "
                     "training, which evaluates at the end)") from e
  _check_fields(run, train=False)


def _check_fields(run: _Run, train: bool) -> None:
  """The training or evaluation batches hold the fields the task reads (`Task.batch_needs`),
  from the source's declaration (no item is read)."""
  c = run.config
  spec = c.data.source if train else c.eval.source or c.data.source
  have = pipeline.batch_fields(c.data, train=train, source=spec, mode=c.eval.mode)
  schema.require(have, run.task.batch_needs, task=c.task,
                 setting=f"--config.{'data' if train else 'eval'}.source={spec}")


def _every(step: int, every: int) -> bool:
  """Whether `step` is one of every `every`-th steps (never for 0)."""
  return every > 0 and step % every == 0


def _eval_due(config: ml_collections.ConfigDict, step: int) -> bool:
  """Whether the loop evaluates at `step`: every eval.every_steps, and at the end."""
  return step >= config.total_steps or _every(step, config.eval.every_steps)


def _agree(flag: bool) -> bool:
  """True only if `flag` is true on every process (all processes call this together)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))


# Config fields that a resumed run may change (they steer the loop, not the network).
_LOOP_FIELDS = ("total_steps", "log_every_steps", "sample_every_steps", "profile_steps",
                "checkpoint.", "eval.", "data.workers", "data.prefetch", "data.source")


def config_differences(saved: dict[str, Any], config: ml_collections.ConfigDict,
                       limit: int = 6) -> list[str]:
  """The fields (other than `_LOOP_FIELDS`) where a saved config and `config` differ.

  Returns:
    Lines 'model.generator_widths: [16, 32] in the run, [8, 16] here', at most `limit`.
  """
  a, b = defaults.flat(saved), defaults.flat(json.loads(config.to_json()))
  lines = [f"{k}: {a.get(k, 'absent')} in the run, {b.get(k, 'absent')} here"
           for k in sorted(set(a) | set(b))
           if not k.startswith(_LOOP_FIELDS) and a.get(k, "absent") != b.get(k, "absent")]
  return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def _another_run(run: _Run, what: str) -> ValueError:
  return ValueError(f"{run.workdir} holds a run {what}; use a new --workdir, or the same config "
                    f"as that run (its copy: {run.workdir / 'config.json'}).")


def _restore(run: _Run, step: int, saved: dict[str, Any] | None = None) -> Any:
  """The train state of checkpoint `step` for `run`'s config.

  Raises:
    ValueError: the checkpoint is of another task or network (names the differing fields).
    checkpointing.DamagedCheckpointError: its files cannot be read.
  """
  saved = run.checkpointer.restore_config(step) if saved is None else saved
  if saved.get("task") != run.config.task:
    raise _another_run(run, f"of task {saved.get('task')!r} (checkpoint of step {step}), but "
                       f"this config is a {run.config.task!r} one")
  try:
    return run.system.restore(run.checkpointer, step)
  except checkpointing.IncompatibleCheckpointError as e:
    fields = config_differences(saved, run.config)
    raise _another_run(run, "with these differing fields: " + "; ".join(fields) if fields
                       else f"of another network ({'; '.join(e.differences)})") from e


def _resume(run: _Run, data: Any) -> tuple[Any, int | None]:
  """The newest intact checkpoint's state, with `data` set to its position; (None, None) if
  the workdir has no checkpoint.

  Damaged checkpoints (newer than the one resumed) are moved to `workdir/damaged_checkpoints/`
  with a warning, so that their steps can be saved again; they are never deleted.

  Raises:
    ValueError: a run of another task or network; or every checkpoint damaged.
  """
  damaged: list[checkpointing.DamagedCheckpointError] = []
  for step in reversed(run.checkpointer.all_steps()):
    error = None
    try:
      saved = run.checkpointer.restore_config(step)
      state = _restore(run, step, saved)
      run.checkpointer.restore_data_iterator(step, data)
    except checkpointing.DamagedCheckpointError as e:
      error = e
    if not _agree(error is None):
      error = error or checkpointing.DamagedCheckpointError(
          step, run.checkpointer.step_dir(step), "unreadable on another process")
      logging.warning("%s; trying the checkpoint before it.", error)
      damaged.append(error)
      continue
    for bad in damaged:
      where = run.checkpointer.set_aside(bad.step)
      logging.warning("resuming from step %d, the newest intact checkpoint; the damaged "
                      "checkpoint of step %d was moved to %s (kept, not deleted).", step,
                      bad.step, where)
    return state, step
  if damaged:
    raise ValueError(f"every checkpoint in {run.checkpointer.directory} is damaged (the newest: "
                     f"{damaged[0]}); move them out of that folder to start over, or use a new "
                     "--workdir.")
  return None, None


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
          devices: list[jax.Device] | None = None) -> Any:
  """Trains `config.task` until `config.total_steps`, resuming from the newest intact
  checkpoint, and finishes what a stopped run left undone (its last evaluation).

  Returns the final train state (for tests and notebooks).
  """
  _require_source(config.data.source, config, "data.source")
  _require_source(config.eval.source, config, "eval.source")
  _check_loop_config(config, partitioning.make_mesh(devices))
  profiler = writers.Profiler(workdir, config.profile_steps, enabled=jax.process_index() == 0)
  run = _Run(config, workdir, devices)
  try:
    if not run.checkpointer.all_steps():   # a new run: pretrained weights named?
      run.task.check_warm_start()
    _check_fields(run, train=True)
    _check_eval_data(run)
  except ValueError:
    run.close()
    raise
  writer = writers.Writer(run.workdir, "train", enabled=run.is_chief)
  preemption = _Preemption()
  data: Iterator[dict[str, np.ndarray]] = iter(())
  try:
    data = pipeline.train_iterator(
        config.data, global_batch_size=config.batch_size, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count())
    state, last_saved = _resume(run, data)
    if state is None:
      state = run.system.init_state()
      if run.is_chief:
        (run.workdir / "config.json").parent.mkdir(parents=True, exist_ok=True)
        (run.workdir / "config.json").write_text(config.to_json(indent=2))
    else:
      logging.info("resumed from the checkpoint of step %d in %s", last_saved,
                   run.checkpointer.directory)
      if _eval_due(config, last_saved) and not _agree(
          _eval_result_path(run.workdir, last_saved).exists()):
        logging.info("the evaluation of step %d is missing (the run stopped before it was "
                     "written): evaluating it now", last_saved)
        run.evaluate(state, last_saved)
    step = int(jax.device_get(state.step))
    progress = writers.Progress(config.total_steps, config.batch_size, step)
    pending: list[tuple[int, dict[str, jax.Array]]] = []
    skipped_files = 0
    while step < config.total_steps:
      if preemption.should_stop(step, run.checkpointer):
        _flush(pending, last_saved, run, writer, progress, skipped_files, step)
        if last_saved != step:   # a scheduled save of this step may have just happened
          run.checkpointer.save(step, state, data, config)
        run.checkpointer.wait()
        logging.warning("preempted: saved the checkpoint of step %d; exiting.", step)
        return state
      local = next(data)
      skipped_files += int(np.sum(local.pop("skipped", 0)))
      batch = partitioning.global_batch(local, run.mesh)
      profiler.before_step(step + 1)
      state, metrics = run.train_fn(step)(state, batch, run.root_key)
      step += 1
      profiler.after_step(step, metrics)
      pending.append((step, metrics))
      final = step == config.total_steps
      save_due = final or _every(step, config.checkpoint.every_steps)
      if save_due or _every(step, config.log_every_steps):
        _flush(pending, last_saved, run, writer, progress, skipped_files, step)
        pending = []
      if save_due:
        run.checkpointer.save(step, state, data, config)
        last_saved = step
      if config.sample_every_steps and (step % config.sample_every_steps == 0 or final):
        writer.grid(step, "train", run.samples(state, batch, run.root_key))
      if _eval_due(config, step):
        run.evaluate(state, step)
  finally:
    pipeline.close_iterator(data)   # its worker processes, in a process that goes on
    profiler.stop()
    preemption.restore()
    run.close()
    writer.close()
  return state


def _flush(pending: list[tuple[int, dict[str, jax.Array]]], last_saved: int | None, run: _Run,
           writer: writers.Writer, progress: writers.Progress, skipped_files: int,
           step: int) -> None:
  """Fetches the metrics of the steps since the last flush, checks them, logs their mean."""
  if not pending:
    return
  history = [(s, {k: float(v) for k, v in m.items()}) for s, m in jax.device_get(pending)]
  _check_finite(history, last_saved, run.checkpointer.directory)
  means = _mean_metrics(history)
  if run.is_chief:
    writers.append_train_metrics(run.workdir, step, means)
  rates = progress.report(step)
  writer.scalars(step, {**{f"train/{k}": v for k, v in means.items()},
                        "perf/steps_per_sec": rates["steps_per_sec"],
                        "perf/examples_per_sec": rates["examples_per_sec"],
                        "data/skipped_files": skipped_files})
  if run.is_chief:
    logging.info("step %d/%d  loss %.4f  %.2f steps/s  %.1f examples/s  ETA %s%s  [%s]", step,
                 run.config.total_steps, means["loss"], rates["steps_per_sec"],
                 rates["examples_per_sec"], writers.format_eta(rates["eta_sec"]),
                 f"  skipped files {skipped_files}" if skipped_files else "",
                 " ".join(f"{k}={v:.4g}" for k, v in means.items() if k != "loss"))


def _eval_result_path(workdir: pathlib.Path, step: int) -> pathlib.Path:
  return workdir / "eval" / f"step_{step:08d}.json"


def evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
             devices: list[jax.Device] | None = None) -> dict[str, float]:
  """Evaluates one checkpoint: `config.eval.step`, or the latest when it is -1.

  A workdir without checkpoints but a config with `init_from` (e.g. weights converted by
  `cpjax.tools.convert`) evaluates the warm-started state as step 0: released weights are
  scored without training.
  """
  run = _Run(config, workdir, devices)
  try:
    _require_source(config.eval.source, config, "eval.source")
    _check_fields(run, train=False)
    steps = run.checkpointer.all_steps()
    if not steps and config.get("init_from") and config.eval.step < 0:
      logging.info("no checkpoint in %s: evaluating the weights of init_from=%s as step 0",
                   run.checkpointer.directory, config.init_from)
      return run.evaluate(run.system.init_state(), 0)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first "
                              "(--mode=train), point --workdir at a training run, or give "
                              "--config.init_from=DIR to evaluate converted weights.")
    step = steps[-1] if config.eval.step < 0 else config.eval.step
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint of step {step} in {run.checkpointer.directory}; "
                              f"available steps: {steps}.")
    try:
      state = _restore(run, step)
    except checkpointing.DamagedCheckpointError as e:
      e.intact = run.checkpointer.intact_steps(exclude=[step])
      raise ValueError(e.advice("--config.eval.step")) from e
    return run.evaluate(state, step)
  finally:
    run.close()


def eval_sweep(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
               devices: list[jax.Device] | None = None) -> dict[int, dict[str, float]]:
  """Evaluates every checkpoint without a result; with `eval.follow`, waits for new ones.

  Following stops once the checkpoint of `config.total_steps` has been evaluated. A damaged
  checkpoint is skipped with a warning; the sweep then ends with an error naming it.

  Raises:
    ValueError: a checkpoint of another network, or damaged ones (after the others are done).
  """
  run = _Run(config, workdir, devices)
  results: dict[int, dict[str, float]] = {}
  damaged: dict[int, checkpointing.DamagedCheckpointError] = {}
  try:
    _require_source(config.eval.source, config, "eval.source")
    _check_fields(run, train=False)
    while True:
      todo = [s for s in run.checkpointer.all_steps()
              if not _eval_result_path(run.workdir, s).exists() and s not in results
              and s not in damaged]
      for step in todo:
        try:
          state = _restore(run, step)
        except checkpointing.DamagedCheckpointError as e:
          logging.warning("skipping it: %s", e)
          damaged[step] = e
          continue
        results[step] = run.evaluate(state, step)
      done = (_eval_result_path(run.workdir, config.total_steps).exists()
              or config.total_steps in damaged)
      if not config.eval.follow or done:
        if damaged:
          raise ValueError(
              f"evaluated steps {sorted(results) or 'none'}; skipped damaged checkpoints: "
              + "; ".join(str(e) for e in damaged.values()))
        return results
      logging.info("waiting for new checkpoints in %s (until step %d)...",
                   run.checkpointer.directory, config.total_steps)
      time.sleep(config.eval.poll_secs)
  finally:
    run.close()
