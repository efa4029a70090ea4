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
