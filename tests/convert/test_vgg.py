"""torchvision / pytorch-fcn VGG16 state dicts load into `VGG16` (+ fc6 / fc7) with parity.

The PyTorch VGG16 below has torchvision's layout (`features` = convs, ReLUs and max-pools in one
Sequential, `classifier` = Linear 25088 -> 4096, ReLU, Dropout, Linear 4096 -> 4096, ReLU,
Dropout, Linear 4096 -> 1000, applied to pool5 flattened in NCHW order), filled with random
weights.
"""
from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from cpjax import convert, tasks
from cpjax.convert import ConversionError, checkpoint
from cpjax.convert import vgg as convert_vgg
from cpjax.models.vgg import CONVS_PER_BLOCK, VGG16, WIDTHS
from cpjax.ops.color import imagenet_normalize

torch = pytest.importorskip("torch", reason="PyTorch is needed for conversion parity: "
                            "pip install -e '.[torch]'")
nn = torch.nn


def torchvision_vgg16() -> nn.Module:
  """torchvision.models.vgg16's module tree (state-dict keys features.N, classifier.N)."""
  layers, channels = [], 3
  for num_convs, width in zip(CONVS_PER_BLOCK, WIDTHS):
    for _ in range(num_convs):
      layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
      channels = width
    layers.append(nn.MaxPool2d(2, 2))
  model = nn.Module()
  model.features = nn.Sequential(*layers)
  model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(),
                                   nn.Linear(4096, 1000))
  return model.eval()


@pytest.fixture(scope="module")
def reference() -> nn.Module:
  """Random He-normal weights and random biases."""
  torch.manual_seed(0)
  model = torchvision_vgg16()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.normal_(0.0, 0.1)
      else:
        p.normal_(0.0, float(np.sqrt(2.0 / p[0].numel())))
  return model


@pytest.fixture(scope="module")
def converted(reference) -> convert.Converted:
  return convert.convert("vgg16_torchvision",
                         {k: v.numpy() for k, v in reference.state_dict().items()})


def _rel(ours, theirs) -> float:
  return float(np.max(np.abs(np.asarray(ours) - theirs)) / np.max(np.abs(theirs)))


def test_trunk_matches_torchvision_features(reference, converted):
  """pool1 ... pool5 of `VGG16` with converted weights equal torchvision's `features` at the
  same depth (ImageNet-normalised input, floor-mode pooling): max relative error < 1e-4."""
  image = np.random.default_rng(0).uniform(size=(2, 40, 56, 3)).astype(np.float32)
  x = np.asarray(imagenet_normalize(jnp.asarray(image)))
  ours = jax.jit(VGG16().apply)({"params": converted.variables["params"]["vgg"]}, x)
  h = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  block = 0
  with torch.no_grad():
    for layer in reference.features:
      h = layer(h)
      if isinstance(layer, nn.MaxPool2d):
        block += 1
        want = h.numpy().transpose(0, 2, 3, 1)
        assert ours[f"pool{block}"].shape == want.shape
        assert _rel(ours[f"pool{block}"], want) < 1e-4, block
  assert block == 5


def test_classifier_becomes_fc6_fc7_convs(reference, converted):
  """classifier.0 / classifier.3 on NCHW-flattened pool5 equal the converted fc6 (7x7 valid
  conv) and fc7 (1x1 conv) on NHWC pool5, as FCN applies them."""
  pool5 = np.random.default_rng(1).uniform(size=(2, 7, 7, 512)).astype(np.float32)
  params = converted.variables["params"]
  fc6 = fnn.Conv(4096, (7, 7), padding="VALID").apply({"params": params["fc6"]}, pool5)
  fc7 = fnn.Conv(4096, (1, 1), padding="VALID").apply({"params": params["fc7"]},
                                                       jax.nn.relu(fc6))
  flat = torch.from_numpy(np.ascontiguousarray(pool5.transpose(0, 3, 1, 2))).flatten(1)
  with torch.no_grad():
    want = reference.classifier[:4](flat).numpy()
  assert fc7.shape == (2, 1, 1, 4096)
  assert _rel(fc7[:, 0, 0], want) < 1e-4


def test_caffe_weights_record_their_preprocessing(reference, converted):
  """vgg16_caffe reads the same keys; only the recorded input normalisation differs. Both drop
  (and report) the ImageNet scoring layer classifier.6."""
  caffe = convert.convert("vgg16_caffe", {k: v.numpy() for k, v in reference.state_dict().items()})
  assert converted.module_config["preprocess"] == "imagenet"
  assert caffe.module_config["preprocess"] == "caffe"
  assert converted.dropped == caffe.dropped == ["classifier.6.bias", "classifier.6.weight"]
  np.testing.assert_array_equal(caffe.variables["params"]["vgg"]["conv1_1"]["kernel"],
                                converted.variables["params"]["vgg"]["conv1_1"]["kernel"])


def test_classifier_of_the_wrong_size_is_named(reference):
  arrays = {k: v.numpy() for k, v in reference.state_dict().items()}
  arrays["classifier.0.weight"] = np.zeros((4096, 512 * 6 * 6), np.float32)
  with pytest.raises(ConversionError, match=r"classifier.0.weight is \(4096, 18432\); VGG16's "
                                            r"fc6 takes 512x7x7 = 25088 inputs"):
    convert.convert("vgg16_torchvision", arrays)


def test_load_params_checks_the_input_normalisation(tmp_path):
  """A task asking for Caffe-normalised VGG16 weights refuses torchvision's, and vice versa,
  with the --model to convert instead."""
  tiny = {"params": {"vgg": {"conv1_1": {"kernel": np.ones((3, 3, 3, 2), np.float32)}}}}
  checkpoint.save(convert.Converted("vgg16_torchvision", tiny, {"preprocess": "imagenet"}),
                  tmp_path / "tv", {})
  checkpoint.save(convert.Converted("fcn32s", tiny, {}), tmp_path / "fcn", {})
  params = convert_vgg.load_params(str(tmp_path / "tv"), "imagenet", "loss.vgg_weights")
  np.testing.assert_array_equal(params["vgg"]["conv1_1"]["kernel"], 1.0)
  with pytest.raises(ValueError, match="expect 'imagenet'-normalised input.*"
                                       "vgg16_from_caffe.pth .*--model=vgg16_caffe"):
    convert_vgg.load_params(str(tmp_path / "tv"), "caffe", "model.vgg_init")
  with pytest.raises(ValueError, match="holds converted 'fcn32s' weights, not VGG16"):
    convert_vgg.load_params(str(tmp_path / "fcn"), "caffe", "model.vgg_init")


def test_video_perceptual_loss_takes_converted_torchvision_vgg16(converted, tmp_path):
  """loss.vgg_weights=<converted vgg16_torchvision directory> becomes the video task's frozen
  VGG16; the Caffe weights (BGR input) are refused there."""
  trunk = {"params": {"vgg": converted.variables["params"]["vgg"]}}
  checkpoint.save(convert.Converted("vgg16_torchvision", trunk, {}), tmp_path / "tv", {})
  checkpoint.save(convert.Converted("vgg16_caffe", trunk, {}), tmp_path / "caffe", {})
  config = load_config("video_demo", "tiny")
  config.loss.perceptual, config.loss.vgg_weights = 0.05, str(tmp_path / "tv")
  task = tasks.build(config)
  fresh = jax.eval_shape(task.init, jax.random.key(0))
  vgg = task.warm_start(fresh).vgg
  for name, layer in trunk["params"]["vgg"].items():
    np.testing.assert_array_equal(vgg[name]["kernel"], layer["kernel"])
  config.loss.vgg_weights = str(tmp_path / "caffe")
  with pytest.raises(ValueError, match="loss.vgg_weights=.*--model=vgg16_torchvision"):
    tasks.build(config).warm_start(fresh)
