"""The Task interface: what a system gives the one training loop.

A task owns its networks, losses and optimisers; the trainer owns devices, shardings, jit,
donation, data, checkpoints and logging. Every method below is a pure function of its
arguments, called inside `jax.jit` by the trainer; a task never mentions devices.

Batches are dicts of global arrays whose leading axis is the global batch, with the fields
`data_pipelines.schema` lists: always 'image' uint8 [B, H, W, 3] (host-decoded crops) and
'index' int32 [B] (each example's position in the data stream, the source of its randomness);
a task that reads more declares it in `batch_needs`.
"""
from __future__ import annotations

import abc
from typing import Any, Hashable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """flax's `TrainState` (step, params, opt_state; `apply_gradients`) with an int32 step.

  `create` starts the step at an int32 zero, not flax's Python 0: jit returns that one weakly
  typed, a checkpoint restores it strongly typed, and the train step would compile once more
  after every resume. Tasks subclass it for further fields (e.g. batch_stats); the checkpoint
  tree is its pytree fields, by name. `tx` and `apply_fn` are static tree metadata: states of
  two task instances have different tree structures (compare their leaves).
  """

  @classmethod
  def create(cls, *, apply_fn: Any, params: Any, tx: optax.GradientTransformation,
             **kwargs: Any) -> TrainState:
    """A fresh state: step 0, `tx.init(params)`, and `kwargs` for a subclass's fields."""
    state = super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)
    return state.replace(step=jnp.zeros((), jnp.int32))


class Task(abc.ABC):
  """Base class of a system trained by `cpjax.train.trainer`."""

  # Left-to-right order of the sample-grid columns (jit returns dicts with sorted keys).
  sample_columns: tuple[str, ...] = ()
  # Panels of `eval/curves.png`: (title, result path, {baseline label: path}), paths
  # '/'-separated into `summarize_eval`'s result. Empty: one panel per top-level number.
  curves: tuple[tuple[str, str, dict[str, str]], ...] = ()
  # Batch fields beyond 'image' and 'index' that the steps read -> the sources that give them
  # (the trainer checks data.source and eval.source before training: `schema.require`).
  batch_needs: dict[str, str] = {}
  # Top-level train-state fields that a checkpoint may lack, filled in by `derive_state`.
  derived_fields: tuple[str, ...] = ()

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def init(self, key: jax.Array) -> Any:
    """Returns a fresh train state: a pytree with an int32 scalar field `step` (a `TrainState`
    for a task with one optimiser)."""

  def check_warm_start(self) -> None:
    """Raises ValueError (one line naming the flag and the fix) if a fresh run of this config
    lacks what `warm_start` needs, e.g. pretrained weights. Called before `init` for a new run
    only: a checkpoint of such a config still loads. Default: nothing needed."""

  def derive_state(self, state: Any, missing: tuple[str, ...]) -> Any:
    """`state` restored from a checkpoint saved without the fields `missing` (set to None in
    it), with those fields filled in from the rest: a setting added since that run, e.g. the
    copy-paste generator's moving average. Called inside `jax.jit`, only for fields in
    `derived_fields` (default: none; a checkpoint lacking a field is then an
    `IncompatibleCheckpointError`)."""
    del state
    raise NotImplementedError(f"{type(self).__name__} cannot derive {missing}")

  def warm_start(self, state: Any) -> Any:
    """Pretrained values put into a fresh train state (from `init`), on the host.

    The trainer calls it once for a new run (not when resuming) and lays the result out in the
    state's shardings. Default: the state unchanged.
    """
    return state

  @abc.abstractmethod
  def train_step(self, state: Any, batch: Batch, key: jax.Array) -> tuple[Any, Metrics]:
    """One optimisation step. `key` is the run's root key; returns scalar metrics with 'loss'.

    A task whose step changes during a run (`train_phase`) also takes a static keyword
    `phase`."""

  def train_phase(self, step: int) -> Hashable | None:
    """The phase (a hashable static value) of the update after `step` updates, for a task
    whose train step changes during a run (the copy-paste task's curriculum: low-resolution
    or reconstruction-only first steps): the trainer compiles `train_step(..., phase=p)` once
    per phase and runs each step's. None (the default): `train_step(state, batch, key)`, one
    program for the whole run."""
    del step
    return None

  @abc.abstractmethod
  def eval_step(self, state: Any, batch: Batch, key: jax.Array) -> Metrics:
    """Per-example metrics [B, ...] float32 (trailing axes allowed, e.g. a confusion matrix).

    The trainer sums each over the valid examples of the whole evaluation set (every batch,
    every host) and hands the sums to `summarize_eval`.
    """

  def baseline_step(self, batch: Batch, key: jax.Array) -> Metrics:
    """Per-example metrics of the classical baselines, as `eval_step`'s: they do not depend on
    the train state, so the trainer computes them once per evaluation set and process and adds
    their sums to every evaluation's. Names must differ from `eval_step`'s. Default: none."""
    del batch, key
    return {}

  def summarize_eval(self, sums: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """Evaluation results from the summed per-example metrics of the whole evaluation set.

    Args:
      sums: metric name -> float64 array of shape [...] (the per-example shape), summed over
        the `count` valid examples.
      count: number of valid examples (> 0).

    Returns:
      A JSON-like dict (numbers, lists, nested dicts) written to the eval JSON; every number in
      it is also logged to TensorBoard. Default: the mean of each scalar metric.
    """
    return {name: float(total) / count for name, total in sums.items() if np.ndim(total) == 0}

  @abc.abstractmethod
  def samples(self, state: Any, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """Images for a sample grid: name -> [B, H, W, 3] float in [0, 1], one grid column each."""


def step_decay_schedule(o: ml_collections.ConfigDict, mult: float = 1.0) -> optax.Schedule:
  """Learning rate o.lr x mult, multiplied by o.decay at each step in o.milestones (a
  piecewise-constant schedule; no milestones: constant)."""
  return optax.piecewise_constant_schedule(
      o.lr * mult, {int(m): float(o.decay) for m in o.milestones})


def with_warmup(schedule: optax.Schedule, o: ml_collections.ConfigDict) -> optax.Schedule:
  """`schedule` x min(1, (s + 1) / o.warmup_steps) at step s: a linear warm-up that leaves the
  schedule's own steps in place. o.warmup_steps 0 or absent (configs saved before it existed):
  `schedule` itself.

  Raises:
    ValueError: a negative o.warmup_steps.
  """
  warmup = int(o.get("warmup_steps", 0))
  if warmup < 0:
    raise ValueError(f"--config.optim.warmup_steps={warmup}; give 0 (no warm-up) or more.")
  if not warmup:
    return schedule
  return lambda step: schedule(step) * jnp.minimum(1.0, (step + 1) / warmup)


def example_keys(key: jax.Array, step: jax.Array, index: jax.Array) -> jax.Array:
  """Per-example keys fold_in(fold_in(key, step), index): independent of the device layout.

  Args:
    key: the root key (typed PRNG key).
    step: int scalar, the train step (or a fixed salt for evaluation).
    index: int32 [B], global stream position of each example.

  Returns:
    [B] keys.
  """
  step_key = jax.random.fold_in(key, step)
  return jax.vmap(lambda i: jax.random.fold_in(step_key, i))(index)
