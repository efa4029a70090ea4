"""A system: the task a config names, laid out on a mesh, with fresh or restored train states.

The one code path by which the trainer, the tools, the app and the benchmarks build a system:

  system = System(config)                      # task, mesh, state shapes and shardings
  state = system.init_state()                  # fresh: Task.init, then Task.warm_start
  train_step = system.jit_train_step()         # (state, batch, key) -> (state, metrics)
  phase_step = system.jit_train_step(phase)    # the same, for a task with phases
  state = system.restore(checkpointer, step)   # a checkpoint, in this mesh's shardings
  loaded = load(path, step)                    # a training workdir or converted weights

Random initialisation draws with the non-partitionable threefry: on XLA:CPU it compiles a
model's init about 4x faster, it runs once, and its values do not depend on the device layout
in either mode. Warm starts (converted released weights, an earlier stage's run, pretrained
trunks) happen on the host and are then laid out in the state's shardings.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Callable, Hashable, Sequence

import jax
import ml_collections

from cpjax import tasks
from cpjax.train import checkpointing, partitioning

PathLike = str | pathlib.Path
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"


class System:
  """The task `config.task`, its mesh and the layout of its train state.

  Attributes:
    config: the run's config.
    task: the `cpjax.tasks.Task`.
    mesh: 1-D mesh over `devices` (all global devices by default).
    root_key: the run's root PRNG key, `jax.random.key(config.seed)`.
    state_shardings: NamedSharding per train-state leaf (replicated, or FSDP with config.fsdp).
    abstract_state: the train state's ShapeDtypeStructs with those shardings (restore target).
  """

  def __init__(self, config: ml_collections.ConfigDict,
               devices: Sequence[jax.Device] | None = None):
    self.config = config
    self.task = tasks.build(config)
    self.mesh = partitioning.make_mesh(devices)
    self.root_key = jax.random.key(config.seed)
    # `Task.init` jitted once: `init_state` calls this same function inside its sharded jit,
    # where JAX reuses the trace made here for the shapes instead of tracing `init` again
    # (HRNet18-iDIH256's scanned `init` takes about 6 s to trace). The random-bits setting is
    # the same in both places: it is part of that trace cache's key.
    self._init = jax.jit(self.task.init)
    with jax.threefry_partitionable(False):
      shapes = jax.eval_shape(self._init, self.root_key)
    self.state_shardings = partitioning.state_shardings(shapes, self.mesh,
                                                        fsdp=config.fsdp)
    self.abstract_state = checkpointing.abstract_with_shardings(shapes, self.state_shardings)

  def init_state(self) -> Any:
    """A fresh train state (`Task.init`, then `Task.warm_start`) in the state shardings.

    Raises:
      ValueError: the config lacks what the warm start needs (`Task.check_warm_start`).
    """
    self.task.check_warm_start()
    with jax.threefry_partitionable(False):
      state = jax.jit(self._init, out_shardings=self.state_shardings)(self.root_key)
    warm = self.task.warm_start(state)   # pretrained weights, an earlier stage (host side)
    return state if warm is state else jax.device_put(warm, self.state_shardings)

  def jit_train_step(self, phase: Hashable | None = None) -> Callable[..., tuple[Any, Any]]:
    """`task.train_step` jitted as training runs it: (state, batch, key) -> (state, metrics),
    the state donated and returned in the state shardings, the metrics replicated; with a
    `phase` (`Task.train_phase`), the step of that phase."""
    step = self.task.train_step
    if phase is not None:
      step = functools.partial(step, phase=phase)
    return jax.jit(step,
                   out_shardings=(self.state_shardings, partitioning.replicated(self.mesh)),
                   donate_argnums=0)

  def restore(self, checkpointer: checkpointing.Checkpointer, step: int) -> Any:
    """The train state of checkpoint `step`, in this mesh's shardings.

    A checkpoint saved without a field this config adds and the task can derive
    (`Task.derived_fields`, e.g. a run resumed with the copy-paste generator's moving average
    turned on) restores without it, and `Task.derive_state` fills it in.
    """
    state = checkpointer.restore_state(step, self.abstract_state,
                                       optional=self.task.derived_fields)
    missing = tuple(f for f in self.task.derived_fields
                    if jax.tree_util.tree_leaves(getattr(self.abstract_state, f))
                    and getattr(state, f) is None)
    if not missing:
      return state
    return jax.jit(lambda s: self.task.derive_state(s, missing),
                   out_shardings=self.state_shardings)(state)


@dataclasses.dataclass
class Loaded:
  """A trained system: `system`, its train `state`, and the checkpoint `step` it came from
  (None for converted released weights)."""
  system: System
  state: Any
  step: int | None

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.system.config

  @property
  def task(self) -> Any:
    return self.system.task


def config_file(spec: str) -> ml_collections.ConfigDict:
  """'file.py[:variant]' of the project's configs/ folder -> its config."""
  from cpjax.train import defaults  # pylint: disable=g-import-not-at-top
  name, _, variant = spec.partition(":")
  return defaults.load_sibling(str(CONFIGS_DIR / name), name[:-3]).get_config(variant)


def _train_hint(task: str | None, directory: pathlib.Path) -> str:
  demo = tasks.DEMO_CONFIGS.get(task or "", "configs/demo.py")
  return f"train one with python -m cpjax.main --config={demo} --workdir={directory}"


def load(path: PathLike, step: int | None = None, *, task: str | None = None,
         devices: Sequence[jax.Device] | None = None) -> Loaded:
  """A trained system from a training workdir or a directory of converted released weights.

  A workdir is rebuilt from the config saved in its checkpoint (not a config file), so the
  network matches the weights. Converted weights (`cpjax.tools.convert`) are built from the
  config `cpjax.convert.RUNNABLE` names for their model, with `init_from` pointing at them.

  Args:
    path: a training run's --workdir, or a converted-weights directory.
    step: the checkpoint to restore; None: the latest (ignored for converted weights).
    task: the task the caller needs (its name in `cpjax.tasks`), or None for any: another
      task is an error naming both; messages suggest this task's demo config.
    devices: the mesh's devices; default: the first local device.

  Raises:
    FileNotFoundError: no checkpoint (of that step) under the workdir.
    checkpointing.DamagedCheckpointError: the checkpoint's files cannot be read; its `intact`
      lists the steps that can.
    ValueError: converted weights of a part (not a whole system), a run of another task, or a
      saved config that lacks a setting this version reads.
  """
  from cpjax import convert  # pylint: disable=g-import-not-at-top
  from cpjax.convert import checkpoint as converted  # pylint: disable=g-import-not-at-top

  directory = pathlib.Path(path).expanduser()
  devices = jax.local_devices()[:1] if devices is None else devices
  if converted.is_converted(directory):
    model = json.loads((directory / converted.METADATA).read_text())["model"]
    if model not in convert.RUNNABLE:
      raise ValueError(
          f"{directory} holds converted {model} weights, a part of a system (they initialise "
          "training, e.g. --config.model.backbone_init=DIR); give a training workdir or "
          f"converted weights of a whole system: {', '.join(sorted(convert.RUNNABLE))}.")
    config = config_file(convert.RUNNABLE[model])
    config.init_from = str(directory.absolute())
    _check_task(config, task, directory)
    system = System(config, devices)
    return Loaded(system, system.init_state(), None)
  checkpoints = directory / "checkpoints"
  if not checkpoints.is_dir():
    raise FileNotFoundError(f"no checkpoint in {checkpoints}; {_train_hint(task, directory)}")
  checkpointer = checkpointing.Checkpointer(directory, read_only=True)
  try:
    steps = checkpointer.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {checkpoints}; {_train_hint(task, directory)}")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint of step {step} in {checkpoints}; available "
                              f"steps: {', '.join(map(str, steps))} (omit the step for the "
                              "latest).")
    try:
      config = ml_collections.ConfigDict(checkpointer.restore_config(step))
      _check_task(config, task, directory)
      system = _saved_system(config, devices, directory, step)
      return Loaded(system, system.restore(checkpointer, step), step)
    except checkpointing.DamagedCheckpointError as e:
      e.intact = checkpointer.intact_steps(exclude=[step])   # for the message (`advice`)
      raise
  finally:
    checkpointer.close()


def _saved_system(config: ml_collections.ConfigDict, devices: Sequence[jax.Device],
                  directory: pathlib.Path, step: int) -> System:
  """The System of a checkpoint's saved config. A config an earlier version saved may lack a
  setting this version reads, or hold one it no longer knows: one line naming it and the fix
  (resuming with the config file saves the current settings)."""
  try:
    return System(config, devices)
  except (AttributeError, ValueError) as e:
    if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
      problem = f"has no setting {e.args[0].args[0]}"  # ConfigDict: AttributeError(KeyError)
    elif isinstance(e, ValueError):
      problem = f"does not build ({e})"
    else:
      raise
    raise ValueError(
        f"{directory}: the config saved with step {step} {problem}; if an earlier cpjax saved "
        "it, resume the run once with its config file (python -m cpjax.main --config=CONFIG "
        f"--workdir={directory} --config.total_steps={step + 1}) to save a checkpoint with the "
        "current settings") from e


def _check_task(config: ml_collections.ConfigDict, task: str | None,
                directory: pathlib.Path) -> None:
  if task is not None and config.get("task") != task:
    raise ValueError(f"{directory} holds a {config.get('task')!r} run, but this needs a {task!r} "
                     f"one (e.g. trained with --config={tasks.DEMO_CONFIGS[task]}).")
