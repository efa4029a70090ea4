"""Image harmonisation: DIH (Tsai et al.), iDIH and iDIH-HRNet (Sofiiuk et al.) as one task.

`config.model.name` picks the network: 'dih' (`cpjax.models.dih.DIH`, with the scene-parsing
decoder), 'idih' (`IDIH`), 'idih_hrnet' (`IDIHHRNet`).

Problems. A batch with a 'real' field is a real harmonisation pair (iHarmony4: 'image' = the
composite, 'real' = the ground truth, 'mask' uint8 0..255, 'subset'). A batch without one (any
image source: a folder, the bundled photos, ADE20K) becomes a synthetic problem on device: a
random rotated rectangle M (`cpjax.ops.masks`) and T_color (or T_shading) from the copy-paste
ops applied inside it; the ground truth is the original image:
  composite = I (1 - M) + T(I) M,   target = I   (`make_copy_paste_example`, no homography).
`config.synthetic` (optional, `SyntheticConfig`) widens these problems: a strength s scales the
change, I + s (T(I) - I), so mild and absent shifts occur too, and a fraction of the masks are
random blob outlines (`cpjax.ops.masks.random_blob_shape`) instead of rectangles; with
`recolor` the whole photo first gets a random T_color (it is then the target), so a network
trained on few photos cannot memorise their colours and must read them from the background;
with `camera_fraction` that fraction of the pasted changes is a camera-like shift
(`camera_shift`: a gamma, per-channel gains, a saturation factor) instead of T_color.
Without it the problems are exactly the plain copy-paste examples above.
Real-pair masks are used as delivered, mask / 255 in [0, 1], in training and evaluation alike:
saic-vul/image_harmonization resizes masks bilinearly (its `HCompose(no_nearest_for_masks=True)`
treats the mask as an image) and feeds and weights the loss with that soft mask; the iHarmony4
configs resize with data.resample='linear' to match.

Model edge (config.model.input_space). 'imagenet' (iDIH, iDIH-HRNet): the
network sees the composite ImageNet-normalised (mean/std of `cpjax.ops.color`) concatenated
with the mask in [0, 1]. 'caffe_bgr' (DIH): the Caffe deploy net's space, BGR on 0..255 minus
the ImageNet mean and mask * 255 - 128 (`cpjax.models.dih.caffe_inputs`). The network
predicts in the image's space; the loss is computed there (as the references do) and the
prediction is denormalised for metrics and samples.

Loss (config.loss): name 'fn_mse' (foreground-normalised MSE, A_min = min_area) or 'mse';
DIH adds the parsing cross-entropy on batches with a 'label' field (ADE20K, 26 classes):
  L = lambda1 L_rec + lambda2 CE                       steps < stage1_steps (joint stage)
  L = lambda1 L_rec, parsing decoder frozen            steps >= stage1_steps (fine-tuning)
The paper's two stages (sec. 3.3) train on different data (ADE20K, then the harmonisation
pairs): run the joint stage on `ade20k:` with total_steps = stage1_steps, then rerun the same
workdir with the harmonisation data and the full total_steps; the trainer resumes the state and
the step decides the stage. In the fine-tuning stage the parsing decoder's parameter updates and
BatchNorm statistics are held fixed (its forward pass still uses batch statistics).

Optimiser (config.optim): Adam (lr, b1, b2, eps), learning rate x `decay` at each step in
`milestones`; for iDIH-HRNet the HRNet trunk at lr x `backbone_lr_mult` (0.1) and the OCR head
and the mask-fusion conv at 1x (optax.multi_transform), as saic-vul's LRMult.

Initialisation (`warm_start`): init_from (a converted released network) or, for iDIH-HRNet,
model.backbone_init (the converted ImageNet trunk). A new iDIH-HRNet run without either is
refused before anything is compiled (`check_warm_start`), unless model.backbone_init='random'
asks for a random trunk; a checkpoint of such a config still loads.

BatchNorm: 'batch_stats' live in the train state; under jit with the batch sharded over devices
the batch mean and variance are global (synchronised), so 1 and 8 devices agree.

Evaluation: MSE, fMSE, PSNR as the reference (`cpjax.metrics.harmonization_scores`), for the
prediction and for the unharmonised composite, averaged over All, per iHarmony4 subset and per
foreground-ratio range; the eval JSON holds both tables and markdown renderings like the
paper's Tables 1 and 2. The reference scores at the model's size (`eval.mode='resize'`).
With `eval.mode='full'` (and `eval.full_size` >= the largest image) the same scores are also
computed at each image's own resolution ('full_*' keys, tables 'result_full' /
'composite_full'): the network still sees the resized input, and its predicted change is
upsampled and added inside the full-resolution mask (`apply_change`, as
`cpjax.tools.harmonize` does), so the background is the composite's own pixels. The
foreground-ratio ranges stay those of the resized mask.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cpjax import losses, metrics
from cpjax.convert import harmonization as pretrained
from cpjax.models import dih as dih_models
from cpjax.models import hrnet
from cpjax.ops import color, geometry, masks
from cpjax.ops.transform import TransformConfig, make_copy_paste_example
from cpjax.tasks.base import (Batch, Metrics, Task, TrainState, example_keys,
                              step_decay_schedule)
from data_pipelines import iharmony4, image_ops

MODELS = ("dih", "idih", "idih_hrnet")
INPUT_SPACES = ("imagenet", "caffe_bgr")
SUBSET_NAMES = iharmony4.SUBSETS
_DROPOUT = 1  # salt of the batch-level dropout key
_SYNTHETIC = 2  # salt of the per-example strength and blob keys
BUCKET_NAMES = tuple(f"{round(lo * 100)}-{round(hi * 100)}%"
                     for lo, hi in metrics.FOREGROUND_RATIO_BUCKETS)


def apply_change(composite: jax.Array, mask: jax.Array, change: jax.Array,
                 extent: jax.Array) -> jax.Array:
  """A harmonisation predicted at model size, applied to the image at its own resolution.

    out = clip(composite + mask * upsample(change), 0, 1)

  `change` (prediction minus the model-size composite) is upsampled bilinearly (half-pixel
  centres, antialiased when shrinking: `jax.image.resize`'s convention) onto the image's
  extent (h, w), which may be smaller than the canvas it is padded in; outside the mask the
  composite is returned unchanged.

  Args:
    composite: [H, W, 3] in [0, 1], the image in the top-left (h, w) of the canvas.
    mask: [H, W, 1] in [0, 1].
    change: [S_h, S_w, 3] the model-size change.
    extent: int [2], the image's (h, w) <= (H, W); may be traced (one compilation per canvas).

  Returns:
    [H, W, 3] in [0, 1]; meaningful inside the extent only.
  """
  scale = extent.astype(jnp.float32) / jnp.asarray(change.shape[:2], jnp.float32)
  up = jax.image.scale_and_translate(change, composite.shape, (0, 1), scale,
                                     jnp.zeros(2, jnp.float32), "linear")
  return jnp.clip(composite + mask * up, 0.0, 1.0)


def _inside_extent(extent: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """[B, H, W, 1] float32: 1 on the pixels of each image's (h, w) extent ([B, 2]) in the canvas."""
  rows = jnp.arange(shape[1])[None, :, None, None] < extent[:, 0, None, None, None]
  cols = jnp.arange(shape[2])[None, None, :, None] < extent[:, 1, None, None, None]
  return (rows & cols).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """How image-only batches become harmonisation problems beyond T and M (`config.synthetic`).

  Attributes:
    strength: (lo, hi) of s ~ U(lo, hi): the pasted foreground is I + s (T(I) - I), from the
      unchanged photo (s = 0: the right answer is the composite itself) to T's full change (1).
    blob_fraction: probability that M is a random blob outline (object-like, `random_blob`)
      rather than T's rotated rectangle.
    blob_radius: (lo, hi) of the blob's mean radius as a fraction of the shorter image side.
    recolor: the photo itself gets a random T_color (T's ranges) before the problem is made
      from it; the recoloured photo is the target.
    camera_fraction: probability that the pasted change is `random_camera_shift` (exposure,
      white balance, saturation) rather than T's colour change.
    camera_range: a of `random_camera_shift`: each of its factors is exp(U(-a, a)).
    strength_start: a curriculum, in training only: the strength range at step 0, moved
      linearly to `strength` by step `curriculum_steps` (e.g. strong shifts first, so the
      correction is learnt before telling mild shifts from none); None (or
      curriculum_steps 0): `strength` throughout. Evaluation always uses `strength`.
    curriculum_steps: the length of that curriculum.
    none_fraction: probability that s = 0 whatever its range (a composite already right,
      whose answer is itself: teaches leaving good composites alone).
  """
  strength: tuple[float, float] = (1.0, 1.0)
  blob_fraction: float = 0.0
  blob_radius: tuple[float, float] = (0.12, 0.3)
  recolor: bool = False
  camera_fraction: float = 0.0
  camera_range: float = 0.4
  strength_start: tuple[float, float] | None = None
  curriculum_steps: int = 0
  none_fraction: float = 0.0

  @classmethod
  def from_dict(cls, d: Any) -> "SyntheticConfig":
    """From `config.synthetic` (a dict or ConfigDict; missing keys keep the defaults)."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"config.synthetic: unknown keys {unknown}; use strength, "
                       "blob_fraction, blob_radius, recolor, camera_fraction, camera_range, "
                       "strength_start, curriculum_steps, none_fraction")
    pair = lambda v: (float(v[0]), float(v[1]))
    kw = {k: pair(d[k]) for k in ("strength", "blob_radius") if k in d}
    kw.update({k: float(d[k]) for k in ("blob_fraction", "camera_fraction", "camera_range",
                                        "none_fraction") if k in d})
    if d.get("strength_start") is not None:
      kw["strength_start"] = pair(d["strength_start"])
    if "curriculum_steps" in d:
      kw["curriculum_steps"] = int(d["curriculum_steps"])
    if "recolor" in d:
      kw["recolor"] = bool(d["recolor"])
    return cls(**kw)

  def strength_range(self, step: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(lo, hi) of s at a training step (the curriculum), or `strength` for step None."""
    if step is None or self.strength_start is None or self.curriculum_steps <= 0:
      return jnp.float32(self.strength[0]), jnp.float32(self.strength[1])
    t = jnp.minimum(jnp.asarray(step, jnp.float32) / self.curriculum_steps, 1.0)
    start, end = jnp.asarray(self.strength_start), jnp.asarray(self.strength)
    lo, hi = start + t * (end - start)
    return lo, hi


def camera_shift(image: jax.Array, gamma: jax.Array, gains: jax.Array,
                 saturation: jax.Array) -> jax.Array:
  """A camera-like colour change: exposure curve, white balance, then saturation.

    out = clip(g + saturation (x - g), 0, 1),   x = image ** gamma * gains,  g = mean_c x

  Args:
    image: [..., 3] in [0, 1].
    gamma: scalar (or [1]) exponent; gains: [3] per-channel factors; saturation: scalar (or
      [1]) factor of the distance from the pixel's channel mean.

  Returns:
    [..., 3] float32 in [0, 1].
  """
  x = jnp.power(jnp.asarray(image, jnp.float32), jnp.asarray(gamma, jnp.float32))
  x = x * jnp.asarray(gains, jnp.float32)
  grey = jnp.mean(x, axis=-1, keepdims=True)
  return jnp.clip(grey + jnp.asarray(saturation, jnp.float32) * (x - grey), 0.0, 1.0)


def random_camera_shift(key: jax.Array, image: jax.Array, amount: float) -> jax.Array:
  """`camera_shift` with gamma, 3 gains and saturation each exp(U(-amount, amount))."""
  log_factors = jax.random.uniform(key, (5,), jnp.float32, -amount, amount)
  factors = jnp.exp(log_factors)
  return camera_shift(image, factors[0], factors[1:4], factors[4])


def random_blob(key: jax.Array, height: int, width: int,
                radius: tuple[float, float]) -> jax.Array:
  """A random object-like outline: a `masks.random_blob_shape` stretched (aspect 2/3..3/2),
  rotated and centred in the middle half of the image, mean radius U(radius) x shorter side.

  Returns:
    [height, width, 1] float32 in {0, 1}.
  """
  k_shape, k_place = jax.random.split(key)
  u = jax.random.uniform(k_place, (5,), jnp.float32)
  r = (radius[0] + (radius[1] - radius[0]) * u[0]) * min(height, width)
  aspect = jnp.exp(math.log(1.5) * (2.0 * u[1] - 1.0))
  centre = (0.25 + 0.5 * u[2:4]) * jnp.array([width, height], jnp.float32)
  placement = geometry.affine_about_center(
      height, width, rotation=2.0 * math.pi * u[4], scale=r * jnp.stack([aspect, 1.0 / aspect]),
      translation=centre, center=jnp.zeros(2, jnp.float32))
  return masks.blob_mask(height, width, masks.random_blob_shape(k_shape), placement)


def synthetic_problem(key: jax.Array, image: jax.Array, transform: TransformConfig,
                      synthetic: SyntheticConfig | None,
                      step: jax.Array | None = None) -> dict[str, jax.Array]:
  """One synthetic problem from a photo [H, W, 3] in [0, 1] (module docstring).

  `step` (training only) places the problem on `synthetic`'s strength curriculum; None (the
  evaluation) draws s from `synthetic.strength`.

  Returns:
    {'composite', 'target' [H, W, 3], 'mask' [H, W, 1] in {0, 1}} float32; with `synthetic`
    None, the plain `make_copy_paste_example` (target = image).
  """
  if synthetic is None:
    made = make_copy_paste_example(key, image, transform)
    return {"composite": made["composite"], "target": image, "mask": made["mask"]}
  k_strength, k_kind, k_blob, k_photo = jax.random.split(jax.random.fold_in(key, _SYNTHETIC), 4)
  if synthetic.recolor:
    image = color.random_color(k_photo, image, transform.color)
  made = make_copy_paste_example(key, image, transform)
  lo, hi = synthetic.strength_range(step)
  s = jax.random.uniform(k_strength, (), jnp.float32, lo, hi)
  none = jax.random.uniform(jax.random.fold_in(k_strength, _SYNTHETIC)) < synthetic.none_fraction
  s = jnp.where(none, 0.0, s)
  blob = random_blob(k_blob, image.shape[0], image.shape[1], synthetic.blob_radius)
  mask = jnp.where(jax.random.uniform(k_kind) < synthetic.blob_fraction, blob, made["mask"])
  source = made["source"]
  if synthetic.camera_fraction > 0.0:
    k_camera, k_pick = jax.random.split(jax.random.fold_in(k_kind, _SYNTHETIC))
    camera = random_camera_shift(k_camera, image, synthetic.camera_range)
    source = jnp.where(jax.random.uniform(k_pick) < synthetic.camera_fraction, camera, source)
  pasted = image + s * (source - image)
  return {"composite": image * (1.0 - mask) + pasted * mask, "target": image, "mask": mask}


class HarmonizationState(TrainState):
  """step, params, opt_state (`TrainState`) and the BatchNorm statistics."""
  batch_stats: Any


def build_model(m: ml_collections.ConfigDict) -> Any:
  """The flax module named by config.model.name."""
  dtype = jnp.dtype(m.dtype)
  if m.name == "idih":
    return dih_models.IDIH(depth=m.depth, ch=m.ch, max_channels=m.max_channels,
                           batchnorm_from=m.batchnorm_from, image_fusion=m.image_fusion,
                           dtype=dtype)
  if m.name == "idih_hrnet":
    return dih_models.IDIHHRNet(width=m.hrnet_width, depth=m.depth, ch=m.ch,
                                max_channels=m.max_channels, batchnorm_from=m.batchnorm_from,
                                downsize_backbone_input=m.downsize_backbone_input,
                                pyramid_channels=m.pyramid_channels,
                                mask_fusion=m.mask_fusion, dtype=dtype)
  if m.name == "dih":
    return dih_models.DIH(depth=m.depth, ch=m.ch, max_channels=m.max_channels,
                          fc_features=m.fc_features, parsing_classes=m.parsing_classes,
                          dtype=dtype)
  raise ValueError(f"unknown harmonization model {m.name!r}; use one of {', '.join(MODELS)}")


def param_groups(params: Any) -> Any:
  """'backbone' for the HRNet trunk (lr x backbone_lr_mult), 'default' for everything else.

  The trunk is the ImageNet-pretrained 'hrnet' scope of the 'backbone' module
  (`cpjax.models.hrnet.param_labels`); its OCR head and the foreground mask fusion train at
  the full learning rate, as in the reference.
  """
  def label_subtree(name: str, sub: Any) -> Any:
    if name == "backbone":
      return jax.tree.map(lambda group: "backbone" if group == "trunk" else "default",
                          hrnet.param_labels(sub))
    return jax.tree.map(lambda _: "default", sub)
  return {name: label_subtree(name, sub) for name, sub in params.items()}


def _groups(ex: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Each example's membership [B, k] in the foreground-ratio ranges and (real pairs) subsets."""
  groups = {"foreground_ratio": metrics.foreground_ratio_buckets(ex["mask"])}
  if "subset" in ex:
    groups["subset"] = jax.nn.one_hot(ex["subset"], len(SUBSET_NAMES), dtype=jnp.float32)
  return groups


def _scores(prefix: str, pred: jax.Array, target: jax.Array, mask: jax.Array,
            groups: dict[str, jax.Array], valid: jax.Array | None = None) -> Metrics:
  """MSE, fMSE, PSNR per example ('<prefix><name>' [B]) and per group member
  ('<prefix><group>_<name>' [B, k])."""
  out = {}
  for name, value in metrics.harmonization_scores(pred, target, mask, valid).items():
    out[f"{prefix}{name}"] = value
    for g, member in groups.items():
      out[f"{prefix}{g}_{name}"] = value[:, None] * member
  return out


def _full_resolution(batch: Batch) -> tuple[jax.Array, ...]:
  """eval.mode='full': composite, target, mask [B, H, W, c] in [0, 1] at full resolution, the
  extents [B, 2] and the valid-pixel mask."""
  if "real_full" not in batch:
    raise ValueError("eval.mode='full' scores real harmonisation pairs (an 'iharmony4:' "
                     "eval.source); synthetic problems exist only at model size: use "
                     "eval.mode='resize'")
  composite, target, mask = (batch[k].astype(jnp.float32) / 255.0
                             for k in ("image_full", "real_full", "mask_full"))
  extent = batch["full_extent"]
  return composite, target, mask, extent, _inside_extent(extent, composite.shape)


class HarmonizationTask(Task):
  """DIH / iDIH / iDIH-HRNet trained with FN-MSE or MSE (and DIH's parsing CE)."""

  sample_columns = ("composite", "mask", "result", "target")
  curves = tuple((title, key, {"composite": f"composite/All/{column}"})
                 for title, key, column in (("fMSE", "fmse", "fMSE"), ("MSE", "mse", "MSE"),
                                            ("PSNR (dB)", "psnr", "PSNR")))

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.model = build_model(config.model)
    o = config.optim

    def adam(mult: float) -> optax.GradientTransformation:
      return optax.adam(step_decay_schedule(o, mult), b1=o.b1, b2=o.b2, eps=o.eps)

    self.tx = optax.multi_transform(
        {"default": adam(1.0), "backbone": adam(o.backbone_lr_mult)}, param_groups)
    t = dict(config.transform)
    t["geometric"] = False   # harmonisation changes appearance only
    self.transform = TransformConfig.from_dict(t)
    self.synthetic = (SyntheticConfig.from_dict(config.synthetic) if "synthetic" in config
                      else None)
    self.input_space = config.model.input_space
    if self.input_space not in INPUT_SPACES:
      raise ValueError(f"model.input_space is {self.input_space!r}; use one of "
                       f"{', '.join(INPUT_SPACES)}")

  # --- model edge -------------------------------------------------------------------------
  def normalize(self, image: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., 3] RGB and [..., 1] mask in [0, 1] -> the network's input space."""
    if self.input_space == "caffe_bgr":
      return dih_models.caffe_inputs(image, mask)
    return color.imagenet_normalize(image), mask

  def denormalize(self, pred: jax.Array) -> jax.Array:
    """A prediction in the network's space -> RGB on the [0, 1] scale (not clipped)."""
    if self.input_space == "caffe_bgr":
      return dih_models.caffe_to_rgb(pred)
    return color.imagenet_denormalize(pred)

  def apply(self, params: Any, batch_stats: Any, composite: jax.Array, mask: jax.Array,
            train: bool, dropout_key: jax.Array | None = None
            ) -> tuple[jax.Array, jax.Array | None, Any]:
    """Runs the network on [B, H, W, 3] composites and [B, H, W, 1] masks in [0, 1].

    `dropout_key` feeds the 'dropout' rng stream in training (the OCR head's Dropout2d).

    Returns:
      (prediction [B, H, W, 3] in the input space, parsing logits or None, new batch_stats).
    """
    variables = {"params": params, "batch_stats": batch_stats}
    x, m = self.normalize(composite, mask)
    if train:
      out, updates = self.model.apply(variables, x, m, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": dropout_key})
      new_stats = updates["batch_stats"]
    else:
      out, new_stats = self.model.apply(variables, x, m, train=False), batch_stats
    pred, logits = out if isinstance(out, tuple) else (out, None)
    return pred, logits, new_stats

  def harmonize(self, state: HarmonizationState, composite: jax.Array,
                mask: jax.Array) -> jax.Array:
    """Inference: [B, H, W, 3] composite in [0, 1] + [B, H, W, 1] mask -> [B, H, W, 3] in [0, 1]."""
    pred, _, _ = self.apply(state.params, state.batch_stats, composite, mask, train=False)
    return jnp.clip(self.denormalize(pred), 0.0, 1.0)

  def check_warm_start(self) -> None:
    pretrained.check_initialisation(self.config)

  def init(self, key: jax.Array) -> HarmonizationState:
    h, w = image_ops.pair(self.config.data.image_size)
    variables = self.model.init(key, jnp.zeros((1, h, w, 3), jnp.float32),
                                jnp.zeros((1, h, w, 1), jnp.float32), train=False)
    return HarmonizationState.create(apply_fn=self.model.apply, params=variables["params"],
                                     tx=self.tx, batch_stats=variables.get("batch_stats", {}))

  def warm_start(self, state: HarmonizationState) -> HarmonizationState:
    """Converted released weights for a fresh run: `init_from` (a converted idih256 /
    hrnet*_idih256 / dih512 directory: the whole network) or `model.backbone_init` (a converted
    hrnet_w18s / hrnet_w18 / hrnet_w32: the ImageNet HRNet trunk; 'random': none); see
    `cpjax.convert.harmonization`. Unchanged without either."""
    variables = pretrained.pretrained_variables(
        self.config, {"params": state.params, "batch_stats": state.batch_stats})
    if variables is None:
      return state
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"],
                         opt_state=self.tx.init(variables["params"]))

  # --- problems ---------------------------------------------------------------------------
  def problems(self, batch: Batch, key: jax.Array, step: jax.Array,
               train: bool) -> dict[str, jax.Array]:
    """{'composite', 'target' [B, H, W, 3], 'mask' [B, H, W, 1]} float32 in [0, 1], plus
    'label' [B, H, W] int32 and 'subset' [B] int32 when the batch has them.

    The same problems in training and evaluation (soft masks included), except that a
    synthetic strength curriculum (`SyntheticConfig.strength_start`) applies in training only.
    """
    if "real" in batch:
      ex = {"composite": batch["image"].astype(jnp.float32) / 255.0,
            "target": batch["real"].astype(jnp.float32) / 255.0,
            "mask": batch["mask"].astype(jnp.float32) / 255.0}
    else:
      images = batch["image"].astype(jnp.float32) / 255.0
      keys = example_keys(key, step, batch["index"])
      made = jax.vmap(synthetic_problem, in_axes=(0, 0, None, None, None))(
          keys, images, self.transform, self.synthetic, step if train else None)
      ex = {"composite": made["composite"], "target": made["target"], "mask": made["mask"]}
    for name in ("label", "subset"):
      if name in batch:
        ex[name] = batch[name].astype(jnp.int32)
    return ex

  # --- training ---------------------------------------------------------------------------
  def _losses(self, pred: jax.Array, logits: jax.Array | None, ex: dict[str, jax.Array],
              step: jax.Array) -> tuple[jax.Array, Metrics]:
    cfg = self.config.loss
    target, _ = self.normalize(ex["target"], ex["mask"])
    if cfg.name == "fn_mse":
      rec = losses.fn_mse(pred, target, ex["mask"], min_area=cfg.min_area)
    elif cfg.name == "mse":
      rec = losses.mse(pred, target)
    else:
      raise ValueError(f"unknown loss.name {cfg.name!r}; use 'fn_mse' or 'mse'")
    loss = cfg.lambda1 * rec
    out = {"reconstruction": rec}
    if logits is not None and "label" in ex:
      ce = losses.softmax_cross_entropy(logits, ex["label"])
      weight = jnp.where(step < cfg.stage1_steps, cfg.lambda2, 0.0)
      loss = loss + weight * ce
      out["parsing_ce"] = ce
    return loss, out

  def train_step(self, state: HarmonizationState, batch: Batch,
                 key: jax.Array) -> tuple[HarmonizationState, Metrics]:
    ex = self.problems(batch, key, state.step, train=True)
    dropout_key = jax.random.fold_in(jax.random.fold_in(key, state.step), _DROPOUT)

    def loss_fn(params):
      pred, logits, stats = self.apply(params, state.batch_stats, ex["composite"], ex["mask"],
                                       train=True, dropout_key=dropout_key)
      loss, aux = self._losses(pred, logits, ex, state.step)
      return loss, (aux, stats)

    (loss, (aux, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new = state.apply_gradients(grads=grads, batch_stats=stats)
    if "parsing_decoder" in new.params:   # DIH fine-tuning stage: the parsing decoder is fixed
      joint = state.step < self.config.loss.stage1_steps
      keep = lambda new, old: jnp.where(joint, new, old)  # pylint: disable=unnecessary-lambda-assignment
      new = new.replace(**{field: {**getattr(new, field), "parsing_decoder": jax.tree.map(
          keep, getattr(new, field)["parsing_decoder"], getattr(state, field)["parsing_decoder"])}
                           for field in ("params", "batch_stats")})
    return new, {"loss": loss, **aux}

  # --- evaluation -------------------------------------------------------------------------
  def _fixed(self, state: HarmonizationState, batch: Batch,
             key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """Problems and results that depend only on (key, example index), not on the step."""
    ex = self.problems(batch, key, jnp.zeros((), jnp.int32), train=False)
    return ex, self.harmonize(state, ex["composite"], ex["mask"])

  def eval_step(self, state: HarmonizationState, batch: Batch, key: jax.Array) -> Metrics:
    """Per image: MSE, fMSE, PSNR of the result, and the same times the image's membership in
    each subset ([B, 4]) and foreground-ratio range ([B, 3]) (the composite's: `baseline_step`).
    """
    ex, result = self._fixed(state, batch, key)
    groups = _groups(ex)
    out = {f"{g}_n": member for g, member in groups.items()}
    out.update(_scores("", result, ex["target"], ex["mask"], groups))
    if "image_full" in batch:   # eval.mode='full'
      composite, target, mask, extent, valid = _full_resolution(batch)
      full = jax.vmap(apply_change)(composite, mask, result - ex["composite"], extent)
      out.update(_scores("full_", full, target, mask, groups, valid))
    return out

  def baseline_step(self, batch: Batch, key: jax.Array) -> Metrics:
    """The unharmonised composite's scores, as `eval_step`'s with the prefix 'composite_'
    (and 'composite_full_'): they do not depend on the network."""
    ex = self.problems(batch, key, jnp.zeros((), jnp.int32), train=False)
    groups = _groups(ex)
    out = _scores("composite_", ex["composite"], ex["target"], ex["mask"], groups)
    if "image_full" in batch:
      composite, target, mask, _, valid = _full_resolution(batch)
      out.update(_scores("composite_full_", composite, target, mask, groups, valid))
    return out

  def summarize_eval(self, sums: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """{'result': table, 'composite': table, 'mse', 'fmse', 'psnr' (the result's, All), and
    markdown tables 'table_subset' / 'table_foreground_ratio' (rows: composite, result)}; with
    eval.mode='full' also 'result_full', 'composite_full', 'full_mse' ... and
    'table_<group>_full'."""
    groups = {"foreground_ratio": BUCKET_NAMES}
    if "subset_n" in sums:
      groups["subset"] = SUBSET_NAMES
    out: dict[str, Any] = {k: float(sums[k]) / count for k in ("mse", "fmse", "psnr")}
    resolutions = [("", "")] + ([("_full", "full_")] if "full_mse" in sums else [])
    for suffix, prefix in resolutions:
      tables = {"composite": metrics.harmonization_table(sums, count, groups,
                                                         f"composite_{prefix}"),
                "result": metrics.harmonization_table(sums, count, groups, prefix)}
      out.update({f"{name}{suffix}": table for name, table in tables.items()})
      for g in groups:
        out[f"table_{g}{suffix}"] = metrics.format_harmonization_table(tables, g)
    if "full_mse" in sums:
      out.update({f"full_{k}": float(sums[f"full_{k}"]) / count for k in ("mse", "fmse", "psnr")})
    return out

  def samples(self, state: HarmonizationState, batch: Batch,
              key: jax.Array) -> dict[str, jax.Array]:
    """The same problems at every step, so successive grids show progress."""
    ex, result = self._fixed(state, batch, key)
    return {"composite": ex["composite"], "mask": jnp.broadcast_to(ex["mask"], result.shape),
            "result": result, "target": ex["target"]}
