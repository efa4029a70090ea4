"""Checkpoints: one orbax `CheckpointManager` under `workdir/checkpoints/`.

Each step directory holds three items:
  state   the train state pytree (params, optimizer states, step), restored with the shardings
          of the current mesh, so a run may resume on a different number of devices;
  data    the grain iterator state of every process (`process_<i>-of-<n>.json`);
  config  the run's config as JSON, for evaluation sweeps and for humans.
Saving is asynchronous; a save that is still in flight finishes before the next one starts and
before the program exits (`close`). A save is written to a temporary directory and renamed when
complete, so a save that fails (a full disk) or is cut short leaves the earlier checkpoints as
they were.

Reading a checkpoint whose files are damaged (truncated by a full disk or a copy cut short, or
partly deleted) raises `DamagedCheckpointError` naming the step and the file; a checkpoint of
another network (other layers or widths) raises `IncompatibleCheckpointError` naming the arrays
that differ. A checkpoint counts as intact when its config and its whole train state can be
read (`verify`).
"""
from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any, Sequence

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

STATE, DATA, CONFIG = "state", "data", "config"
DAMAGED_DIR = "damaged_checkpoints"   # under the workdir: damaged checkpoints set aside


def _reason(error: BaseException, limit: int = 240) -> str:
  """The innermost cause of a library error, one line (TensorStore's spec dump removed)."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  text = re.sub(r"\s*\[tensorstore_spec=.*", "", text).strip(" '\"")
  return text if len(text) <= limit else text[:limit - 3] + "..."


class DamagedCheckpointError(ValueError):
  """A checkpoint whose files cannot be read.

  Attributes:
    step: the checkpoint's step.
    step_dir: its directory, `checkpoints/<step>`.
    path: the damaged file or item directory inside it.
    reason: what reading it said, one line.
    intact: the steps of the same directory verified intact (None: not checked).
  """

  def __init__(self, step: int, step_dir: pathlib.Path, path: pathlib.Path, reason: str):
    self.step, self.step_dir, self.path, self.reason = step, step_dir, path, reason
    self.intact: list[int] | None = None
    super().__init__(f"the checkpoint of step {step} is damaged ({path}: {reason})")

  def advice(self, step_flag: str | None) -> str:
    """The message, the intact checkpoints (`intact`) and what to do, one line.

    Args:
      step_flag: the flag that picks a checkpoint ('--step', '--config.eval.step'), or None
        where the latest is always used.
    """
    if not self.intact:
      return (f"{self}, and no other checkpoint in {self.step_dir.parent} is intact; train "
              "again (rerunning the training command resumes from the newest intact "
              "checkpoint and sets damaged ones aside).")
    best = self.intact[-1]
    pick = f"use {step_flag}={best}, or " if step_flag else ""
    return (f"{self}; intact checkpoints: steps {', '.join(map(str, self.intact))}; {pick}move "
            f"{self.step_dir} out of {self.step_dir.parent} to make step {best} the latest "
            "(rerunning the training command does this itself).")


class IncompatibleCheckpointError(ValueError):
  """A checkpoint whose train state has other arrays than the one this config builds.

  Attributes:
    step: the checkpoint's step.
    differences: up to a few 'name: saved shape, this shape' lines.
  """

  def __init__(self, step: int, directory: pathlib.Path, differences: list[str]):
    self.step, self.differences = step, differences
    super().__init__(f"the checkpoint of step {step} in {directory} holds another network than "
                     f"this config builds ({'; '.join(differences)})")


class CheckpointSaveError(OSError):
  """Writing a checkpoint failed (a full disk, a file system error); the earlier ones are
  intact."""


def _leaf_name(key: Any) -> str:
  for attribute in ("key", "name", "idx"):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _layout(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """'/'-joined leaf path -> (shape, dtype name) of a pytree of arrays or array metadata."""
  return {"/".join(_leaf_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def layout_differences(saved: Any, wanted: Any, limit: int = 4) -> list[str]:
  """The leaves whose presence or shape differ between two pytrees of arrays (or metadata).

  Returns:
    Up to `limit` lines such as 'generator/conv_0/kernel: (3, 3, 4, 16) saved, (3, 3, 4, 8)
    here', then '... and N more'; [] when the layouts agree.
  """
  a, b = _layout(saved), _layout(wanted)
  lines = []
  for name in sorted(set(a) | set(b)):
    if a.get(name) != b.get(name):
      saved_text = a[name][0] if name in a else "absent"
      here_text = b[name][0] if name in b else "absent"
      lines.append(f"{name}: {saved_text} saved, {here_text} here")
  if len(lines) > limit:
    lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
  return lines


class Checkpointer:
  """Saves and restores train state + data-iterator state + config."""

  def __init__(self, workdir: str | pathlib.Path, *, max_to_keep: int | None = 3,
               async_save: bool = True, read_only: bool = False):
    self.workdir = pathlib.Path(workdir).absolute()
    self.directory = self.workdir / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler(),
                       CONFIG: ocp.JsonCheckpointHandler()})
    self._async = async_save
    self._saving: int | None = None   # the step of the save in flight
    self._failed = False              # a save failed (and was reported)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Completed checkpoint steps, re-read from disk (another process may be writing)."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def _damaged(self, step: int, item: str, error: Exception) -> DamagedCheckpointError:
    return DamagedCheckpointError(step, self.step_dir(step), self.step_dir(step) / item,
                                  _reason(error))

  def save(self, step: int, state: Any, data_iterator: Any | None,
           config: ml_collections.ConfigDict) -> None:
    """Starts saving `step` (the caller decides when one is due: the trainer's loop).

    Raises:
      CheckpointSaveError: this save, or the one still in flight, failed.
    """
    items = {STATE: ocp.args.StandardSave(state),
             CONFIG: ocp.args.JsonSave(config.to_dict())}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    self.wait()
    self._saving = step
    self._checked(lambda: self._manager.save(step, args=ocp.args.Composite(**items), force=True))
    if not self._async:
      self._saving = None

  def _checked(self, fn: Any) -> Any:
    """Runs a save or a wait; a failure becomes a CheckpointSaveError naming the step."""
    try:
      return fn()
    except Exception as e:  # orbax and TensorStore raise many types for I/O errors
      step, self._saving, self._failed = self._saving, None, True
      earlier = [s for s in self.all_steps() if s != step]
      kept = (f"the checkpoint of step {earlier[-1]} is intact" if earlier
              else "no earlier checkpoint exists")
      raise CheckpointSaveError(
          f"saving the checkpoint of step {step} in {self.directory} failed ({_reason(e)}); "
          f"{kept}. Free disk space (or fix the cause), then rerun the same command to resume."
      ) from e

  def restore_state(self, step: int, abstract_state: Any, optional: Sequence[str] = ()) -> Any:
    """Restores the train state at `step` into the shardings of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `.sharding` set.
      optional: fields of the `abstract_state` dataclass that a checkpoint saved before they
        existed lacks; each one it lacks comes back None (for the caller to fill in).

    Raises:
      IncompatibleCheckpointError: the saved arrays are not those of `abstract_state`.
      DamagedCheckpointError: a file of the state cannot be read.
    """
    saved = self.state_metadata(step)
    absent = [name for name in optional if not jax.tree_util.tree_leaves(saved.get(name))]
    if absent:
      abstract_state = abstract_state.replace(**dict.fromkeys(absent))
    differences = layout_differences(saved, abstract_state)
    if differences:
      raise IncompatibleCheckpointError(step, self.directory, differences)
    # A field without arrays (None: a feature turned off) that a checkpoint saved before the
    # field existed does not name: restore the fields it names and keep that one as it is.
    names = ([f.name for f in dataclasses.fields(abstract_state)]
             if dataclasses.is_dataclass(abstract_state) else [])
    unnamed = [name for name in names if name not in saved.keys()]
    target = ({name: getattr(abstract_state, name) for name in names if name not in unnamed}
              if unnamed else abstract_state)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)}))
    except Exception as e:  # TensorStore and orbax raise many types for bad files
      raise self._damaged(step, STATE, e) from e
    return abstract_state.replace(**restored[STATE]) if unnamed else restored[STATE]

  def state_metadata(self, step: int) -> Any:
    """The saved train state's array metadata (shapes, dtypes), without reading the arrays.

    Raises:
      DamagedCheckpointError: the state's metadata is missing or unreadable.
    """
    try:
      metadata = self._manager.item_metadata(step)[STATE]
    except Exception as e:  # a missing item is a KeyError, a bad file a ValueError
      raise self._damaged(step, STATE, e) from e
    if metadata is None or not jax.tree_util.tree_leaves(metadata):
      raise DamagedCheckpointError(step, self.step_dir(step),
                                   self.step_dir(step) / STATE / "_METADATA",
                                   "missing or empty")
    return metadata

  def restore_data_iterator(self, step: int, data_iterator: Any) -> None:
    """Sets `data_iterator` to the position it had when `step` was saved.

    Raises:
      DamagedCheckpointError: the data item cannot be read.
    """
    try:
      self._manager.restore(
          step,
          args=ocp.args.Composite(**{DATA: grain.checkpoint.CheckpointRestore(data_iterator)}))
    except Exception as e:  # a truncated JSON file, a missing item
      raise self._damaged(step, DATA, e) from e

  def restore_config(self, step: int) -> dict[str, Any]:
    """The config saved with `step`.

    Raises:
      DamagedCheckpointError: the config file is missing or not valid JSON.
    """
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
    except Exception as e:  # json.JSONDecodeError, a missing item (KeyError)
      raise self._damaged(step, f"{CONFIG}/metadata", e) from e
    return restored[CONFIG]

  def verify(self, step: int) -> None:
    """Reads the config and the whole train state of `step` (onto this host's first device)
    and drops them.

    Raises:
      DamagedCheckpointError: something cannot be read.
    """
    self.restore_config(step)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          self.state_metadata(step))
    jax.block_until_ready(self.restore_state(step, target))

  def intact_steps(self, exclude: Sequence[int] = ()) -> list[int]:
    """The steps that `verify` reads without error (each one read in full: slow for big
    models; meant for error messages)."""
    intact = []
    for step in self.all_steps():
      if step in exclude:
        continue
      try:
        self.verify(step)
      except DamagedCheckpointError:
        continue
      intact.append(step)
    return intact

  def set_aside(self, step: int) -> pathlib.Path:
    """Moves the damaged checkpoint of `step` to `workdir/damaged_checkpoints/` (kept for
    inspection, never deleted), so that the step can be saved again; all processes call this.

    Returns:
      Where it now is.
    """
    target = self.workdir / DAMAGED_DIR / str(step)
    suffix = 1
    while target.exists():
      target = target.with_name(f"{step}.{suffix}")
      suffix += 1
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      self.step_dir(step).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"cpjax_set_aside_{step}")
    self._manager.reload()
    return target

  def reached_preemption(self, step: int) -> bool:
    """Multi-process preemption agreement (all processes call this every step)."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Waits for the save in flight; raises CheckpointSaveError if it failed."""
    self._checked(self._manager.wait_until_finished)
    self._saving = None

  def close(self) -> None:
    """Waits for the save in flight and closes; a failure already reported is not raised
    again."""
    reported = self._failed
    try:
      self.wait()
    except CheckpointSaveError:
      if not reported:
        raise
    finally:
      self._manager.close()


def abstract_with_shardings(shapes: Any, shardings: Any) -> Any:
  """Attaches shardings to a pytree of ShapeDtypeStructs (the restore target)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)
