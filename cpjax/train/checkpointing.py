"""Checkpoints: one orbax `CheckpointManager` under `workdir/checkpoints/`.

Each step directory holds three items:
  state   the train state pytree (params, optimizer states, step), restored with the shardings
          of the current mesh, so a run may resume on a different number of devices;
  data    the grain iterator state of every process (`process_<i>-of-<n>.json`);
  config  the run's config as JSON, for evaluation sweeps and for humans.
Saving is asynchronous; a save that is still in flight finishes before the next one starts and
before the program exits (`close`).
"""
from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

STATE, DATA, CONFIG = "state", "data", "config"


class Checkpointer:
  """Saves and restores train state + data-iterator state + config."""

  def __init__(self, workdir: str | pathlib.Path, *, max_to_keep: int | None = 3,
               save_interval_steps: int = 1000, async_save: bool = True,
               read_only: bool = False):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
        cleanup_tmp_directories=not read_only)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: grain.checkpoint.CheckpointHandler(),
                       CONFIG: ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Completed checkpoint steps, re-read from disk (another process may be writing)."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any | None,
           config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
    """Starts saving `step` (if due by the save interval, or `force`); returns whether it did."""
    items = {STATE: ocp.args.StandardSave(state),
             CONFIG: ocp.args.JsonSave(config.to_dict())}
    if data_iterator is not None:
      items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore_state(self, step: int, abstract_state: Any) -> Any:
    """Restores the train state at `step` into the shardings of `abstract_state`.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` with `.sharding` set.
    """
    restored = self._manager.restore(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)}))
    return restored[STATE]

  def restore_data_iterator(self, step: int, data_iterator: Any) -> None:
    """Sets `data_iterator` to the position it had when `step` was saved."""
    self._manager.restore(
        step, args=ocp.args.Composite(**{DATA: grain.checkpoint.CheckpointRestore(data_iterator)}))

  def restore_config(self, step: int) -> dict[str, Any]:
    restored = self._manager.restore(
        step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
    return restored[CONFIG]

  def reached_preemption(self, step: int) -> bool:
    """Multi-process preemption agreement (all processes call this every step)."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_with_shardings(shapes: Any, shardings: Any) -> Any:
  """Attaches shardings to a pytree of ShapeDtypeStructs (the restore target)."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)
