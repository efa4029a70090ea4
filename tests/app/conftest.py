"""Systems for the app's tests: one tiny trained harmonisation run, random-weight checkpoints."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from cpjax import tasks
from cpjax.app import models
from cpjax.train import checkpointing, trainer


def random_checkpoint(config, workdir) -> str:
  """A step-1 checkpoint of `config`'s system with random weights, drawn with NumPy (no XLA
  compilation): kernels ~ N(0, 1 / fan_in), norm scales and variances 1, everything else 0."""
  task = tasks.build(config)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    name = str(getattr(path[-1], "key", getattr(path[-1], "name", "")))
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return jnp.zeros(leaf.shape, leaf.dtype)
    if name == "kernel":
      fan_in = max(1, int(np.prod(leaf.shape[:-1])))
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

  state = jax.tree_util.tree_map_with_path(fill, shapes)
  checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
  checkpointer.save(1, state, None, config)
  checkpointer.close()
  return str(workdir)


@pytest.fixture(scope="session")
def harmonize_model(tmp_path_factory) -> models.Model:
  """`configs/harmonization_demo.py:tiny` trained for one step (iDIH at 32 px)."""
  config = load_config("harmonization_demo", "tiny")
  config.total_steps, config.checkpoint.async_save = 1, False
  workdir = tmp_path_factory.mktemp("app_harmonize")
  trainer.train(config, workdir, devices=jax.devices()[:1])
  return models.load("harmonize", str(workdir))


@pytest.fixture(scope="session")
def copy_paste_model(tmp_path_factory) -> models.Model:
  """`configs/demo.py:tiny` with random weights."""
  workdir = tmp_path_factory.mktemp("app_copy_paste")
  return models.load("copy_paste", random_checkpoint(load_config("demo", "tiny"), workdir))
