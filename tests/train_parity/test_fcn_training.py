"""FCN-8s trained by cpjax's segmentation task and by pytorch-fcn's trainer (rebuilt in PyTorch
below, network in `torch_fcn`) from the same weights on the same batches: the same loss at
every step, the same parameters after the steps, the upsampling layers untouched.

The reference trainer (pytorch-fcn `Trainer` with examples/voc/train_fcn8s.py), as facts: the
input is BGR on 0..255 minus the Caffe mean, computed in float64 and cast to float32; labels
255 become -1 and are ignored; the loss is the per-pixel cross-entropy SUMMED over the
labelled pixels of the batch, divided by the batch size; SGD with momentum 0.99 and weight
decay 5e-4 added to the gradient (PyTorch's coupled decay), the biases in a second group at
2x the learning rate without decay; the transposed convs are in no group (frozen); train()
mode, so Dropout2d after fc6 and fc7.

Setting: pytorch-fcn's FCN-8s layers with the trunk widths (4, 4, 8, 8, 8) and fc width 16
instead of VGG16's (the same network family at CPU size), 5 classes, random weights everywhere
(pytorch-fcn zero-initialises the score layers, which would leave every other gradient zero;
random transposed-conv kernels show that freezing keeps whatever is there), 32 px images with
ignored rows, batches of 2 (the reference uses 1; 2 exercises the division by the batch size),
three steps (momentum acts from the second). configs/fcn_voc.py:8s with those sizes and lr 1e-3
instead of 1e-14: at 1e-14 the moves (1e-14 x gradients of ~1e3) are below float32's
resolution of the weights and nothing would change; at 1e-3 the leaves move by 3e-6 to 5e-2 of
their norm, and in the slowest ones (conv5) the weight decay is a large part of the move.
Dropout: cpjax drops elements (the Caffe original's Dropout layer; pytorch-fcn's Dropout2d drops
channels, a documented choice of `cpjax.models.fcn`); cpjax's draws are replayed in PyTorch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from cpjax import tasks
from cpjax.models.vgg import CAFFE_MEAN_BGR

torch = pytest.importorskip("torch", reason="the reference trainer runs in PyTorch: "
                            "pip install -e '.[torch]'")
from train_parity import torch_fcn as tf  # noqa: E402  (after the torch check)
from train_parity import torch_train as tt  # noqa: E402

STEPS, BATCH, SIZE, CLASSES = 3, 2, 32, 5
WIDTHS, FC_WIDTH = (4, 4, 8, 8, 8), 16
LR = 1e-3
UPSCORES = tuple(name for name, _ in tf.UPSCORES)


def _batches(seed: int) -> list[dict[str, np.ndarray]]:
  """Random images and labels, the top 4 rows of every label map ignored (255)."""
  r = np.random.default_rng(seed)
  out = []
  for step in range(STEPS):
    label = r.integers(0, CLASSES, (BATCH, SIZE, SIZE)).astype(np.uint8)
    label[:, :4] = 255
    out.append({"image": r.integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8),
                "label": label, "index": np.arange(BATCH, dtype=np.int32) + step * BATCH})
  return out


def _reference_step(net: tf.FCN8s, optimizer, batch: dict[str, np.ndarray]) -> float:
  """One pytorch-fcn training iteration (module docstring)."""
  bgr = batch["image"][..., ::-1].astype(np.float64) - np.asarray(CAFFE_MEAN_BGR)
  x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2))).float()
  label = torch.from_numpy(batch["label"].astype(np.int64))
  label[label == 255] = -1
  log_p = torch.log_softmax(net(x), dim=1).permute(0, 2, 3, 1)
  valid = label >= 0
  loss = -log_p[valid].gather(1, label[valid][:, None]).sum() / len(x)
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  return loss.item()


@pytest.fixture(scope="module")
def runs():
  """(initial params, cpjax final params, cpjax losses, reference final params, its losses)."""
  config = load_config("fcn_voc", "8s")
  config.model.widths, config.model.fc_width = WIDTHS, FC_WIDTH
  config.model.classes = tuple(f"class{i}" for i in range(CLASSES))
  config.optim.lr = LR
  task = tasks.build(config)
  torch.manual_seed(0)
  net = tf.FCN8s(CLASSES, WIDTHS, FC_WIDTH)
  with torch.no_grad():
    for name, p in net.named_parameters():
      if name.endswith("bias"):
        p.normal_(0.0, 0.1)
  initial = tf.flax_params(tt.state_dict(net))
  params = jax.tree.map(jnp.asarray, initial)
  state = jax.eval_shape(task.init, jax.random.key(0)).replace(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=task.tx.init(params))
  batches = _batches(seed=0)
  recorder = tt.Recorder()

  def check(module):
    assert module.rate == config.model.dropout == 0.5

  with tt.record_dropout(recorder, check):
    step = jax.jit(task.train_step).lower(state, batches[0], jax.random.key(0)).compile()
  losses = []
  for batch in batches:
    state, metrics = step(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))

  # fc6's and fc7's dropout: one traced call site each, run per example (vmap), step by step.
  assert [len(slot) for slot in recorder.slots] == [STEPS * BATCH] * 2
  def replay(site):
    draws = iter(range(STEPS))
    return tt.Replay(lambda: np.concatenate(recorder.slots[site][next(draws) * BATCH:][:BATCH]))
  net.drop6, net.drop7 = replay(0), replay(1)
  o = config.optim
  named = list(net.named_parameters())
  optimizer = torch.optim.SGD(
      [{"params": [p for n, p in named if n.endswith("weight") and not n.startswith(UPSCORES)]},
       {"params": [p for n, p in named if n.endswith("bias")], "lr": LR * o.bias_lr_mult,
        "weight_decay": 0.0}],
      lr=LR, momentum=o.momentum, weight_decay=o.weight_decay)
  net.train()
  with tt.one_thread():
    ref_losses = [_reference_step(net, optimizer, batch) for batch in batches]
  return initial, state.params, losses, tf.flax_params(tt.state_dict(net)), ref_losses


def test_loss_matches_the_reference_at_every_step(runs):
  """Relative error < 1e-5 per step (measured at most 4e-7: float32 reduction order)."""
  _, _, losses, _, ref_losses = runs
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)


def test_parameters_match_the_reference_after_the_steps(runs):
  """Every trained leaf: ||ours - ref|| <= 1e-4 ||ref - initial|| + 2^-22 ||ref||. SGD passes
  gradient errors on linearly (float32 gradients agree to ~1e-6; measured at most 1.2e-5 of
  the move); the floor is the float32 storage of the weights (half an ulp per element)."""
  initial, ours, _, ref, _ = runs
  a, b, c = tt.flat(ours), tt.flat(ref), tt.flat(initial)
  bad = {path: float(np.linalg.norm(a[path] - b[path]) / np.linalg.norm(b[path] - c[path]))
         for path in b if not path.startswith(UPSCORES)
         and np.linalg.norm(a[path] - b[path]) > 1e-4 * np.linalg.norm(b[path] - c[path])
         + 2.0**-22 * np.linalg.norm(b[path])}
  assert not bad


def test_upsampling_layers_stay_frozen(runs):
  """upscore2, upscore_pool4 and upscore8 keep their initial kernels exactly."""
  initial, ours, _, _, _ = runs
  for name in UPSCORES:
    np.testing.assert_array_equal(ours[name]["kernel"], initial[name]["kernel"])
