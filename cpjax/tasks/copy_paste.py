"""Smart, deep copy-paste (paper section 3): generator + conditional WGAN-GP critic.

One train step, on the sharded global batch:
  1. per-example keys -> on-device transform T and random mask M (`cpjax.ops.transform`):
     X = (I (1 - M) + T(I) M, M);
  2. `critic_steps` critic updates (default 1, on the same batch, fresh GP interpolates each):
     L_D = E[D(Y)] - E[D(I)] + lambda GP + gamma E[D(I)^2]   (eq. 5 and the drift term of eq. 7);
  3. one generator update: L_G = L1(Y, I) - alpha E[D(Y)], with Y = (G(X) + T(I)) M + I (1 - M),
     the same Y as the critic's fake in step 2 (one generator pass per step), and D the updated
     critic.
Eq. 7 writes the objective as L = L_rec + alpha L_WGAN-GP + gamma E[D(I)^2]; as in every WGAN-GP
implementation the generator takes the E[D(Y)] part with the sign that raises the critic's score,
and the critic minimises the rest (the authors' public GAN code does the same). Both networks
use Adam (lr, b1, b2), the learning rate x `decay` at each step in `optim.milestones` (the
paper: none, a constant rate). The settings and their paper values are in configs/faces.py.

With `curriculum.low_res_steps` = N > 0 the first N generator updates train at 1 / f of the
image size (f = `curriculum.low_res_factor`): the batch's crops are average-pooled f x f on
device, T's homography offset sigma is divided by f, and the mask keeps its size as a fraction
of the image, so each step poses the same problem as at full size, at a resolution where the
generator costs about 1 / f^2 as much. The critic keeps one set of parameters for the whole run
(its dense layers' input depends on the image size): in this phase it scores the images, the
generator's input and the mask repeated f x f back to full size. Which phase a step is in
depends only on its step number (`train_phase`), so a run resumes in its phase; the trainer
compiles one step per phase. The paper has no such phase; it is a curriculum for short runs
(configs/demo.py), after the progressive resizing of fast.ai's ImageNet training (DAWNBench,
2018) and the lower training resolution of Touvron et al. (2019): the network learns to take
the colours from the context at low resolution, where steps are cheap, then the detail at full
size. Evaluation is always at full size.

With `curriculum.reconstruction_steps` = N > 0 the first N steps update the generator alone,
with the reconstruction loss L1(Y, I) alone: no critic update and no adversarial term (the
critic starts to train at step N, from its initial weights). This is the first of the three
training phases of Iizuka et al. (2017), whose global + local discriminator the critic follows:
the completion network first trains on its reconstruction loss only. With the paper's alpha =
1e-4 the adversarial term's gradient is a small part of the generator's while the critic is
young (at 128 px, 0.3 % of L1's at initialisation, 6 % after a demo run of 8400 steps),
and the critic's update (with the gradient penalty's double backward pass) is most of the cost
of a low-resolution step, since the critic always runs at full size. The demo ends its 64 px
phase with it.

With `optim.ema_decay` > 0 the state also keeps an exponential moving average of the
generator's parameters, and evaluation, samples and the tools use it (`inference_generator`).
The paper keeps none; the progressive GAN of Karras et al. (2018), from which eq. 7 takes its
drift term, evaluates such an average at decay 0.999. It is updated after every generator update
with the decay min(ema_decay, (1 + t) / (10 + t)) at update t = 0, 1, ... (TensorFlow's
`ExponentialMovingAverage` with `num_updates`), so the random initial weights fade out in the
first steps instead of keeping the weight ema_decay**t at step t.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from cpjax import losses, metrics
from cpjax.models.copy_paste import CopyPasteGenerator
from cpjax.models.critic import Critic
from cpjax.ops import poisson
from cpjax.ops.transform import TransformConfig, make_copy_paste_example
from cpjax.tasks.base import (Batch, Metrics, Task, TrainState, example_keys,
                              step_decay_schedule)
from data_pipelines import image_ops

_NOISE, _GP = 1, 2  # salts for batch-level keys (generator noise images, GP interpolation)


@flax.struct.dataclass
class GanState:
  """Generator and critic parameters, each with its own optimiser state; `step` counts generator
  updates. Two `TrainState`s would nest these fields (generator/params, ...): these names are
  the checkpoint tree of every copy-paste run, so `apply_gradients` updates one network through
  a `TrainState` view of its two fields instead. `generator_ema` is the moving average of
  `generator` (the same tree) with optim.ema_decay > 0, else None: no leaves, so the
  checkpoint tree is that of the runs saved before it existed."""
  step: jax.Array
  generator: Any
  critic: Any
  generator_opt: optax.OptState
  critic_opt: optax.OptState
  generator_ema: Any = None

  def apply_gradients(self, network: str, grads: Any,
                      tx: optax.GradientTransformation) -> GanState:
    """The state after one `tx` update of `network` ('generator' or 'critic') by `grads`
    (`TrainState.apply_gradients`); `step` unchanged."""
    opt = f"{network}_opt"
    view = TrainState(step=self.step, apply_fn=None, params=getattr(self, network), tx=tx,
                      opt_state=getattr(self, opt)).apply_gradients(grads=grads)
    return self.replace(**{network: view.params, opt: view.opt_state})


class TrainPhase(NamedTuple):
  """What a train step does (`CopyPasteTask.train_phase`): the image-size divisor of its
  problems (1: full size) and whether it trains adversarially (critic update + adversarial term).
  """
  factor: int
  adversarial: bool


FULL_PHASE = TrainPhase(factor=1, adversarial=True)   # the paper's step


class CopyPasteTask(Task):
  """The copy-paste system as a task of the shared training loop."""

  sample_columns = ("original", "cut_paste", "mask", "poisson", "result")
  derived_fields = ("generator_ema",)
  curves = tuple((title, key, {"cut-and-paste": f"cut_paste_{key}", "Poisson": f"poisson_{key}"})
                 for title, key in (("PSNR (dB)", "psnr"), ("SSIM", "ssim"), ("L1", "l1")))

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    dtype = jnp.dtype(m.dtype)
    self.generator = CopyPasteGenerator(widths=tuple(m.generator_widths),
                                        dilations=tuple(m.dilations),
                                        noise=m.noise, dtype=dtype)
    self.critic = Critic(global_widths=tuple(m.critic_global_widths),
                         local_widths=tuple(m.critic_local_widths),
                         local_size=m.critic_local_size, dense_width=m.critic_dense, dtype=dtype)
    self.transform = TransformConfig.from_dict(config.transform)
    o = config.optim
    # Without milestones a plain rate: the optimiser state of runs saved before milestones.
    lr = step_decay_schedule(o) if o.milestones else o.lr
    self.generator_tx = optax.adam(lr, b1=o.b1, b2=o.b2)
    self.critic_tx = optax.adam(lr, b1=o.b1, b2=o.b2)
    # A config saved before the average existed has no ema_decay: no average.
    self.ema_decay = float(o.get("ema_decay", 0.0))
    # Nor one saved before the curriculum: no low-resolution phase.
    curriculum = config.get("curriculum") or {}
    self.low_res_steps = int(curriculum.get("low_res_steps", 0))
    self.low_res_factor = int(curriculum.get("low_res_factor", 2))
    self.reconstruction_steps = int(curriculum.get("reconstruction_steps", 0))
    if self.low_res_steps > 0:
      self._check_low_res(config)
    self.low_res_transform = dataclasses.replace(
        self.transform, sigma=self.transform.sigma / max(self.low_res_factor, 1))

  def _check_low_res(self, config: ml_collections.ConfigDict) -> None:
    """The low-resolution phase needs crops that pool to a size the generator takes."""
    f = self.low_res_factor
    if f < 2:
      raise ValueError(f"curriculum.low_res_factor={f}: the low-resolution phase divides the "
                       "image size by this integer; use 2 or more, or curriculum.low_res_steps=0 "
                       "for no such phase.")
    # The generator halves the image once per level after its stem.
    levels = len(config.model.generator_widths) - 1
    multiple = f * 2 ** levels
    h, w = image_ops.pair(config.data.image_size)
    if h % multiple or w % multiple:
      raise ValueError(f"data.image_size={config.data.image_size} with "
                       f"curriculum.low_res_factor={f}: both sides must be multiples of {multiple} "
                       f"(the factor times the generator's down-sampling, 2^{levels}); choose "
                       "such a size or factor, or set curriculum.low_res_steps=0.")

  def init(self, key: jax.Array) -> GanState:
    h, w = image_ops.pair(self.config.data.image_size)
    g_key, noise_key, d_key = jax.random.split(key, 3)
    x = jnp.zeros((1, h, w, 4), jnp.float32)
    g_params = self.generator.init({"params": g_key, "noise": noise_key}, x)["params"]
    d_params = self.critic.init(d_key, jnp.zeros((1, h, w, 3)), x, jnp.ones((1, h, w, 1)))["params"]
    # A copy: the average and the weights are separate buffers of the donated state.
    ema = jax.tree.map(jnp.copy, g_params) if self.ema_decay > 0 else None
    return GanState(step=jnp.zeros((), jnp.int32), generator=g_params, critic=d_params,
                    generator_opt=self.generator_tx.init(g_params),
                    critic_opt=self.critic_tx.init(d_params), generator_ema=ema)

  def derive_state(self, state: GanState, missing: tuple[str, ...]) -> GanState:
    """A run saved without the moving average resumes with it started at its generator."""
    assert missing == ("generator_ema",), missing
    return state.replace(generator_ema=jax.tree.map(jnp.copy, state.generator))

  def inference_generator(self, state: GanState) -> Any:
    """The generator parameters that evaluation, samples and the tools run: the moving
    average with optim.ema_decay > 0, else the trained weights."""
    return state.generator if state.generator_ema is None else state.generator_ema

  def _average(self, state: GanState) -> GanState:
    """`state` with the moving average moved towards the generator just updated (update
    t = state.step), decay min(ema_decay, (1 + t) / (10 + t))."""
    if state.generator_ema is None:
      return state
    t = state.step.astype(jnp.float32)
    decay = jnp.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
    ema = optax.incremental_update(state.generator, state.generator_ema, 1.0 - decay)
    return state.replace(generator_ema=ema)

  def problems(self, batch: Batch, key: jax.Array, step: jax.Array,
               factor: int = 1) -> dict[str, jax.Array]:
    """Copy-paste problems built on device: image, source T(I), mask, composite, input X.

    factor > 1: the problems of the low-resolution phase, on the crops average-pooled
    factor x factor ([B, H / factor, W / factor, C]) with T's sigma divided by factor.
    """
    images = batch["image"].astype(jnp.float32) / 255.0
    transform = self.transform
    if factor > 1:
      images = nn.avg_pool(images, (factor, factor), strides=(factor, factor))
      transform = self.low_res_transform
    keys = example_keys(key, step, batch["index"])
    ex = jax.vmap(make_copy_paste_example, in_axes=(0, 0, None))(keys, images, transform)
    ex["input"] = jnp.concatenate([ex["composite"], ex["mask"]], axis=-1)
    return ex

  def generate(self, params: Any, ex: dict[str, jax.Array], noise_key: jax.Array,
               deterministic: bool = False) -> jax.Array:
    """Y = (G(X) + T(I)) M + I (1 - M): [B, H, W, 3]."""
    residual = self.generator.apply({"params": params}, ex["input"], deterministic=deterministic,
                                    rngs={"noise": noise_key})
    residual = residual.astype(jnp.float32)
    return (residual + ex["source"]) * ex["mask"] + ex["image"] * (1.0 - ex["mask"])

  def _score(self, params: Any, images: jax.Array, ex: dict[str, jax.Array]) -> jax.Array:
    scores = self.critic.apply({"params": params}, images, ex["input"], ex["mask"])
    return scores.astype(jnp.float32)

  def _critic_update(self, state: GanState, ex: dict[str, jax.Array], fake: jax.Array,
                     gp_key: jax.Array) -> tuple[GanState, Metrics]:
    loss_cfg = self.config.loss

    def critic_loss(params):
      d_real = self._score(params, ex["image"], ex)
      d_fake = self._score(params, fake, ex)
      gp = losses.gradient_penalty(lambda z: self._score(params, z, ex), ex["image"], fake, gp_key)
      loss = losses.wgan_gp_critic_loss(d_real, d_fake, gp, gp_lambda=loss_cfg.gp_lambda,
                                        drift=loss_cfg.gamma)
      return loss, {"critic_loss": loss, "gradient_penalty": gp,
                    "wasserstein": jnp.mean(d_real) - jnp.mean(d_fake)}

    grads, aux = jax.grad(critic_loss, has_aux=True)(state.critic)
    return state.apply_gradients("critic", grads, self.critic_tx), aux

  def train_phase(self, step: int) -> TrainPhase | None:
    """What the update after `step` updates does: the image-size divisor (`low_res_factor` in
    the low-resolution phase, then 1) and whether it is adversarial (from step
    `reconstruction_steps` on). None without a curriculum: every step is the paper's."""
    if self.low_res_steps <= 0 and self.reconstruction_steps <= 0:
      return None
    return TrainPhase(factor=self.low_res_factor if step < self.low_res_steps else 1,
                      adversarial=step >= self.reconstruction_steps)

  def train_step(self, state: GanState, batch: Batch, key: jax.Array,
                 phase: TrainPhase | None = None) -> tuple[GanState, Metrics]:
    """One step of `phase` (static: `train_phase` of the step; the trainer compiles one step per
    phase): on the problems at 1 / phase.factor of the image size (`problems`), without the
    critic unless phase.adversarial. None: the paper's step, for a config without a curriculum.

    Raises:
      ValueError: no phase is given but the config has a curriculum.
    """
    if phase is None:
      if self.train_phase(0) is not None:
        raise ValueError(
            "CopyPasteTask.train_step: this config has a curriculum (curriculum.low_res_steps or "
            "curriculum.reconstruction_steps > 0), whose steps differ from step to step; pass "
            "phase=task.train_phase(step) (a static argument: System.jit_train_step(phase)).")
      phase = FULL_PHASE
    factor = phase.factor
    ex = self.problems(batch, key, state.step, factor)
    # The critic's view: its inputs at full size (the low-resolution ones repeated).
    seen = functools.partial(_repeat_pixels, factor=factor)
    critic_ex = {name: seen(ex[name]) for name in ("image", "input", "mask")}
    step_key = jax.random.fold_in(key, state.step)
    noise_key = jax.random.fold_in(step_key, _NOISE)
    # One generator pass serves both updates: the critic updates leave the generator as it is,
    # so its result Y (the critic's fake) is also the generator loss's input, and the
    # generator's gradient is Y's gradient pulled back through this pass. A second forward
    # pass for the generator loss would recompute the same Y (18 % of the demo step's FLOPs).
    fake, pull_back = jax.vjp(lambda params: self.generate(params, ex, noise_key),
                              state.generator)
    critic_metrics: Metrics = {}
    for i in range(self.config.optim.critic_steps if phase.adversarial else 0):
      gp_key = jax.random.fold_in(jax.random.fold_in(step_key, _GP), i)
      state, critic_metrics = self._critic_update(state, critic_ex, seen(fake), gp_key)

    def generator_loss(y):
      rec = losses.l1(y, ex["image"])
      if not phase.adversarial:
        return rec, {"l1": rec}
      adversarial = losses.wgan_generator_loss(self._score(state.critic, seen(y), critic_ex))
      loss = rec + self.config.loss.alpha * adversarial
      return loss, {"l1": rec, "generator_adversarial": adversarial}

    (loss, g_metrics), loss_grad_y = jax.value_and_grad(generator_loss, has_aux=True)(fake)
    (grads,) = pull_back(loss_grad_y)
    state = self._average(state.apply_gradients("generator", grads, self.generator_tx))
    step_metrics = {"loss": loss, **g_metrics, **critic_metrics}
    if self.low_res_steps > 0:   # which phase the logged steps were in (a mean across a switch)
      step_metrics["image_scale"] = jnp.float32(1.0 / factor)
    return state.replace(step=state.step + 1), step_metrics

  def _fixed_problems(self, state: GanState, batch: Batch,
                      key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """Problems and results that depend only on (key, example index), not on the step."""
    ex = self.problems(batch, key, jnp.zeros((), jnp.int32))
    y = self.generate(self.inference_generator(state), ex, jax.random.fold_in(key, _NOISE))
    return ex, jnp.clip(y, 0.0, 1.0)

  def eval_step(self, state: GanState, batch: Batch, key: jax.Array) -> Metrics:
    """L1, PSNR, SSIM of Y vs I."""
    ex, y = self._fixed_problems(state, batch, key)
    return _scores(y, ex["image"])

  def baseline_step(self, batch: Batch, key: jax.Array) -> Metrics:
    """The same scores for plain cut-and-paste (the composite, 'cut_paste_*') and Poisson
    blending (`poisson_blend`, 'poisson_*') of the same problems."""
    ex = self.problems(batch, key, jnp.zeros((), jnp.int32))
    return {f"{name}{k}": v for name, pred in (("cut_paste_", ex["composite"]),
                                                ("poisson_", poisson_blend(ex)))
            for k, v in _scores(pred, ex["image"]).items()}

  def samples(self, state: GanState, batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """The same problems at every step, so successive grids show progress."""
    ex, y = self._fixed_problems(state, batch, key)
    return {"original": ex["image"], "cut_paste": ex["composite"],
            "mask": jnp.broadcast_to(ex["mask"], ex["image"].shape),
            "poisson": poisson_blend(ex), "result": y}


def _repeat_pixels(x: jax.Array, factor: int) -> jax.Array:
  """[B, H, W, C] -> [B, H factor, W factor, C], each pixel repeated factor x factor (nearest
  up-sampling: a binary mask stays binary)."""
  if factor == 1:
    return x
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def _scores(pred: jax.Array, image: jax.Array) -> Metrics:
  """Per-example L1, PSNR and SSIM of [B, H, W, 3] predictions against the originals."""
  return {"l1": metrics.l1_per_example(pred, image), "psnr": metrics.psnr(pred, image),
          "ssim": metrics.ssim(pred, image)}


def poisson_blend(ex: dict[str, jax.Array]) -> jax.Array:
  """The classical baseline: Poisson seamless cloning of T(I) into I inside M, [B, H, W, 3].

  Perez's formulation on the mask itself (`domain='mask'`, CG warm-started from the exact box
  solve): the pasted region keeps T(I)'s gradients and meets I at the mask's edge; pixels
  outside the mask stay I. Mask pixels on the image's 1-px border have no boundary ring and keep
  I's values. Clipped to [0, 1] like the generator's result.
  """
  clone = functools.partial(poisson.seamless_clone, mode="normal", domain="mask", box="image")
  return jnp.clip(jax.vmap(clone)(ex["source"], ex["image"], ex["mask"]), 0.0, 1.0)
