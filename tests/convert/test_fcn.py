"""pytorch-fcn FCN-32s / 16s / 8s checkpoints load into cpjax's FCN with numerical parity.

The PyTorch FCN below is written from pytorch-fcn's published layer specs: conv1_1
padded by 100, 2x2 max-pools in ceil mode, fc6 a 7x7 valid conv, transposed-conv upsampling
without bias, skip scores cropped at 5 (pool4) and 9 (pool3), final crops 19 / 27 / 31, and
pytorch-fcn's layer names. It is filled with random weights (random transposed-conv kernels
too, so a missing flip or in/out swap shows) and evaluated in eval mode on Caffe-preprocessed
input; cpjax's FCN gets RGB in [0, 1] and preprocesses itself.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import load_config, numpy_params
from cpjax import convert, tasks
from cpjax.convert import ConversionError, checkpoint
from cpjax.models.fcn import FCN
from cpjax.models.vgg import CAFFE_MEAN_BGR, CONV_NAMES, CONVS_PER_BLOCK, WIDTHS

torch = pytest.importorskip("torch", reason="PyTorch is needed for conversion parity: "
                            "pip install -e '.[torch]'")
nn = torch.nn

_CLASSES = 21
# Score layers and upsampling (name, kernel, stride) of each variant, as pytorch-fcn.
_UPSCORES = {"32s": (("upscore", 64, 32),),
             "16s": (("upscore2", 4, 2), ("upscore16", 32, 16)),
             "8s": (("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8))}
_SKIPS = {"32s": (), "16s": (("score_pool4", 512),),
          "8s": (("score_pool4", 512), ("score_pool3", 256))}


class TorchFCN(nn.Module):
  """pytorch-fcn's FCN32s / FCN16s / FCN8s (same state-dict keys and forward)."""

  def __init__(self, variant: str, n_class: int):
    super().__init__()
    self.variant = variant
    channels = 3
    for name, width in zip(CONV_NAMES, [w for n, w in zip(CONVS_PER_BLOCK, WIDTHS)
                                        for _ in range(n)]):
      setattr(self, name, nn.Conv2d(channels, width, 3, padding=100 if name == "conv1_1" else 1))
      channels = width
    self.fc6 = nn.Conv2d(512, 4096, 7)
    self.fc7 = nn.Conv2d(4096, 4096, 1)
    self.score_fr = nn.Conv2d(4096, n_class, 1)
    for name, width in _SKIPS[variant]:
      setattr(self, name, nn.Conv2d(width, n_class, 1))
    for name, kernel, stride in _UPSCORES[variant]:
      setattr(self, name, nn.ConvTranspose2d(n_class, n_class, kernel, stride=stride, bias=False))

  def forward(self, x):
    pools, h = {}, x
    for block in range(1, 6):
      for i in range(1, CONVS_PER_BLOCK[block - 1] + 1):
        h = torch.relu(getattr(self, f"conv{block}_{i}")(h))
      h = nn.functional.max_pool2d(h, 2, stride=2, ceil_mode=True)
      pools[block] = h
    h = torch.relu(self.fc7(torch.relu(self.fc6(h))))   # dropout: identity in eval mode
    h = self.score_fr(h)
    if self.variant == "32s":
      return _crop(self.upscore(h), 19, x)
    h = self.upscore2(h)
    s4 = self.score_pool4(pools[4])
    h = h + s4[:, :, 5:5 + h.shape[2], 5:5 + h.shape[3]]
    if self.variant == "16s":
      return _crop(self.upscore16(h), 27, x)
    h = self.upscore_pool4(h)
    s3 = self.score_pool3(pools[3])
    h = h + s3[:, :, 9:9 + h.shape[2], 9:9 + h.shape[3]]
    return _crop(self.upscore8(h), 31, x)


def _crop(h, offset: int, x):
  return h[:, :, offset:offset + x.shape[2], offset:offset + x.shape[3]]


def _random_weights(seed: int) -> dict[str, np.ndarray]:
  """He-normal weights (random transposed-conv kernels too, not bilinear) and random biases for
  every key of FCN-32s, 16s and 8s (their common layers share values)."""
  rng = np.random.default_rng(seed)
  with torch.device("meta"):
    shapes = {k: tuple(v.shape) for variant in _UPSCORES
              for k, v in TorchFCN(variant, _CLASSES).state_dict().items()}
  out = {}
  for name, shape in shapes.items():
    if name.endswith("bias"):
      out[name] = 0.1 * rng.standard_normal(shape, dtype=np.float32)
    else:
      fan_in = np.prod(shape[1:]) if "upscore" not in name else shape[0] * (shape[2] // 2) ** 2
      out[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
  return out


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
  return _random_weights(seed=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
  """[1, 12, 20, 3] RGB in [0, 1] (not square, so an H/W swap shows)."""
  return np.random.default_rng(1).uniform(size=(1, 12, 20, 3)).astype(np.float32)


def _torch_scores(module: nn.Module, image: np.ndarray) -> np.ndarray:
  """pytorch-fcn's input: BGR on 0..255 minus the Caffe mean, NCHW; scores back to NHWC."""
  bgr = image[..., ::-1] * 255.0 - np.asarray(CAFFE_MEAN_BGR, np.float32)
  x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)))
  with torch.no_grad():
    return module.eval()(x).numpy().transpose(0, 2, 3, 1)


def _relative_error(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))


@pytest.mark.parametrize("model", ["fcn32s", "fcn16s", "fcn8s"])
def test_fcn_checkpoint_matches_pytorch_fcn(model, weights, image):
  """Converted FCN weights give pytorch-fcn's scores: max relative error < 1e-4."""
  variant = model[3:]
  with torch.device("meta"):
    torch_fcn = TorchFCN(variant, _CLASSES)
  state = {k: torch.from_numpy(weights[k]) for k in torch_fcn.state_dict()}
  torch_fcn.load_state_dict(state, assign=True)
  want = _torch_scores(torch_fcn, image)
  converted = convert.convert(model, {k: v.numpy() for k, v in state.items()})
  assert converted.module_config["num_classes"] == _CLASSES
  assert converted.module_config["variant"] == variant
  got = FCN(num_classes=_CLASSES, variant=variant).apply(converted.variables, image)
  assert got.shape == want.shape == (1, 12, 20, _CLASSES)
  assert _relative_error(got, want) < 1e-4


def _zeros(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  return {k: np.zeros(s, np.float32) for k, s in shapes.items()}


def _shapes(variant: str, n_class: int) -> dict[str, tuple[int, ...]]:
  return {k: tuple(v.shape) for k, v in TorchFCN(variant, n_class).state_dict().items()}


@pytest.fixture(scope="module")
def fcn16s_shapes() -> dict[str, tuple[int, ...]]:
  with torch.device("meta"):
    return _shapes("16s", 5)


def test_wrong_variant_is_an_error_that_names_the_keys(fcn16s_shapes):
  """An FCN-16s state dict is neither an FCN-32s (unused keys listed) nor an FCN-8s (the missing
  key named); a custom class count passes through."""
  with pytest.raises(ConversionError, match="no place in the target module: score_pool4.bias, "
                     "score_pool4.weight, upscore16.weight, upscore2.weight"):
    convert.convert("fcn32s", _zeros(dict(fcn16s_shapes, **{"upscore.weight": (5, 5, 64, 64)})))
  with pytest.raises(ConversionError, match="no key 'score_pool3.weight'"):
    convert.convert("fcn8s", _zeros(fcn16s_shapes))
  assert convert.convert("fcn16s", _zeros(fcn16s_shapes)).module_config["num_classes"] == 5


def test_misshaped_upscore_is_listed(fcn16s_shapes):
  """A transposed conv of the wrong size is reported with both shapes."""
  shapes = dict(fcn16s_shapes, **{"upscore16.weight": (5, 5, 16, 16)})
  with pytest.raises(ConversionError, match=r"upscore16/kernel \(16, 16, 5, 5\) \(module wants "
                                            r"\(32, 32, 5, 5\)\)"):
    convert.convert("fcn16s", _zeros(shapes))


def _tiny_task_and_state(variant: str, **overrides):
  """The FCN task of configs/fcn_voc.py:tiny and a fresh state with random NumPy parameters."""
  config = load_config("fcn_voc", "tiny")
  config.update_from_flattened_dict({"model.variant": variant, **overrides})
  task = tasks.build(config)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  params = numpy_params(shapes.params, seed=len(variant))
  return task, shapes.replace(params=params, opt_state=task.tx.init(params), step=np.int32(0))


def test_segmentation_init_from_a_converted_fcn(tmp_path):
  """init_from=<converted fcn16s directory> initialises an FCN-8s run like pytorch-fcn's
  copy_params_from_fcn16s: every layer the two share comes from the file, the 8s-only layers
  keep their fresh values; a VGG16 directory there is refused with a pointer to vgg_init."""
  _, fresh16 = _tiny_task_and_state("16s")
  p16 = jax.tree.map(np.asarray, fresh16.params)
  checkpoint.save(convert.Converted("fcn16s", {"params": p16}, {}), tmp_path / "fcn16s", {})
  task8, fresh8 = _tiny_task_and_state("8s", init_from=str(tmp_path / "fcn16s"))
  p8 = jax.device_get(task8.warm_start(fresh8).params)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))  # pylint: disable=unnecessary-lambda-assignment
  for name in ("vgg", "fc6", "fc7", "score_fr", "score_pool4", "upscore2"):
    assert same(p8[name], p16[name]), name
  for name in ("score_pool3", "upscore_pool4", "upscore8"):
    assert same(p8[name], fresh8.params[name]), name
  checkpoint.save(convert.Converted("vgg16_caffe", {"params": {}}, {}), tmp_path / "vgg", {})
  task8.config.init_from = str(tmp_path / "vgg")
  with pytest.raises(ValueError, match="'vgg16_caffe' weights, not an FCN.*go to model.vgg_init"):
    task8.warm_start(fresh8)


def test_segmentation_vgg_init_from_converted_vgg16(tmp_path):
  """model.vgg_init=<converted vgg16_caffe directory> puts in vgg, fc6 and fc7 and nothing
  else; torchvision's VGG16 (ImageNet-normalised RGB) is refused for the Caffe-input FCN."""
  task, fresh = _tiny_task_and_state("8s")
  params = jax.tree.map(np.asarray, fresh.params)
  trunk = {name: jax.tree.map(lambda x: x + 1.0, params[name]) for name in ("vgg", "fc6", "fc7")}
  for model in ("vgg16_caffe", "vgg16_torchvision"):
    checkpoint.save(convert.Converted(model, {"params": trunk}, {}), tmp_path / model, {})
  task.config.model.vgg_init = str(tmp_path / "vgg16_caffe")
  warm = jax.device_get(task.warm_start(fresh).params)
  for name in warm:
    want = trunk[name] if name in trunk else params[name]
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, warm[name], want))), name
  task.config.model.vgg_init = str(tmp_path / "vgg16_torchvision")
  with pytest.raises(ValueError, match="--model=vgg16_caffe"):
    task.warm_start(fresh)
