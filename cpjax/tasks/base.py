"""The Task interface: what a system gives the one training loop.

A task owns its networks, losses and optimisers; the trainer owns devices, shardings, jit,
donation, data, checkpoints and logging. Every method below is a pure function of its
arguments, called inside `jax.jit` by the trainer; a task never mentions devices.

Batches are dicts of global arrays whose leading axis is the global batch:
  'image': uint8 [B, H, W, 3] (host-decoded crops), 'index': int32 [B] (position of each example
  in the global data stream, the source of per-example randomness).
"""
from __future__ import annotations

import abc
from typing import Any

import jax
import ml_collections

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class Task(abc.ABC):
  """Base class of a system trained by `cpjax.train.trainer`."""

  # Left-to-right order of the sample-grid columns (jit returns dicts with sorted keys).
  sample_columns: tuple[str, ...] = ()

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def init(self, key: jax.Array) -> Any:
    """Returns a fresh train state: a pytree with an int32 scalar field `step`."""

  @abc.abstractmethod
  def train_step(self, state: Any, batch: Batch, key: jax.Array) -> tuple[Any, Metrics]:
    """One optimisation step. `key` is the run's root key; returns scalar metrics with 'loss'."""

  @abc.abstractmethod
  def eval_step(self, state: Any, batch: Batch, key: jax.Array) -> Metrics:
    """Per-example metrics, each [B] float32; the trainer averages them over valid examples."""

  @abc.abstractmethod
  def samples(self, state: Any, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """Images for a sample grid: name -> [B, H, W, 3] float in [0, 1], one grid column each."""


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
