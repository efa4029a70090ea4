"""Train states: flax `TrainState`s (`cpjax.tasks.base.TrainState`) whose checkpoint tree is the
one every earlier run saved, an int32 step, and the copy-paste state's two optimisers."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from conftest import load_config
from cpjax import system
from cpjax.train import checkpointing


# The train states as the tasks defined them before they used flax's TrainState: the names of
# their fields are the orbax tree of every checkpoint saved so far.
@flax.struct.dataclass
class _FieldsState:
  step: jax.Array
  params: Any
  opt_state: Any


@flax.struct.dataclass
class _VideoFieldsState:
  step: jax.Array
  params: Any
  opt_state: Any
  vgg: Any


@flax.struct.dataclass
class _HarmonizationFieldsState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@flax.struct.dataclass
class _GanFieldsState:
  step: jax.Array
  generator: Any
  critic: Any
  generator_opt: Any
  critic_opt: Any


_CONFIGS = {"copy_paste": ("demo", _GanFieldsState), "fcn": ("fcn_demo", _FieldsState),
            "video_inpainting": ("video_demo", _VideoFieldsState),
            "harmonization": ("harmonization_demo", _HarmonizationFieldsState)}


@pytest.mark.parametrize("task", sorted(_CONFIGS))
def test_a_checkpoint_of_the_earlier_state_fields_restores(task, tmp_path):
  """A checkpoint whose train state is the earlier plain dataclass (same field names) restores
  into today's state, value for value, with an int32 step. Fields added since (the copy-paste
  generator's moving average, on in configs/demo.py) are derived from the restored ones."""
  name, fields_class = _CONFIGS[task]
  config = load_config(name, "tiny")
  built = system.System(config, jax.devices()[:1])
  state = built.init_state()
  old = fields_class(**{f: getattr(state, f) for f in fields_class.__dataclass_fields__})
  old = old.replace(step=jnp.asarray(3, jnp.int32))
  checkpointer = checkpointing.Checkpointer(tmp_path, async_save=False)
  try:
    checkpointer.save(3, old, None, config)
    restored = built.restore(checkpointer, 3)
  finally:
    checkpointer.close()
  assert type(restored) is type(state)
  assert restored.step.dtype == jnp.int32 and int(restored.step) == 3
  want = jax.tree_util.tree_leaves_with_path(jax.device_get(old))
  got = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(restored)))
  added = {path[0].name for path in got} - set(fields_class.__dataclass_fields__)
  assert added == set(built.task.derived_fields)
  assert len(want) == len([path for path in got if path[0].name not in added])
  for path, value in want:
    np.testing.assert_array_equal(got[path], value, err_msg=jax.tree_util.keystr(path))
  if task == "copy_paste":   # the average starts at the restored generator, and trains
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.generator_ema),
                 jax.device_get(old.generator))
    size = config.data.image_size
    batch = {"image": np.zeros((2, size, size, 3), np.uint8), "index": np.arange(2, dtype=np.int32)}
    trained, _ = built.jit_train_step()(restored, batch, built.root_key)
    assert int(trained.step) == 4


@pytest.mark.parametrize("task", ["fcn", "video_inpainting", "harmonization"])
def test_single_network_states_are_flax_train_states_with_an_int32_step(task):
  """`init` gives a flax TrainState (subclass) with the task's optimiser, whose step is a
  strongly typed int32 (a weakly typed one would make a resumed run compile its step again)."""
  name, _ = _CONFIGS[task]
  built = system.System(load_config(name, "tiny"), jax.devices()[:1])
  shapes = jax.eval_shape(built.task.init, jax.random.key(0))
  assert isinstance(shapes, train_state.TrainState) and shapes.tx is built.task.tx
  assert shapes.step.dtype == jnp.int32 and not shapes.step.weak_type


def test_train_state_step_is_int32_through_jit():
  """`base.TrainState.create` under jit returns a strongly typed int32 step (flax's create
  returns a weak one) that `apply_gradients` advances."""
  from cpjax.tasks.base import TrainState  # pylint: disable=import-outside-toplevel
  params = {"w": jnp.ones(3)}
  state = jax.jit(lambda p: TrainState.create(apply_fn=None, params=p, tx=optax.sgd(0.5)))(params)
  assert not state.step.weak_type
  state = jax.jit(lambda s: s.apply_gradients(grads={"w": jnp.full(3, 2.0)}))(state)
  assert int(state.step) == 1 and not state.step.weak_type
  np.testing.assert_allclose(state.params["w"], 0.0)


def test_copy_paste_step_updates_the_critic_critic_steps_times_and_the_generator_once():
  """With optim.critic_steps=2 one train step advances `step` by 1, the critic's Adam by two
  updates and the generator's by one, each network by its own optimiser."""
  config = load_config("demo", "tiny")
  config.optim.critic_steps = 2
  built = system.System(config, jax.devices()[:1])
  state = built.init_state()
  size = config.data.image_size
  batch = {"image": np.random.default_rng(0).integers(0, 256, (2, size, size, 3), np.uint8),
           "index": np.arange(2, dtype=np.int32)}
  new, metrics = jax.jit(built.task.train_step)(state, batch, built.root_key)
  assert int(new.step) == 1 and np.isfinite(float(metrics["loss"]))
  # Every update counter of an optimiser (Adam's and its learning-rate schedule's).
  counts = lambda opt: {int(c) for _, c in optax.tree_utils.tree_get_all_with_path(opt, "count")}  # noqa: E731
  assert counts(new.critic_opt) == {2} and counts(new.generator_opt) == {1}
  for network in ("generator", "critic"):
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), getattr(state, network),
                         getattr(new, network))
    assert max(jax.tree.leaves(moved)) > 0, network


def test_an_earlier_copy_paste_checkpoint_restores_without_the_average(tmp_path):
  """With optim.ema_decay 0 the state's `generator_ema` is None; a checkpoint saved before the
  field existed (no such name in it) restores into that state, value for value."""
  config = load_config("demo", "tiny")
  config.optim.ema_decay = 0.0
  built = system.System(config, jax.devices()[:1])
  state = built.init_state()
  assert state.generator_ema is None
  old = _GanFieldsState(**{f: getattr(state, f) for f in _GanFieldsState.__dataclass_fields__})
  checkpointer = checkpointing.Checkpointer(tmp_path, async_save=False)
  try:
    checkpointer.save(0, old, None, config)
    assert "generator_ema" not in checkpointer.state_metadata(0).keys()
    restored = built.restore(checkpointer, 0)
  finally:
    checkpointer.close()
  assert restored.generator_ema is None
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))


def test_restore_state_returns_an_optional_field_the_checkpoint_lacks_as_none(tmp_path):
  """`Checkpointer.restore_state(..., optional=...)`: a field with arrays in today's state that
  a checkpoint saved before it existed lacks comes back None (the rest value for value);
  without naming it optional, the checkpoint is incompatible and the message names the field."""
  config = load_config("demo", "tiny")
  assert config.optim.ema_decay > 0
  built = system.System(config, jax.devices()[:1])
  state = built.init_state()
  old = _GanFieldsState(**{f: getattr(state, f) for f in _GanFieldsState.__dataclass_fields__})
  checkpointer = checkpointing.Checkpointer(tmp_path, async_save=False)
  try:
    checkpointer.save(0, old, None, config)
    restored = checkpointer.restore_state(0, built.abstract_state, optional=("generator_ema",))
    with pytest.raises(checkpointing.IncompatibleCheckpointError, match="generator_ema"):
      checkpointer.restore_state(0, built.abstract_state)
  finally:
    checkpointer.close()
  assert restored.generator_ema is None
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
               jax.device_get(state.replace(generator_ema=None)))
