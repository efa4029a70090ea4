"""Converting HRNet-Image-Classification ImageNet weights (hrnet_w18s / w18 / w32) into the
HRNetV2 trunk, and starting the harmonisation model's backbone from them (model.backbone_init).

Numerical parity with a PyTorch HRNetV2 of the reference layout (`torch_iharm`) for W18s, W18
and W32. Each reference tensor sits at the flax path of its own name, in the PyTorch -> flax
layout, and the ImageNet conversion places the trunk exactly as the iDIH-HRNet conversion does.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import load_config, numpy_params
from cpjax import convert
from cpjax.convert import checkpoint
from cpjax.convert.harmonization import model_expected, pretrained_variables
from cpjax.convert.hrnet import CLASSIFICATION_HEAD
from cpjax.convert.state_dict import ConversionError
from cpjax.models import hrnet

torch = pytest.importorskip("torch", reason="PyTorch is needed for checkpoint parity: "
                            "pip install -e '.[torch]'")
from convert import torch_iharm as ti  # noqa: E402  (after the torch check)


@pytest.fixture(scope="module")
def networks():
  """ImageNet-layout PyTorch HRNets (trunk + classification head) of each width, random."""
  return {w: ti.build(ti.HRNet, w, classification_head=True, seed=i)
          for i, w in enumerate(("w18s", "w18", "w32"))}


@pytest.fixture(scope="module")
def imagenet(networks):
  """Their state dicts."""
  return {w: ti.state_dict(net) for w, net in networks.items()}


@pytest.mark.parametrize("width,millions", [("w18s", 15.6), ("w18", 21.3), ("w32", 41.2)])
def test_reference_layout_has_the_published_sizes(networks, width, millions):
  """The PyTorch stand-ins hold as many parameters as HRNet-Image-Classification publishes
  for HRNet-W18-C-Small-v2, W18-C and W32-C (trunk + classification head)."""
  count = sum(p.numel() for p in networks[width].parameters())
  assert round(count / 1e6, 1) == millions


def _is_head(key: str) -> bool:
  return key.startswith(CLASSIFICATION_HEAD)


def _expected_leaf(key: str, value: np.ndarray) -> tuple[str, tuple[str, ...], np.ndarray] | None:
  """Where a reference tensor must land: (collection, flax path, array), by its own name."""
  *module, leaf = key.split(".")
  if leaf == "num_batches_tracked":
    return None
  if leaf == "weight" and value.ndim == 4:
    return "params", (*module, "kernel"), np.transpose(value, (2, 3, 1, 0))
  name = {"weight": ("params", "scale"), "bias": ("params", "bias"),
          "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}[leaf]
  return name[0], (*module, name[1]), value


@pytest.mark.parametrize("width", ti.WIDTHS)
def test_imagenet_trunk_matches_pytorch(networks, imagenet, width):
  """The converted ImageNet HRNet gives the reference trunk's features (align_corners=True
  fusions, eval-mode BatchNorm with random statistics) on a 40x56 image (not a multiple of 32:
  stride-2 maps round up as PyTorch's padding-1 convs do)."""
  converted = convert.convert(f"hrnet_{width}", imagenet[width])
  image = np.random.default_rng(8).normal(size=(1, 40, 56, 3)).astype(np.float32)
  ours = ti.flax_apply(hrnet.HRNetV2(hrnet.SPECS[width]), converted.variables, image, None)
  assert ours.shape == (1, 10, 14, 15 * hrnet.SPECS[width].width)
  assert ti.relative_error(ours, ti.run(networks[width], image, method="features")) < 1e-4


@pytest.mark.parametrize("width", ["w18s", "w18", "w32"])
def test_every_trunk_tensor_lands_under_its_own_name(imagenet, width):
  """Every trunk key k.weight / bias / running stats is at flax path k/... (conv kernels
  OIHW -> HWIO), nothing else is filled, and exactly the classification head is dropped."""
  arrays = imagenet[width]
  converted = convert.convert(f"hrnet_{width}", arrays)
  assert converted.module_config == {"hrnet_width": width}
  assert converted.dropped == sorted(k for k in arrays if _is_head(k))
  placed = 0
  for key, value in arrays.items():
    target = None if _is_head(key) else _expected_leaf(key, value)
    if target is not None:
      collection, path, want = target
      node = converted.variables[collection]
      for part in path:
        node = node[part]
      np.testing.assert_array_equal(node, want)
      placed += 1
  assert placed == len(jax.tree.leaves(converted.variables))


def test_imagenet_trunk_is_the_harmonization_backbone_trunk(imagenet):
  """The same trunk tensors converted as hrnet_w18s and inside an hrnet18s_idih256 state dict
  ('backbone.hrnet.' prefix; that conversion has forward parity with PyTorch) agree exactly."""
  trunk = {k: v for k, v in imagenet["w18s"].items() if not _is_head(k)}
  whole = ti.state_dict(ti.build(ti.HRNetIDIH, "w18s", seed=5))
  assert set(f"backbone.hrnet.{k}" for k in trunk) <= set(whole)
  whole.update({f"backbone.hrnet.{k}": v for k, v in trunk.items()})
  ours = convert.convert("hrnet_w18s", imagenet["w18s"]).variables
  backbone = convert.convert("hrnet18s_idih256", whole).variables
  for collection in ("params", "batch_stats"):
    jax.tree.map(np.testing.assert_array_equal, ours[collection],
                 backbone[collection]["backbone"]["hrnet"])


def test_a_w18_checkpoint_is_not_a_w18s(imagenet):
  """W18's extra blocks and modules are listed, not silently ignored."""
  with pytest.raises(ConversionError, match=r"layer1\.2\."):
    convert.convert("hrnet_w18s", imagenet["w18"])


@pytest.fixture(scope="module")
def w18s_dir(imagenet, tmp_path_factory):
  converted = convert.convert("hrnet_w18s", imagenet["w18s"])
  out = tmp_path_factory.mktemp("converted") / "hrnet_w18s"
  checkpoint.save(converted, out, {"path": "random", "sha256": ""})
  return out, converted


def test_backbone_init_fills_only_the_hrnet_trunk(w18s_dir):
  """model.backbone_init puts the ImageNet trunk under backbone/hrnet (parameters and
  statistics) of an iDIH-HRNet; the OCR head, the mask fusion and the iDIH keep their values."""
  directory, converted = w18s_dir
  config = load_config("iharmony4_idih_hrnet", "w18s")
  config.model.backbone_init = str(directory)
  fresh = numpy_params(model_expected("hrnet18s_idih256"))
  warm = pretrained_variables(config, fresh)
  equal = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)  # noqa: E731
  for collection in ("params", "batch_stats"):
    equal(warm[collection]["backbone"].pop("hrnet"), converted.variables[collection])
    fresh[collection]["backbone"].pop("hrnet")
    equal(warm[collection], fresh[collection])


@pytest.mark.parametrize("setting,message", [
    ({"model.hrnet_width": "w32"}, "model.hrnet_width='w18s'"),
    ({"model.name": "idih"}, "model.name='idih_hrnet'"),
    ({"init_from": "DIR", "model.backbone_init": ""}, "holds converted 'hrnet_w18s' weights"),
])
def test_wrong_uses_of_the_trunk_are_refused(w18s_dir, setting, message):
  """Another width, a network without HRNet, or the trunk given as a whole network."""
  directory, _ = w18s_dir
  config = load_config("iharmony4_idih_hrnet", "w18s")
  config.model.backbone_init = str(directory)
  for key, value in setting.items():
    node, leaf = (config.model, key[len("model."):]) if key.startswith("model.") else (config, key)
    node[leaf] = value.replace("DIR", str(directory))
  with pytest.raises(ValueError, match=message):
    pretrained_variables(config, variables=None)   # refused before any variable is read
