r"""cpjax beside the PyTorch reference rebuilds of its tests, on the same CPU, in one run.

  python -m experiments.benchmarks.vs_torch [--workloads=idih256_train,fcn8s_infer,...] \
      [--iters=5] [--warmup=1] [--torch_threads=2] [--out=rows.jsonl]

Every workload builds cpjax's jitted function and the PyTorch network the conversion and
training-parity tests compare it with (tests/convert, tests/train_parity), with the same
weights (the PyTorch ones converted by `cpjax.convert`) and the same inputs, then calls the two
alternately (cpjax, torch, cpjax, torch, ...) so that both see the same machine load. One JSON
row per workload: the median wall and process-CPU seconds of each, their ratio cpjax / torch,
the target ratio (inference <= 0.8, train steps and the loss gradient <= 1.0), XLA's FLOP
count of the call and cpjax's achieved GFLOP/s, the load average, and the compile time: cold
(trace, lower and compile with an empty persistent cache; the run uses a fresh temporary cache
directory) and warm (the same after `jax.clear_caches()`, the executable read back from that
cache, as a second process would).

Workloads (`WORKLOADS`; default: all but the HRNet18 / HRNet32 train steps, which take 2-3
minutes each on a 2-core CPU, about 1 of them compiling):
  idih256_train, idih256_infer              iDIH at 256 px. Train: batch 4 of real pairs,
  hrnet18s_train, hrnet18s_infer            FN-MSE (A_min 100) + Adam with the HRNet trunk at
  hrnet18_train, hrnet18_infer              0.1x lr, BatchNorm in train mode (saic-vul's trainer
  hrnet32_train, hrnet32_infer              rebuilt in tests/train_parity/torch_harmonization.py
                                            against cpjax's task train_step). Inference: batch 1,
                                            eval mode.
  dih512_infer                              DIH (the Caffe deploy_512 net, both decoders) at
                                            512 px against the PyTorch interpreter of its Caffe
                                            layers (tests/convert/caffe_dih.py) in float32. No
                                            train step: the tests rebuild Caffe's forward only.
  cpn_infer                                 Copy-and-Paste Networks on one 240x424 frame with 10
                                            references (their alignment features included).
  fcn8s_infer, fcn8s_train                  FCN-8s on a 500x375 image: inference, and a train
                                            step at batch 1 (pytorch-fcn's trainer: summed CE,
                                            SGD momentum 0.99, frozen upsampling).
  vgg16_loss                                VGG16 perceptual + style loss (pool1-3, the video
                                            task's) and its gradient with respect to the image,
                                            2 images at 256 px (torchvision's VGG16 layout).
  matmul                                    a 2048^3 float32 matrix product: the ceiling.
  copy_paste_train, copy_paste_generate     the smart copy-paste generator and critic (no
                                            reference code exists): GFLOP/s only, as a share of
                                            the matmul ceiling measured in the same run.

The PyTorch side runs with `torch.set_num_threads(--torch_threads)` and gradients only where
the reference has them. The machine's other load moves both columns: compare the ratios, and
prefer runs whose rows show a low load average.
"""
from __future__ import annotations

import atexit
import dataclasses
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cpjax import compilation
from experiments.benchmarks import harness, xla_profile

TESTS = pathlib.Path(__file__).resolve().parents[2] / "tests"
TARGETS = {"train": 1.0, "inference": 0.8}
HRNET_WIDTHS = {"hrnet18s": "w18s", "hrnet18": "w18", "hrnet32": "w32"}
SLOW = ("hrnet18_train", "hrnet32_train")


@dataclasses.dataclass
class Workload:
  """One side-by-side measurement.

  Attributes:
    kind: 'train', 'inference' (the targets of `TARGETS`) or 'ceiling'.
    jax_fn: a `jax.jit` function of `jax_args`.
    jax_args: its arguments.
    torch_call: the reference's call (None: cpjax alone).
    chain: feed cpjax's first output back as its first argument (donated train states).
    info: shapes and settings for the row.
  """
  kind: str
  jax_fn: Callable[..., Any]
  jax_args: tuple[Any, ...]
  torch_call: Callable[[], Any] | None
  chain: bool = False
  info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _load_config(name: str, variant: str = ""):
  from cpjax.train import defaults  # pylint: disable=g-import-not-at-top
  return defaults.load_sibling(str(TESTS.parent / "configs" / "x.py"), name).get_config(variant)


def _device_tree(tree: Any) -> Any:
  return jax.tree.map(jnp.asarray, tree)


# ------------------------------------------------------------------------------ harmonisation
def _harmonization_reference(model: str):
  """(reference PyTorch network, its converted variables, cpjax config) of 'idih' or a width."""
  from cpjax import convert  # pylint: disable=g-import-not-at-top
  from convert import torch_iharm as ti  # pylint: disable=g-import-not-at-top
  if model == "idih256":
    net = ti.build(ti.IDIH, seed=0)
    config = _load_config("iharmony4_idih")
  else:
    width = HRNET_WIDTHS[model]
    net = ti.build(ti.HRNetIDIH, width, seed=0)
    config = _load_config("iharmony4_idih_hrnet", width)
  variables = convert.convert(f"{model}_idih256" if model != "idih256" else model,
                              ti.state_dict(net)).variables
  return net, variables, config


def harmonization_train(model: str, batch_size: int = 4, size: int = 256) -> Workload:
  """cpjax's harmonisation train_step beside saic-vul's training step (module docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax.tasks import harmonization  # pylint: disable=g-import-not-at-top
  from train_parity import torch_harmonization as th  # pylint: disable=g-import-not-at-top
  from train_parity import torch_train as tt  # pylint: disable=g-import-not-at-top
  net, variables, config = _harmonization_reference(model)
  bench = harness.task_bench(config, size, batch_size)
  task = bench.task
  params = _device_tree(variables["params"])
  state = harmonization.HarmonizationState.create(
      apply_fn=task.model.apply, params=params, tx=task.tx,
      batch_stats=_device_tree(variables["batch_stats"]))
  batch = th.real_pairs(1, batch_size, size, seed=0)[0]
  o = config.optim
  net.train()
  optimizer = torch.optim.Adam(th.lr_groups(net, o.lr, o.backbone_lr_mult),
                               betas=(o.b1, o.b2), eps=o.eps)
  image = th._normalize(batch["image"], torch.float32)  # pylint: disable=protected-access
  real = th._normalize(batch["real"], torch.float32)  # pylint: disable=protected-access
  mask = tt.nchw(batch["mask"].astype(np.float32) / 255.0)

  def torch_step():
    loss = th.fn_mse(net(image, mask), real, mask, config.loss.min_area)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss

  return Workload("train", bench.train_step, (state, batch, jax.random.key(0)), torch_step,
                  chain=True, info={"batch": batch_size, "size": size})


def harmonization_infer(model: str, size: int = 256) -> Workload:
  """The network in eval mode on one normalised image and mask, both sides."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax.tasks import harmonization  # pylint: disable=g-import-not-at-top
  from convert import torch_iharm as ti  # pylint: disable=g-import-not-at-top
  net, variables, config = _harmonization_reference(model)
  module = harmonization.build_model(config.model)
  rng = np.random.default_rng(0)
  image = rng.normal(size=(1, size, size, 3)).astype(np.float32)
  mask = np.zeros((1, size, size, 1), np.float32)
  mask[:, size // 4:3 * size // 4, size // 3:5 * size // 6] = 1.0
  fn = jax.jit(lambda v, x, m: module.apply(v, x, m, train=False))
  x_t, m_t = ti.nchw(image), ti.nchw(mask)

  def torch_call():
    with torch.no_grad():
      return net(x_t, m_t)

  return Workload("inference", fn, (_device_tree(variables), image, mask), torch_call,
                  info={"batch": 1, "size": size})


def dih512_infer() -> Workload:
  """The converted Caffe DIH beside the PyTorch interpreter of its layers, float32, 512 px."""
  from cpjax import convert  # pylint: disable=g-import-not-at-top
  from cpjax.convert import caffe  # pylint: disable=g-import-not-at-top
  from cpjax.models import dih  # pylint: disable=g-import-not-at-top
  from convert import caffe_dih as cd  # pylint: disable=g-import-not-at-top
  layers = cd.dih_train_net(seed=0)
  variables = convert.convert("dih512", caffe.Net(caffe.parse_net(cd.encode_net(layers))))
  layers32 = [dataclasses.replace(l, blobs=[np.asarray(b, np.float32) for b in l.blobs])
              for l in layers]
  rng = np.random.default_rng(1)
  image = rng.uniform(size=(cd.SIZE, cd.SIZE, 3))
  mask = np.zeros((cd.SIZE, cd.SIZE))
  mask[100:300, 150:400] = 1.0
  inputs = {k: np.asarray(v, np.float32) for k, v in cd.caffe_inputs(image, mask).items()}
  nhwc = {k: np.transpose(v, (0, 2, 3, 1)) for k, v in inputs.items()}
  module = dih.DIH()
  fn = jax.jit(lambda v, x, m: module.apply(v, x, m))
  return Workload("inference", fn, (_device_tree(variables.variables), nhwc["data"], nhwc["mask"]),
                  lambda: cd.caffe_forward(layers32, inputs, np.float32),
                  info={"batch": 1, "size": cd.SIZE})


# ------------------------------------------------------------------------------ video
def cpn_infer(references: int = 10, height: int = 240, width: int = 424) -> Workload:
  """CPNet on one frame with `references` references (alignment features included)."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax import convert  # pylint: disable=g-import-not-at-top
  from cpjax.models.video_cpn import CPNet  # pylint: disable=g-import-not-at-top
  from convert.test_video_cpn import CPNet as TorchCPNet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = TorchCPNet().eval()
  with torch.no_grad():   # theta near the identity, as trained weights give
    net.A_Regressor.fc.weight.normal_(0.0, 2e-3)
    net.A_Regressor.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
  variables = convert.convert("cpn_video", {k: v.numpy() for k, v in net.state_dict().items()})
  rng = np.random.default_rng(0)
  t = references
  frames = rng.uniform(size=(1, t + 1, height, width, 3)).astype(np.float32)
  holes = np.zeros((1, t + 1, height, width, 1), np.float32)
  for i in range(t + 1):
    y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
    holes[0, i, y:y + height // 3, x:x + width // 3] = 1.0
  refs, ref_holes, frame, hole = frames[:, 1:], holes[:, 1:], frames[:, 0], holes[:, 0]
  model = CPNet()

  def forward(variables, refs, ref_holes, frame, hole):
    feats = model.apply(variables, refs.reshape(t, height, width, 3),
                        ref_holes.reshape(t, height, width, 1),
                        method=CPNet.encode_alignment)
    return model.apply(variables, feats[None], refs, ref_holes, frame, hole)

  ncthw = lambda x: torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))  # noqa: E731
  torch_args = (ncthw(refs), ncthw(ref_holes), ncthw(frame), ncthw(hole))

  def torch_call():
    with torch.no_grad():
      return net(*torch_args)

  return Workload("inference", jax.jit(forward),
                  (_device_tree(variables.variables), refs, ref_holes, frame, hole), torch_call,
                  info={"batch": 1, "references": t, "size": [height, width]})


# ------------------------------------------------------------------------------ segmentation
FCN_SIZE = (375, 500)   # a typical PASCAL VOC image, H x W
FCN_CLASSES = 21


def _caffe_nchw(image: np.ndarray):
  """RGB [B, H, W, 3] in [0, 1] -> pytorch-fcn's input: BGR 0..255 minus the mean, NCHW."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax.models.vgg import CAFFE_MEAN_BGR  # pylint: disable=g-import-not-at-top
  bgr = image[..., ::-1] * 255.0 - np.asarray(CAFFE_MEAN_BGR, np.float32)
  return torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2), np.float32))


def fcn8s_infer() -> Workload:
  """FCN-8s (pytorch-fcn's network, random weights of the conversion test) on one image."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax import convert  # pylint: disable=g-import-not-at-top
  from cpjax.models.fcn import FCN  # pylint: disable=g-import-not-at-top
  from convert import test_fcn  # pylint: disable=g-import-not-at-top
  weights = test_fcn._random_weights(seed=0)  # pylint: disable=protected-access
  net = test_fcn.TorchFCN("8s", FCN_CLASSES)
  net.load_state_dict({k: torch.from_numpy(weights[k]) for k in net.state_dict()})
  net.eval()
  variables = convert.convert("fcn8s", {k: weights[k] for k in net.state_dict()}).variables
  image = np.random.default_rng(0).uniform(size=(1, *FCN_SIZE, 3)).astype(np.float32)
  model = FCN(num_classes=FCN_CLASSES, variant="8s")
  x = _caffe_nchw(image)

  def torch_call():
    with torch.no_grad():
      return net(x)

  return Workload("inference", jax.jit(model.apply), (_device_tree(variables), image),
                  torch_call, info={"batch": 1, "size": list(FCN_SIZE)})


def fcn8s_train() -> Workload:
  """cpjax's segmentation train_step beside pytorch-fcn's training iteration, batch 1."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax.models.vgg import WIDTHS  # pylint: disable=g-import-not-at-top
  from cpjax.tasks.base import TrainState  # pylint: disable=g-import-not-at-top
  from train_parity import test_fcn_training as tft  # pylint: disable=g-import-not-at-top
  from train_parity import torch_fcn as tf  # pylint: disable=g-import-not-at-top
  from train_parity import torch_train as tt  # pylint: disable=g-import-not-at-top
  config = _load_config("fcn_voc", "8s")
  bench = harness.task_bench(config, None, 1)
  torch.manual_seed(0)
  net = tf.FCN8s(FCN_CLASSES, WIDTHS, 4096)
  params = _device_tree(tf.flax_params(tt.state_dict(net)))
  state = TrainState.create(apply_fn=bench.task.model.apply, params=params, tx=bench.task.tx)
  o = config.optim
  named = list(net.named_parameters())
  frozen = tuple(name for name, _ in tf.UPSCORES)
  optimizer = torch.optim.SGD(   # pytorch-fcn's groups, as the training-parity test
      [{"params": [p for n, p in named if n.endswith("weight") and not n.startswith(frozen)]},
       {"params": [p for n, p in named if n.endswith("bias")], "lr": o.lr * o.bias_lr_mult,
        "weight_decay": 0.0}],
      lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
  net.train()
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (1, *FCN_SIZE, 3), dtype=np.uint8),
           "label": rng.integers(0, FCN_CLASSES, (1, *FCN_SIZE)).astype(np.uint8),
           "index": np.zeros(1, np.int32)}
  return Workload("train", bench.train_step, (state, batch, jax.random.key(0)),
                  lambda: tft._reference_step(net, optimizer, batch),  # pylint: disable=protected-access
                  chain=True, info={"batch": 1, "size": list(FCN_SIZE)})


# ------------------------------------------------------------------------------ VGG16 loss
def vgg16_loss(batch_size: int = 2, size: int = 256) -> Workload:
  """Perceptual + style loss of the video task's layers and d loss / d image, both sides."""
  import torch  # pylint: disable=g-import-not-at-top
  from cpjax import convert, losses  # pylint: disable=g-import-not-at-top
  from cpjax.models.vgg import VGG16  # pylint: disable=g-import-not-at-top
  from cpjax.ops.color import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize  # pylint: disable=g-import-not-at-top
  from convert import test_vgg  # pylint: disable=g-import-not-at-top
  from train_parity import torch_video_losses as tvl  # pylint: disable=g-import-not-at-top
  layers = tuple(_load_config("video_inpainting").loss.vgg_layers)
  torch.manual_seed(0)
  reference = test_vgg.torchvision_vgg16()
  vgg = convert.convert("vgg16_torchvision", {k: v.numpy() for k, v in
                                              reference.state_dict().items()})
  vgg = _device_tree(vgg.variables["params"]["vgg"])
  rng = np.random.default_rng(0)
  pred, gt = (rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32) for _ in "ab")

  def loss(pred, vgg, gt):
    features = lambda x: VGG16().apply({"params": vgg}, imagenet_normalize(x))  # noqa: E731
    f_pred, f_gt = features(pred), jax.lax.stop_gradient(features(gt))
    return losses.perceptual_loss(f_pred, f_gt, layers) + losses.style_loss(f_pred, f_gt, layers)

  last = max(int(name[4:]) for name in layers)   # 'pool3' -> run the features up to pool 3
  pools = [i for i, l in enumerate(reference.features) if isinstance(l, torch.nn.MaxPool2d)]
  trunk = reference.features[:pools[last - 1] + 1].requires_grad_(False)
  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
  pred_t = torch.from_numpy(pred.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
  gt_t = torch.from_numpy(gt.transpose(0, 3, 1, 2).copy())

  def features(x):
    out, h = {}, (x - mean) / std
    for i, layer in enumerate(trunk):
      h = layer(h)
      if i in pools:
        out[f"pool{pools.index(i) + 1}"] = h
    return out

  def torch_call():
    pred_t.grad = None
    f_pred = features(pred_t)
    with torch.no_grad():
      f_gt = features(gt_t)
    value = sum((f_pred[p] - f_gt[p]).abs().mean() for p in layers)
    value = value + sum((tvl.gram(f_pred[p]) - tvl.gram(f_gt[p])).abs().mean() for p in layers)
    value.backward()
    return pred_t.grad

  return Workload("train", jax.jit(jax.value_and_grad(loss)), (pred, vgg, gt), torch_call,
                  info={"batch": batch_size, "size": size, "layers": list(layers)})


# ------------------------------------------------------------------------------ ceiling, GANs
MATMUL_SIZE = 2048


def matmul() -> Workload:
  """A MATMUL_SIZE^3 float32 product, both sides: the achievable GFLOP/s."""
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a, b = (rng.normal(size=(MATMUL_SIZE, MATMUL_SIZE)).astype(np.float32) for _ in "ab")
  a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
  return Workload("ceiling", jax.jit(jnp.dot), (a, b), lambda: torch.mm(a_t, b_t),
                  info={"size": MATMUL_SIZE})


def _copy_paste_bench(batch_size: int, size: int, variant: str):
  from cpjax.train import partitioning  # pylint: disable=g-import-not-at-top
  bench = harness.task_bench(_load_config("faces", variant), size, batch_size)
  rng = np.random.default_rng(0)
  batch = partitioning.global_batch(
      {"image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
       "index": np.arange(batch_size, dtype=np.int32)}, bench.mesh)
  return bench, batch


def copy_paste_train(batch_size: int = 4, size: int = 256, variant: str = "") -> Workload:
  """The copy-paste train step (critic with gradient penalty, then generator), cpjax alone;
  `variant` picks a variant of configs/faces.py ('tiny' for tests)."""
  bench, batch = _copy_paste_bench(batch_size, size, variant)
  key = jax.random.key(0)
  return Workload("train", bench.train_step, (bench.init(), batch, key), None, chain=True,
                  info={"batch": batch_size, "size": size})


def copy_paste_generate(batch_size: int = 1, size: int = 256, variant: str = "") -> Workload:
  """Copy-paste problems and the generator's output, cpjax alone (`variant` as above)."""
  bench, batch = _copy_paste_bench(batch_size, size, variant)
  task, key = bench.task, jax.random.key(0)

  def generate(state, batch, key):
    ex = task.problems(batch, key, jnp.zeros((), jnp.int32))
    return task.generate(state.generator, ex, key)

  return Workload("inference", jax.jit(generate), (bench.init(), batch, key), None,
                  info={"batch": batch_size, "size": size})


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "matmul": matmul,
    "idih256_train": lambda: harmonization_train("idih256"),
    "idih256_infer": lambda: harmonization_infer("idih256"),
    **{f"{m}_train": (lambda m=m: harmonization_train(m)) for m in HRNET_WIDTHS},
    **{f"{m}_infer": (lambda m=m: harmonization_infer(m)) for m in HRNET_WIDTHS},
    "dih512_infer": dih512_infer,
    "cpn_infer": cpn_infer,
    "fcn8s_infer": fcn8s_infer,
    "fcn8s_train": fcn8s_train,
    "vgg16_loss": vgg16_loss,
    "copy_paste_train": copy_paste_train,
    "copy_paste_generate": copy_paste_generate,
}
DEFAULT = tuple(name for name in WORKLOADS if name not in SLOW)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so importing is free)."""
  flags.DEFINE_list(
      "workloads", list(DEFAULT),
      f"Workloads to run, in order: {', '.join(WORKLOADS)}. Default: all but "
      f"{', '.join(SLOW)} (2-3 minutes each on a 2-core CPU, about 1 of them compiling; name "
      "them to run them). The copy-paste rows need the matmul ceiling: it is run first when missing.")
  flags.DEFINE_integer("iters", 5, "Timed calls of each side (medians are reported).")
  flags.DEFINE_integer("warmup", 1, "Untimed calls of each side first.")
  flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads.")
  flags.DEFINE_string("out", None, "Append the JSON rows to this file.")
  flags.DEFINE_bool("profile", False, "Add cpjax's per-op profile to each row: time per op "
                    "category and the longest ops (xla_profile.top_ops).")


# ------------------------------------------------------------------------------ measurement
def _flops(compiled: Any) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get("flops", 0.0))


def _compile(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, float, float]:
  """(executable, seconds to trace and lower, seconds to compile)."""
  start = time.perf_counter()
  lowered = fn.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  return compiled, lowered_at - start, time.perf_counter() - lowered_at


def _timed(call: Callable[[], Any]) -> tuple[float, float]:
  """(wall seconds, process CPU seconds) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  call()
  return time.perf_counter() - wall, time.process_time() - cpu


def compare(w: Workload, iters: int, warmup: int, profile: bool = False) -> dict[str, Any]:
  """Compiles cpjax's side (cold, then warm from the persistent cache), then times the two
  sides alternately. Returns the row's measurements (module docstring); with `profile`, also
  cpjax's per-op profile ('profile': `xla_profile.top_ops` of two calls)."""
  compiled, lower_s, compile_s = _compile(w.jax_fn, w.jax_args)
  jax.clear_caches()
  _, warm_lower_s, warm_compile_s = _compile(w.jax_fn, w.jax_args)
  args = list(w.jax_args)

  def jax_call():
    out = compiled(*args)
    jax.block_until_ready(out)
    if w.chain:
      args[0] = out[0]

  times: dict[str, list[tuple[float, float]]] = {"cpjax": [], "torch": []}
  load = os.getloadavg()[0]
  for i in range(warmup + iters):
    for side, call in (("cpjax", jax_call), ("torch", w.torch_call)):
      if call is not None:
        t = _timed(call)
        if i >= warmup:
          times[side].append(t)
  flops = _flops(compiled)
  row: dict[str, Any] = {"kind": w.kind, **w.info, "gflops_per_call": flops / 1e9,
                         "compile_cold_seconds": lower_s + compile_s,
                         "lower_seconds": lower_s,
                         "compile_warm_seconds": warm_lower_s + warm_compile_s}
  for side, samples in times.items():
    if samples:
      row[f"{side}_seconds"] = statistics.median(t for t, _ in samples)
      row[f"{side}_cpu_seconds"] = statistics.median(c for _, c in samples)
      row[f"{side}_gflops_per_sec"] = flops / row[f"{side}_seconds"] / 1e9
  if times["torch"]:
    row["ratio"] = row["cpjax_seconds"] / row["torch_seconds"]
    row["cpu_ratio"] = row["cpjax_cpu_seconds"] / row["torch_cpu_seconds"]
    if w.kind in TARGETS:
      row["target"] = TARGETS[w.kind]
      row["meets_target"] = row["ratio"] <= TARGETS[w.kind]
  row["load_average"] = [load, os.getloadavg()[0]]
  if profile:
    row["profile"] = xla_profile.top_ops(compiled, args, count=8, calls=2, chain=w.chain)
  return row


def main(argv):
  del argv
  f = flags.FLAGS
  unknown = [name for name in f.workloads if name not in WORKLOADS]
  if unknown:
    raise app.UsageError(f"unknown workloads {', '.join(unknown)}; known: "
                         f"{', '.join(WORKLOADS)}")
  names = list(f.workloads)
  if any(n.startswith("copy_paste") for n in names) and "matmul" not in names:
    names.insert(0, "matmul")
  cache = compilation.setup(tempfile.mkdtemp(prefix="cpjax_vs_torch_cache_"))
  atexit.register(shutil.rmtree, cache, ignore_errors=True)   # only this run's cold/warm compiles
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.devices()   # JAX's backend starts before the test helpers are imported (their conftest)
  sys.path.insert(0, str(TESTS))
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(f.torch_threads)
  env = {**harness.environment(), "torch": torch.__version__,
         "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
         "xla_flags": os.environ.get("XLA_FLAGS", ""), "compilation_cache": str(cache)}
  ceiling = None
  for name in names:
    row = {"benchmark": "vs_torch", "workload": name,
           **compare(WORKLOADS[name](), f.iters, f.warmup, f.profile), **env}
    if name == "matmul":
      ceiling = row["cpjax_gflops_per_sec"]
    elif "torch_seconds" not in row and ceiling:
      row["share_of_matmul_ceiling"] = row["cpjax_gflops_per_sec"] / ceiling
    harness.write_row(f.out, row)


if __name__ == "__main__":
  define_flags()
  app.run(main)
