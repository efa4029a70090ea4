"""FCN semantic segmentation (Long et al.; the seamless-cloning report's FCN-32s ... 4s).

Batches: 'image' uint8 [B, H, W, 3], 'label' uint8 [B, H, W] class ids (255 = ignored), from a
source with label maps (`batch_needs`, checked by the trainer before training).

Loss (config.loss.reduction): 'sum' = per-pixel softmax cross-entropy summed over the pixels of
each image, averaged over the batch (the reference sums over pixels at batch size 1, where the
two agree; its tiny learning rates 1e-10 ... 1e-14 assume it); 'mean' = averaged over all
non-ignored pixels of the batch (for Adam and ordinary learning rates).

Optimiser (config.optim): name 'sgd' (momentum, as the reference: 0.99) or 'adam' (b1, b2);
weight decay `weight_decay` on the weights (L2 added to the gradient, as PyTorch's SGD/Adam);
biases at `bias_lr_mult` x lr (2) without decay (the Caffe solver's lr_mult 2 / decay_mult 0,
kept by pytorch-fcn); the bilinear upscore layers frozen (`optax.set_to_zero` under
`optax.multi_transform`).

Dropout draws from per-example keys (`example_keys`): the model runs under `jax.vmap` over the
examples, so the masks do not depend on how the batch is split over devices.

Initialisation. FCN fine-tunes ImageNet VGG16, so a new run starts only with pretrained weights
named (`check_warm_start`, before anything is compiled; a checkpoint still loads without them):
model.vgg_init, or init_from, or model.vgg_init='random' asked for explicitly (the tiny and demo configs, which
train narrow networks from scratch). `warm_start`, applied by the trainer to a fresh run, reads:
  model.vgg_init  a directory of `python -m cpjax.tools.convert --model=vgg16_caffe` (vgg, fc6,
                  fc7; torchvision's weights are refused: they expect ImageNet-normalised RGB,
                  the FCN feeds Caffe BGR; any other path, e.g. an .npz, is refused with the
                  convert command), or 'random' (nothing read).
  init_from       '' or the workdir of an earlier stage (staged training 32s -> 16s -> 8s -> 4s):
                  its latest checkpoint's parameters are copied for every top-level module the
                  two networks share (vgg, fc6, fc7, score_fr, and the skip layers of the earlier
                  stage), like pytorch-fcn's copy_params_from_fcn32s / 16s. Applied after
                  vgg_init. Or a directory of `python -m cpjax.tools.convert --model=fcn32s|
                  fcn16s|fcn8s` (pytorch-fcn's checkpoints), copied the same way.
Both are merged by `cpjax.convert.checkpoint.put`: a shared module of another shape is a one-line
error naming the flag, the parameter and the two shapes.

Evaluation: per-example confusion matrices [B, K, K] (`cpjax.metrics.confusion_matrix`), summed
by the trainer over the split; `summarize_eval` gives pixel accuracy, mean accuracy, mean IU and
frequency-weighted IU of the summed matrix (`cpjax.metrics.segmentation_scores`).
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cpjax import losses, metrics
from cpjax.convert import checkpoint as converted_weights
from cpjax.convert import fcn as convert_fcn
from cpjax.convert import vgg as convert_vgg
from cpjax.models.fcn import FCN
from cpjax.tasks.base import Batch, Metrics, Task, TrainState, example_keys
from data_pipelines.voc import PALETTE

# Parameter shapes of the FCN do not depend on the image size: init traces this one.
_INIT_SHAPE = (1, 32, 32, 3)
# model.vgg_init asking for random VGG16 weights (the default is to require pretrained ones).
RANDOM_INIT = "random"


def param_labels(params: Any) -> Any:
  """Optimiser group of every parameter: 'frozen' (upscore*), 'bias' or 'weight'."""
  def label(path, _):
    if path[0].key.startswith("upscore"):
      return "frozen"
    return "bias" if path[-1].key == "bias" else "weight"
  return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(o: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimiser of the module docstring for config.optim `o`."""
  if o.name not in ("sgd", "adam"):
    raise ValueError(f"optim.name is {o.name!r}; use 'sgd' or 'adam'")

  def step(lr: float) -> optax.GradientTransformation:
    if o.name == "sgd":
      return optax.sgd(lr, momentum=o.momentum)
    return optax.adam(lr, b1=o.b1, b2=o.b2)

  return optax.multi_transform(
      {"weight": optax.chain(optax.add_decayed_weights(o.weight_decay), step(o.lr)),
       "bias": step(o.lr * o.bias_lr_mult),
       "frozen": optax.set_to_zero()},
      param_labels)


def put_shared(params: Any, loaded: Any, field: str, source: str) -> Any:
  """`params` with every top-level module that `loaded` also has replaced by loaded's
  (`cpjax.convert.checkpoint.put`; e.g. vgg, fc6, fc7, score_fr of an earlier stage).

  Raises:
    ValueError: a shared module whose shapes differ (the networks do not match).
  """
  shared = sorted(set(loaded) & set(params))
  return converted_weights.put(params, {(name,): loaded[name] for name in shared}, field, source,
                               fix="use the same model widths and classes")


def check_initialisation(config: ml_collections.ConfigDict) -> None:
  """Refuses an FCN config that names no pretrained weights (module docstring).

  Raises:
    ValueError: model.vgg_init and init_from both unset; one line naming the file, where it is
      published, the convert command and the flags.
  """
  if config.model.vgg_init or config.init_from:
    return
  model = "vgg16_caffe"
  file = convert_vgg.FILES[model]
  raise ValueError(
      f"model.vgg_init is not set, and FCN fine-tunes ImageNet VGG16: download {file} "
      "(pytorch-fcn's torchfcn.models.VGG16(pretrained=True) fetches it to "
      "~/data/models/pytorch/), "
      + converted_weights.convert_advice("model.vgg_init", model, file) + " (or "
      "--config.init_from=DIR: an earlier stage's workdir or a converted fcn32s/16s/8s); "
      f"--config.model.vgg_init={RANDOM_INIT} starts from random weights")


def stage_params(init_from: str, variant: str) -> Any:
  """The parameters `init_from` names: a converted fcn32s / 16s / 8s directory or the workdir
  of an earlier stage (its latest checkpoint), on the host.

  Raises:
    FileNotFoundError / ValueError: neither (one line: what init_from takes; for a path that is
      no directory, e.g. an .npz, the convert command).
  """
  if converted_weights.is_converted(init_from):
    return convert_fcn.load_params(init_from, "init_from")
  if not os.path.isdir(init_from):
    model = f"fcn{variant}" if f"fcn{variant}" in convert_fcn.VARIANTS else "fcn8s"
    converted_weights.require_converted(init_from, "init_from", model, f"{model}_from_caffe.pth")
  from cpjax import system  # pylint: disable=import-outside-toplevel  (system imports tasks)
  try:
    return jax.device_get(system.load(init_from, task="fcn").state.params)
  except (FileNotFoundError, ValueError) as e:
    raise type(e)(f"init_from: {e} (init_from names the workdir of an earlier stage, e.g. one "
                  "trained with configs/fcn_voc.py:32s, or a converted fcn32s/16s/8s)") from None


def colorize(labels: jax.Array) -> jax.Array:
  """[B, H, W] class ids -> [B, H, W, 3] in [0, 1], VOC colours (255 = void, cream)."""
  return jnp.asarray(PALETTE, jnp.float32)[labels.astype(jnp.int32)] / 255.0


class FCNTask(Task):
  """FCN-32s / 16s / 8s / 4s as a task of the shared training loop."""

  sample_columns = ("image", "label", "prediction")
  curves = tuple((title, key, {}) for title, key in (("mean IU", "mean_iu"),
                                                     ("pixel accuracy", "pixel_acc")))
  batch_needs = {"label": "a source with label maps: voc:ROOT:SPLIT, cityscapes:ROOT:SPLIT, "
                          "ade20k:ROOT:SPLIT or seg_samples:SPLIT"}

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    self.classes = tuple(m.classes)
    self.model = FCN(num_classes=len(self.classes), variant=m.variant, widths=tuple(m.widths),
                     fc_width=m.fc_width, dropout_rate=m.dropout, dtype=jnp.dtype(m.dtype))
    if config.loss.reduction not in ("sum", "mean"):
      raise ValueError(f"loss.reduction is {config.loss.reduction!r}; use 'sum' or 'mean'")
    self.tx = make_optimizer(config.optim)

  def check_warm_start(self) -> None:
    check_initialisation(self.config)

  def init(self, key: jax.Array) -> TrainState:
    params = self.model.init(key, jnp.zeros(_INIT_SHAPE, jnp.float32))["params"]
    return TrainState.create(apply_fn=self.model.apply, params=params, tx=self.tx)

  def warm_start(self, state: TrainState) -> TrainState:
    """Pretrained values for a fresh run (module docstring); unchanged without any."""
    params = state.params
    vgg_init = self.config.model.vgg_init
    if vgg_init not in ("", RANDOM_INIT):
      vgg = convert_vgg.load_params(vgg_init, "caffe", "model.vgg_init")
      params = put_shared(params, vgg, "model.vgg_init", vgg_init)
    init_from = self.config.init_from
    if init_from:
      source = stage_params(init_from, self.config.model.variant)
      params = put_shared(params, source, "init_from", init_from)
    if params is state.params:
      return state
    return state.replace(params=params, opt_state=self.tx.init(params))

  def logits(self, params: Any, images: jax.Array) -> jax.Array:
    """Deterministic class scores: uint8 or [0, 1] images [B, H, W, 3] -> [B, H, W, K]."""
    if images.dtype == jnp.uint8:
      images = images.astype(jnp.float32) / 255.0
    return self.model.apply({"params": params}, images)

  def predict(self, params: Any, images: jax.Array) -> jax.Array:
    """Class ids [B, H, W] int32 (argmax of the scores)."""
    return jnp.argmax(self.logits(params, images), axis=-1).astype(jnp.int32)

  def train_step(self, state: TrainState, batch: Batch,
                 key: jax.Array) -> tuple[TrainState, Metrics]:
    images = batch["image"].astype(jnp.float32) / 255.0
    labels = batch["label"].astype(jnp.int32)
    keys = example_keys(key, state.step, batch["index"])
    reduction = self.config.loss.reduction

    def loss_fn(params):
      def one(image, k):
        return self.model.apply({"params": params}, image[None], train=True,
                                rngs={"dropout": k})[0]
      logits = jax.vmap(one)(images, keys)
      loss = losses.softmax_cross_entropy(logits, labels, reduction=reduction)
      if reduction == "sum":
        loss = loss / images.shape[0]
      return loss, logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    valid = labels != 255
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) & valid)
    pixel_acc = correct / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    return state.apply_gradients(grads=grads), {"loss": loss, "pixel_acc": pixel_acc}

  def eval_step(self, state: TrainState, batch: Batch, key: jax.Array) -> Metrics:
    """Per-example confusion matrices [B, K, K] (true x predicted, 255 ignored)."""
    del key  # deterministic
    pred = self.predict(state.params, batch["image"])
    return {"confusion": metrics.confusion_matrix(batch["label"], pred, len(self.classes))}

  def summarize_eval(self, sums: dict[str, np.ndarray], count: int) -> dict[str, Any]:
    """Pixel acc, mean acc, mean IU, fwIU of the split's summed confusion matrix."""
    del count  # the scores are ratios of pixel counts
    return metrics.segmentation_scores(sums["confusion"])

  def samples(self, state: TrainState, batch: Batch,
              key: jax.Array) -> dict[str, jax.Array]:
    del key
    return {"image": batch["image"].astype(jnp.float32) / 255.0,
            "label": colorize(batch["label"]),
            "prediction": colorize(self.predict(state.params, batch["image"]))}
