"""The copy-paste task: evaluation baselines, optimisers, weight average, curriculum phases."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from cpjax import losses, system
from cpjax.tasks import copy_paste
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


def _curriculum_config(low_res_steps: int, factor: int = 2, reconstruction_steps: int = 0):
  config = system.config_file("demo.py:tiny")
  config.curriculum.low_res_steps, config.curriculum.low_res_factor = low_res_steps, factor
  config.curriculum.reconstruction_steps = reconstruction_steps
  return config


def test_the_phase_gives_the_size_and_the_adversarial_switch_of_each_step():
  """train_phase(step) of the update after `step` updates: the factor for steps 0 .. N - 1, then
  1; reconstruction only for steps 0 .. R - 1; None (one program) without a curriculum
  (configs/faces.py, the paper)."""
  task = CopyPasteTask(_curriculum_config(3, factor=4, reconstruction_steps=2))
  assert [tuple(task.train_phase(s)) for s in range(5)] == [
      (4, False), (4, False), (4, True), (1, True), (1, True)]
  task = CopyPasteTask(_curriculum_config(0, reconstruction_steps=1))
  assert [tuple(task.train_phase(s)) for s in range(2)] == [(1, False), (1, True)]
  assert CopyPasteTask(system.config_file("faces.py:tiny")).train_phase(0) is None


def test_low_resolution_problems_pool_the_crops_and_divide_the_offset():
  """The problems of the phase: the crops average-pooled 2 x 2 (NumPy, independently), a binary
  mask at the pooled size, the composite and the input built from them, and T's sigma halved."""
  config = _curriculum_config(2)
  task = CopyPasteTask(config)
  assert task.low_res_transform == dataclasses.replace(task.transform,
                                                       sigma=task.transform.sigma / 2)
  batch = _batch(config, 3)
  ex = jax.device_get(jax.jit(task.problems, static_argnums=3)(
      batch, jax.random.key(0), np.int32(0), 2))
  size = config.data.image_size
  images = batch["image"].astype(np.float64) / 255.0
  pooled = images.reshape(2, size // 2, 2, size // 2, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(ex["image"], pooled, atol=1e-6)
  assert ex["mask"].shape == (2, size // 2, size // 2, 1)
  assert set(np.unique(ex["mask"])) == {0.0, 1.0}
  np.testing.assert_allclose(ex["composite"],
                             ex["image"] * (1 - ex["mask"]) + ex["source"] * ex["mask"], atol=1e-6)
  np.testing.assert_array_equal(ex["input"][..., 3:], ex["mask"])


def test_a_reconstruction_step_is_adam_on_the_l1_loss_alone_and_leaves_the_critic():
  """A step of the reconstruction-only phase: the critic and its Adam state stay as they were,
  and the generator moves by one Adam update of the gradient of L1(Y, I) alone, computed here
  from the task's problems and results with optax (not through the step); the metrics are the
  L1 loss only. The adversarial step of the same state changes the critic, and its generator
  differs from that update by over 0.1 lr (its adversarial gradient, small against L1's,
  decides the sign of Adam's first update lr g / (|g| + eps) wherever L1's is near zero).
  Tolerance 0.01 lr: the same first update turns float rounding of the two programs' gradients
  into parts of lr where |g| is within a few eps (the step and this update differ by 2.2e-6 =
  0.002 lr at most, measured; the adversarial step by 2e-3)."""
  config = _curriculum_config(0, reconstruction_steps=1)
  built = system.System(config, jax.devices()[:1])
  task, key = built.task, built.root_key
  batch = _batch(config, 5)
  state = jax.device_get(built.init_state())

  def expected(state):
    ex = task.problems(batch, key, state.step)
    noise_key = jax.random.fold_in(jax.random.fold_in(key, state.step), copy_paste._NOISE)
    loss, grads = jax.value_and_grad(
        lambda p: losses.l1(task.generate(p, ex, noise_key), ex["image"]))(state.generator)
    updates, _ = task.generator_tx.update(grads, state.generator_opt, state.generator)
    return loss, optax.apply_updates(state.generator, updates)

  loss, generator = jax.device_get(jax.jit(expected)(state))
  after, logged = jax.device_get(built.jit_train_step(task.train_phase(0))(state, batch, key))
  assert set(logged) == {"loss", "l1"}
  np.testing.assert_allclose(logged["loss"], loss, rtol=1e-6)
  lr = config.optim.lr
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=0.01 * lr),
               after.generator, generator)
  jax.tree.map(np.testing.assert_array_equal, (after.critic, after.critic_opt),
               (state.critic, state.critic_opt))
  adversarial, logged = jax.device_get(
      built.jit_train_step(task.train_phase(1))(state, batch, key))
  assert {"critic_loss", "gradient_penalty", "generator_adversarial"} <= set(logged)
  moved = lambda a, b: max(float(np.max(np.abs(x - y)))
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert moved(adversarial.critic, state.critic) > 0.1 * lr
  assert moved(adversarial.generator, generator) > 0.1 * lr


def test_a_step_of_a_config_with_a_curriculum_needs_its_phase():
  """Without `phase` the step cannot know which phase it is in: the error names the fix, where
  a silent full-size adversarial step would train another recipe. The phases differ: the same
  state and batch give other metrics at 1/2 size than at full size."""
  config = _curriculum_config(1)
  built = system.System(config, jax.devices()[:1])
  task, key = built.task, built.root_key
  batch = _batch(config, 5)
  with pytest.raises(ValueError, match=r"has a curriculum .*pass phase=task.train_phase\(step\)"):
    built.jit_train_step()(built.init_state(), batch, key)
  results = [jax.device_get(built.jit_train_step(task.train_phase(step))(
      built.init_state(), batch, key))[1] for step in (0, 1)]
  assert results[0]["image_scale"] == 0.5 and results[1]["image_scale"] == 1.0
  assert abs(float(results[0]["l1"]) - float(results[1]["l1"])) > 1e-6


def test_a_low_resolution_factor_the_generator_cannot_take_is_named():
  """The pooled crops must be a size the generator halves level by level: 32 px with 3 levels
  takes factors 2 and 4 but not 3 (the error names the sizes and the fix), and a factor below 2
  is no phase at all."""
  for factor in (2, 4):
    CopyPasteTask(_curriculum_config(2, factor))
  with pytest.raises(ValueError, match=r"image_size=32 with curriculum.low_res_factor=3: .*"
                                       r"multiples of 24"):
    CopyPasteTask(_curriculum_config(2, 3))
  with pytest.raises(ValueError, match=r"low_res_factor=1: .*use 2 or more"):
    CopyPasteTask(_curriculum_config(2, 1))
