"""Copy-and-Paste Networks' training losses (alignment, valid / visible-hole / invisible-hole L1,
perceptual, style, total variation) against the paper's formulas written in PyTorch
(`torch_video_losses`; no reference training code exists): the same loss values in cpjax's
`train_step`, and the same gradients w.r.t. the network's parameters.

Setting: configs/video_inpainting.py:tiny (32 px, 5 frames, the tiny CPN) with the paper
config's perceptual and style weights (0.05, 120) and a random VGG16 ('random'), random network
weights (the alignment regressor near the identity, so references overlap the target), two
steps on batches of 2 photos. The sequences (frames, holes, hole-filled inputs) are cpjax's
(`problems`, a function of the key), fed to both sides.

How the parameter gradients are compared: the PyTorch losses are evaluated on cpjax's network
outputs (decoder output Y, aligned references, their visibility, the context-matching mask C)
and differentiated w.r.t. Y and the aligned references; those gradients are pulled back to the
parameters through cpjax's network (`jax.vjp` of `VideoInpaintingTask.forward`) and compared
with the gradients cpjax's optimiser receives in `train_step` (recorded). The network's own
parity with the reference network is tests/convert/test_video_cpn.py's subject. C enters the
losses as a mask (no gradient) and the visibility maps are thresholded (no gradient).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import jit_unoptimized, load_config, numpy_params
from cpjax.tasks import video_inpainting

torch = pytest.importorskip("torch", reason="the reference losses run in PyTorch: "
                            "pip install -e '.[torch]'")
from train_parity import torch_train as tt  # noqa: E402  (after the torch check)
from train_parity import torch_video_losses as tv  # noqa: E402

STEPS, BATCH = 2, 2
TERMS = ("align", "valid", "hole_visible", "hole_invisible", "tv", "perceptual", "style")


def _recording(recorder: tt.Recorder) -> optax.GradientTransformation:
  """An optimiser stage that records the gradients it is given and passes them on."""
  def update(updates, state, params=None):
    del params
    recorder.record(updates, "grads")
    return updates, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _state(task: video_inpainting.VideoInpaintingTask) -> video_inpainting.VideoState:
  """Random parameters (NumPy-drawn), the alignment fc giving theta near the identity."""
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  params = numpy_params(shapes.params, seed=1)
  fc = params["align_regressor"]["fc"]
  fc["kernel"] = 0.01 * fc["kernel"]
  fc["bias"] = jnp.asarray([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]) + 0.3 * fc["bias"]
  return video_inpainting.VideoState.create(apply_fn=task.net.apply, params=params, tx=task.tx,
                                            vgg=numpy_params(shapes.vgg, seed=2))


def _nchw(x: np.ndarray) -> torch.Tensor:
  """[..., H, W, C] -> [..., C, H, W] float32 tensor."""
  return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x), -1, -3)))


def _nhwc(x: torch.Tensor) -> np.ndarray:
  return np.moveaxis(x.detach().numpy(), -3, -1)


def _reference(out: dict[str, np.ndarray], ex: dict[str, np.ndarray], vgg, config,
               target: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """The PyTorch losses on cpjax's network outputs: the terms, and the gradients of the
  weighted total w.r.t. the outputs (zeros for those the losses do not differentiate)."""
  pred = _nchw(out["pred"]).requires_grad_(True)
  aligned = _nchw(out["aligned"]).requires_grad_(True)
  data = {"gt": _nchw(ex["frames"][:, target]), "hole": _nchw(ex["holes"][:, target]),
          "target_in": _nchw(ex["inputs"][:, target])}
  weights = config.loss
  with tt.one_thread():
    values = tv.terms(pred, aligned, _nchw(out["aligned_visible"]), _nchw(out["c_mask"]), data,
                      _torch_tree(vgg), tuple(weights.vgg_layers))
    total = sum(weights[name] * value for name, value in values.items())
    total.backward()
  cotangent = {name: np.zeros_like(value) for name, value in out.items()}
  cotangent["pred"], cotangent["aligned"] = _nhwc(pred.grad), _nhwc(aligned.grad)
  return {name: v.item() for name, v in values.items()} | {"loss": total.item()}, cotangent


def _torch_tree(tree):
  if isinstance(tree, dict):
    return {k: _torch_tree(v) for k, v in tree.items()}
  return torch.from_numpy(np.array(tree))


@pytest.fixture(scope="module")
def runs():
  """Per step: cpjax's metrics, the PyTorch terms, cpjax's recorded gradients and the PyTorch
  loss gradients pulled back to the parameters."""
  config = load_config("video_inpainting", "tiny")
  paper = load_config("video_inpainting").loss
  config.loss.perceptual, config.loss.style = paper.perceptual, paper.style
  config.loss.vgg_weights = "random"
  task = video_inpainting.VideoInpaintingTask(config)
  recorder = tt.Recorder()
  task.tx = optax.chain(_recording(recorder), task.tx)
  state = _state(task)
  key = jax.random.key(4)
  batches = [{"image": tt.photos(BATCH, config.data.image_size, k * BATCH),
              "index": np.arange(BATCH, dtype=np.int32) + k * BATCH} for k in range(STEPS)]
  step = jit_unoptimized(task.train_step).lower(state, batches[0], key).compile()
  problems, forward = jax.jit(task.problems), jit_unoptimized(task.forward)

  @jit_unoptimized
  def pull_back(params, ex, cotangent):
    _, vjp = jax.vjp(lambda p: task.forward(p, ex), params)
    return vjp(cotangent)[0]

  out = []
  for k, batch in enumerate(batches):
    ex = problems(batch, key, jnp.int32(k))
    outputs = jax.tree.map(np.array, forward(state.params, ex))
    terms, cotangent = _reference(outputs, jax.tree.map(np.array, ex),
                                  jax.device_get(state.vgg), config, task.target)
    pulled = pull_back(state.params, ex, cotangent)
    state, metrics = step(state, batch, key)
    out.append({"ours": {n: float(v) for n, v in metrics.items()}, "theirs": terms,
                "pulled": jax.tree.map(np.array, pulled)})
  (grads,) = recorder.named("grads")
  for k, record in enumerate(out):
    record["grads"] = grads[k]
  return out


def test_loss_terms_match_the_paper_at_every_step(runs):
  """Each term and the weighted total in cpjax's train_step metrics equal the formulas' values
  within 1e-5 (measured 2e-7: float32 reduction order)."""
  for record in runs:
    for name in TERMS + ("loss",):
      np.testing.assert_allclose(record["ours"][name], record["theirs"][name], rtol=1e-5,
                                 err_msg=name)


def test_parameter_gradients_match_at_every_step(runs):
  """The gradients cpjax's optimiser receives equal the formulas' gradients pulled back through
  the network: per leaf max error < 1e-4 of the leaf's largest gradient (measured 1.2e-6)."""
  for record in runs:
    ours, theirs = tt.flat(record["grads"]), tt.flat(record["pulled"])
    assert sorted(ours) == sorted(theirs)
    error = {p: float(np.max(np.abs(ours[p] - theirs[p])) / np.max(np.abs(theirs[p])))
             for p in theirs}
    bad = {p: e for p, e in error.items() if e > 1e-4}
    assert not bad
