"""Smart copy-paste's training step (critic update with the WGAN-GP loss and drift term, then
generator update with L1 + adversarial loss) against the paper's formulas written in PyTorch
(`torch_copy_paste`; no reference code exists): the same losses, gradients and parameters.

Setting: configs/faces.py:tiny (32 px, the tiny generator and global + local critic; alpha
1e-4, gamma 1e-3, lambda 10; Adam lr 2e-4, betas (0, 0.9), one critic step), random weights
(noise-layer weights too, so the noise reaches the output), two steps on batches of 3 photo
crops. The copy-paste problems (mask, T(I)) are cpjax's (`problems`, a function of the key),
fed to both sides; the noise images, the gradient penalty's interpolation coefficients and the
gradients are recorded inside cpjax's jitted step and replayed or compared in PyTorch.
"""
from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config, numpy_params
from cpjax.layers import NoiseInjection
from cpjax.models.critic import Critic
from cpjax.tasks import copy_paste

torch = pytest.importorskip("torch", reason="the reference step runs in PyTorch: "
                            "pip install -e '.[torch]'")
from train_parity import torch_copy_paste as tc  # noqa: E402  (after the torch check)
from train_parity import torch_train as tt  # noqa: E402

STEPS, BATCH = 2, 3


def _batches(size: int) -> list[dict[str, np.ndarray]]:
  """Bundled photos (`torch_train.photos`) with their global stream indices."""
  return [{"image": tt.photos(BATCH, size, step * BATCH),
           "index": np.arange(BATCH, dtype=np.int32) + step * BATCH} for step in range(STEPS)]


def _recording(recorder: tt.Recorder, name: str) -> optax.GradientTransformation:
  """An optimiser stage that records the gradients it is given and passes them on."""
  def update(updates, state, params=None):
    del params
    recorder.record(updates, name)
    return updates, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@contextlib.contextmanager
def _record_draws(recorder: tt.Recorder):
  """Inside: every noise layer records the noise it adds (w * n, with its weight w) under its
  decoder level's name; every critic call records the image it scores under 'critic'."""

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(module, NoiseInjection) and not kwargs.get("deterministic", False):
      added = next_fun(jnp.zeros_like(args[0]), **kwargs)   # the module's own draw, times w
      recorder.record((added, module.get_variable("params", "weight")), module.scope.path[-3])
      return args[0] + added
    if isinstance(module, Critic):
      recorder.record(args[0], "critic")
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield


def _noise(draw) -> np.ndarray:
  """A recorded (w * n [B, h, w, C], w [C]) -> the noise image n [B, h, w, 1]."""
  added, weight = draw
  c = int(np.argmax(np.abs(weight)))
  return added[..., c:c + 1] / weight[c]


@pytest.fixture(scope="module")
def runs():
  """cpjax's and the PyTorch steps: per step the metrics and gradients of both, the final
  parameters of both, the initial ones, and the interpolation checks."""
  config = load_config("faces", "tiny")
  task = copy_paste.CopyPasteTask(config)
  recorder = tt.Recorder()
  task.critic_tx = optax.chain(_recording(recorder, "critic_grads"), task.critic_tx)
  task.generator_tx = optax.chain(_recording(recorder, "generator_grads"), task.generator_tx)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  g0, c0 = numpy_params(shapes.generator, seed=1), numpy_params(shapes.critic, seed=2)
  state = copy_paste.GanState(step=jnp.zeros((), jnp.int32), generator=g0, critic=c0,
                              generator_opt=task.generator_tx.init(g0),
                              critic_opt=task.critic_tx.init(c0))
  batches = _batches(config.data.image_size)
  key = jax.random.key(3)
  with _record_draws(recorder):
    step = jax.jit(task.train_step).lower(state, batches[0], key).compile()
  problems = jax.jit(task.problems)
  ours, examples = [], []
  for k, batch in enumerate(batches):
    examples.append(jax.tree.map(np.array, problems(batch, key, jnp.int32(k))))
    state, metrics = step(state, batch, key)
    ours.append({name: float(v) for name, v in metrics.items()})

  # The traced sites: critic calls real, fake, interpolates (critic update), Y (generator
  # update); the noise layers of the one generator pass, whose result is both the critic's
  # fake and the generator loss's Y (the formulas below run the generator twice, on the same
  # noise).
  assert recorder.names.count("critic") == 4
  critic_inputs = recorder.named("critic")
  m, loss_cfg, o = config.model, config.loss, config.optim
  g, c = tc.tensors(g0), tc.tensors(c0)
  g_opt = torch.optim.Adam(tc.leaves(g), lr=o.lr, betas=(o.b1, o.b2), eps=1e-8)
  c_opt = torch.optim.Adam(tc.leaves(c), lr=o.lr, betas=(o.b1, o.b2), eps=1e-8)
  theirs, interpolation_residuals = [], []
  for k, ex in enumerate(examples):
    x, image, source = (tt.nchw(ex[n]) for n in ("input", "image", "source"))
    mask_np = ex["mask"]
    mask = tt.nchw(mask_np)

    def noise(name, k=k):
      (draws,) = recorder.named(name)
      return tt.nchw(_noise(draws[k]))

    def result(params):
      residual = tc.generator(params, x, noise, tuple(m.dilations))
      return (residual + source) * mask + image * (1 - mask)

    def score(params, y):
      return tc.critic(params, y, x, mask_np, m.critic_local_size)

    with tt.one_thread():
      fake = result(g).detach()
      # The interpolation coefficients: cpjax's interpolates = eps real + (1 - eps) fake.
      real_np, fake_np, mixed = (critic_inputs[i][k] for i in range(3))
      np.testing.assert_array_equal(real_np, ex["image"])
      diff = (real_np - fake_np).reshape(BATCH, -1)
      eps = np.sum((mixed - fake_np).reshape(BATCH, -1) * diff, 1) / np.sum(diff * diff, 1)
      interpolation_residuals.append(
          (eps, np.max(np.abs(mixed - fake_np - eps[:, None, None, None] * (real_np - fake_np)))))
      d_real, d_fake = score(c, image), score(c, fake)
      gp = tc.gradient_penalty(lambda z: score(c, z), image, fake, torch.tensor(eps).float())
      d_loss = tc.critic_loss(d_real, d_fake, gp, loss_cfg.gp_lambda, loss_cfg.gamma)
      c_opt.zero_grad()
      d_loss.backward()
      c_opt.step()
      y = result(g)
      d_y = score(c, y)
      g_loss, rec = tc.generator_loss(y, image, d_y, loss_cfg.alpha)
      g_opt.zero_grad()
      grads = torch.autograd.grad(g_loss, tc.leaves(g))
      for p, grad in zip(tc.leaves(g), grads):
        p.grad = grad
      g_opt.step()
    theirs.append({"critic_loss": d_loss.item(), "gradient_penalty": gp.item(),
                   "wasserstein": (d_real.mean() - d_fake.mean()).item(),
                   "score_scale": (d_real.abs().mean() + d_fake.abs().mean()).item(),
                   "drift": loss_cfg.gamma * (d_real ** 2).mean().item(),
                   "l1": rec.item(), "generator_adversarial": -d_y.mean().item(),
                   "loss": g_loss.item(),
                   "critic_grads": tc.arrays(c, grads=True),
                   "generator_grads": tc.arrays(g, grads=True)})
  return {"ours": ours, "theirs": theirs, "initial": (g0, c0),
          "final": (state.generator, state.critic), "reference": (tc.arrays(g), tc.arrays(c)),
          "recorder": recorder, "interpolation": interpolation_residuals}


def test_losses_match_the_paper_at_every_step(runs):
  """cpjax's metrics equal the formulas' values at every step: critic loss, gradient penalty,
  L_rec, -E[D(Y)] and the generator loss within 1e-5 (measured 2e-7); the Wasserstein
  estimate E[D(I)] - E[D(Y)], a difference of two means of scores ~0.5 that nearly cancel,
  within 1e-5 of those scores' size (measured 4e-7)."""
  for ours, theirs in zip(runs["ours"], runs["theirs"]):
    for name in ("critic_loss", "gradient_penalty", "l1", "generator_adversarial", "loss"):
      np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, err_msg=name)
    assert abs(ours["wasserstein"] - theirs["wasserstein"]) < 1e-5 * theirs["score_scale"]


def test_critic_loss_has_the_drift_term(runs):
  """The critic loss minus its Wasserstein and penalty parts (cpjax's own metrics) is
  gamma E[D(I)^2] (ProGAN's drift, eq. 7's last term) within 2% (it is 2e-4 of a loss of ~8,
  so float32 rounding of the loss leaves ~0.3%)."""
  gp_lambda = load_config("faces", "tiny").loss.gp_lambda
  for ours, theirs in zip(runs["ours"], runs["theirs"]):
    drift = ours["critic_loss"] + ours["wasserstein"] - gp_lambda * ours["gradient_penalty"]
    np.testing.assert_allclose(drift, theirs["drift"], rtol=2e-2)


def test_gradient_penalty_is_taken_at_interpolates(runs):
  """The critic's input inside the penalty is eps I + (1 - eps) Y for one eps in (0, 1) per
  example (residual < 1e-5; measured 2e-7 of values in [0, 1]), a different eps for each."""
  for eps, residual in runs["interpolation"]:
    assert residual < 1e-5
    assert np.all((eps > 0) & (eps < 1)) and len(set(np.round(eps, 4))) == BATCH


def test_gradients_match_at_every_step(runs):
  """The gradients cpjax's optimisers receive (recorded in the jitted step) equal the
  formulas' PyTorch gradients, critic (through the penalty's second derivatives) and
  generator (through the updated critic): per leaf max error < 1e-4 of the leaf's largest
  gradient (measured 7e-6)."""
  recorder = runs["recorder"]
  for name in ("critic_grads", "generator_grads"):
    (slot,) = recorder.named(name)
    assert len(slot) == STEPS
    for ours, theirs in zip(slot, (t[name] for t in runs["theirs"])):
      a, b = tt.flat(ours), tt.flat(theirs)
      assert sorted(a) == sorted(b)
      bad = {p: float(np.max(np.abs(a[p] - b[p])) / np.max(np.abs(b[p]))) for p in b
             if np.max(np.abs(a[p] - b[p])) > 1e-4 * np.max(np.abs(b[p]))}
      assert not bad, name


def test_parameters_match_after_the_steps(runs):
  """Both networks after the steps: every leaf's move within 2e-3 of the reference's
  (measured 1.5e-4; Adam with beta1 = 0 is sign(g) at the first step and g / rms(g) after,
  so elements with near-zero gradients differ most) and the same move size within 1e-3."""
  for ours, theirs, initial in zip(runs["final"], runs["reference"], runs["initial"]):
    errors = tt.move_errors(ours, theirs, initial)
    bad = {p: e for p, e in errors.items() if e[0] > 2e-3 or abs(e[1] - 1) > 1e-3}
    assert not bad
