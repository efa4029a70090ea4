"""The copy-paste task's evaluation baselines and optimisers."""
from __future__ import annotations

import jax
import numpy as np

from cpjax import system
from cpjax.tasks.copy_paste import CopyPasteTask, poisson_blend


def test_poisson_baseline_removes_a_constant_shift():
  """Poisson cloning of I + c (inside M) into I gives back I: the gradients are I's and the
  boundary is I's, so a batch of shifted pastes is undone exactly (vmapped, under jit)."""
  r = np.random.default_rng(0)
  image = r.uniform(0.2, 0.8, (3, 24, 20, 3)).astype(np.float32)
  mask = np.zeros((3, 24, 20, 1), np.float32)
  mask[0, 4:12, 5:15] = 1
  mask[1, 10:20, 2:9] = 1
  mask[2, 3:21, 8:17] = 1
  shift = np.array([0.1, -0.15, 0.05], np.float32)[:, None, None, None]
  source = image + shift
  ex = {"image": image, "source": source, "mask": mask}
  out = np.asarray(jax.jit(poisson_blend)(ex))
  assert out.shape == image.shape
  np.testing.assert_allclose(out, image, atol=2e-3)
  # The plain cut-and-paste composite is off by the shift inside the mask.
  composite = source * mask + image * (1 - mask)
  assert np.abs(composite - image).max() > 0.09


def test_both_networks_learning_rates_drop_at_the_milestones():
  """Adam under a constant gradient moves each parameter by the learning rate per update: lr
  before optim.milestones[0], lr x decay from there on, for the generator and the critic."""
  config = system.config_file("demo.py:tiny")
  config.optim.lr, config.optim.decay, config.optim.milestones = 1e-3, 0.1, (2,)
  task = CopyPasteTask(config)
  params = {"w": np.zeros((3,), np.float32)}
  grads = {"w": np.ones((3,), np.float32)}
  for tx in (task.generator_tx, task.critic_tx):
    opt_state = tx.init(params)
    steps = []
    for _ in range(4):
      updates, opt_state = tx.update(grads, opt_state, params)
      steps.append(float(np.abs(updates["w"]).max()))
    np.testing.assert_allclose(steps, [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-4)


def _batch(config, seed: int = 0) -> dict[str, np.ndarray]:
  size = config.data.image_size
  return {"image": np.random.default_rng(seed).integers(0, 256, (2, size, size, 3), np.uint8),
          "index": np.arange(2, dtype=np.int32)}


def test_the_moving_average_follows_the_generator_with_a_warm_up_decay():
  """With optim.ema_decay 0.6, after each train step (the donating jitted one) the average is
  d E + (1 - d) G of the step's new generator weights G, d = min(0.6, (1 + t) / (10 + t)) at
  update t = 0, 1, 2 (0.1, 0.18, 0.25, then 0.6 from t = 5), computed here in NumPy from the
  generator weights each step returns."""
  config = system.config_file("demo.py:tiny")
  config.optim.ema_decay = 0.6
  built = system.System(config, jax.devices()[:1])
  step = built.jit_train_step()
  state = built.init_state()
  want = jax.device_get(state.generator)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.generator_ema), want)
  for t in range(6):
    state, _ = step(state, _batch(config, t), built.root_key)
    d = min(0.6, (1 + t) / (10 + t))
    want = jax.tree.map(lambda e, g: d * e + (1 - d) * g, want, jax.device_get(state.generator))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 jax.device_get(state.generator_ema), want)
  gap = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), jax.device_get(state.generator),
                     jax.device_get(state.generator_ema))
  assert max(jax.tree.leaves(gap)) > 1e-5   # an average, not a copy


def test_without_ema_decay_the_state_keeps_no_average_and_evaluation_runs_the_generator():
  """optim.ema_decay 0 (configs/faces.py, the paper): no average in the state (no leaves), and
  `inference_generator` is the trained weights."""
  config = system.config_file("faces.py:tiny")
  assert config.optim.ema_decay == 0.0
  task = CopyPasteTask(config)
  state = jax.eval_shape(task.init, jax.random.key(0))
  assert state.generator_ema is None
  assert task.inference_generator(state) is state.generator


def test_evaluation_and_samples_run_the_moving_average():
  """eval_step and samples of a state equal those of the state whose generator weights are
  its average; with the trained weights they differ (the average is what is evaluated)."""
  config = system.config_file("demo.py:tiny")
  built = system.System(config, jax.devices()[:1])
  task, key = built.task, built.root_key
  state = built.init_state()
  step = built.jit_train_step()
  for t in range(3):
    state, _ = step(state, _batch(config, t), key)
  batch = _batch(config, 9)
  swapped = state.replace(generator=state.generator_ema)
  trained = state.replace(generator_ema=state.generator)
  for fn in (task.eval_step, task.samples):
    got, same, other = (jax.device_get(jax.jit(fn)(s, batch, key))
                        for s in (state, swapped, trained))
    jax.tree.map(np.testing.assert_array_equal, got, same)
    assert max(float(np.max(np.abs(a - b))) for a, b in
               zip(jax.tree.leaves(got), jax.tree.leaves(other))) > 1e-6
