"""Converting saic-vul/image_harmonization checkpoints: numerical parity with PyTorch reference
networks of the released layout (`torch_iharm`; the iDIH-HRNets of all three widths), strict
key accounting, and the command line up to the harmonisation task
starting from the result (init_from)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from conftest import load_config, numpy_params
from cpjax import convert
from cpjax.convert.harmonization import pretrained_variables
from cpjax.convert.state_dict import ConversionError
from cpjax.models import dih
from cpjax.tasks import harmonization
from cpjax.tools import convert as convert_tool

torch = pytest.importorskip("torch", reason="PyTorch is needed for checkpoint parity: "
                            "pip install -e '.[torch]'")
from convert import torch_iharm as ti  # noqa: E402  (after the torch check)

SIZE = 256   # the released models are fixed256: depth 7 needs 256 px


def _problem(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A normalised-looking image [1, 256, 256, 3] and a rectangle mask [1, 256, 256, 1]."""
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(1, SIZE, SIZE, 3)).astype(np.float32)
  mask = np.zeros((1, SIZE, SIZE, 1), np.float32)
  mask[:, 60:170, 90:210] = 1.0
  return image, mask


def _assert_parity(module, variables, reference: torch.nn.Module, seed: int) -> None:
  """Ours and the reference agree to 1e-4 relative error, also on the network's share of the
  output (the blended result minus the input image, which the blending passes through)."""
  image, mask = _problem(seed)
  ref = ti.run(reference, image, mask)
  ours = ti.flax_apply(module, variables, image, mask)
  assert ti.relative_error(ours, ref) < 1e-4
  assert ti.relative_error(ours - image, ref - image) < 1e-4


@pytest.fixture(scope="module")
def idih_torch():
  return ti.build(ti.IDIH, seed=0)


def test_idih256_matches_pytorch(idih_torch):
  """improved_dih256 (BatchNorm from block 2, unpadded bottleneck, transposed convs, added
  skips, blending head) converted from its state dict gives the reference's output."""
  converted = convert.convert("idih256", ti.state_dict(idih_torch))
  assert converted.module_config == {"name": "idih", "depth": 7, "ch": 64, "max_channels": 512,
                                     "batchnorm_from": 2, "image_fusion": True}
  _assert_parity(dih.IDIH(), converted.variables, idih_torch, seed=1)


@pytest.mark.parametrize("width", ti.WIDTHS)
def test_hrnet_idih256_matches_pytorch(width):
  """HRNetV2 + mask fusion + OCR joined to iDIH after block 1 (the whole HRNetIHModel, with
  align_corners=True fusions and random BatchNorm statistics everywhere)."""
  reference = ti.build(ti.HRNetIDIH, width, seed=2)
  converted = convert.convert(f"hrnet{width[1:]}_idih256", ti.state_dict(reference))
  assert converted.dropped == []
  _assert_parity(dih.IDIHHRNet(width), converted.variables, reference, seed=3)


def test_extra_or_missing_keys_are_named(idih_torch):
  """A key the network has no place for, or one it needs and the file lacks: named errors."""
  arrays = ti.state_dict(idih_torch)
  arrays["model.extra.weight"] = np.zeros((3, 3, 1, 1), np.float32)
  with pytest.raises(ConversionError, match="model.extra.weight"):
    convert.convert("idih256", arrays)
  del arrays["model.extra.weight"], arrays["decoder.to_rgb.bias"]
  with pytest.raises(ConversionError, match="decoder.to_rgb.bias"):
    convert.convert("idih256", arrays)


def _state(task) -> harmonization.HarmonizationState:
  """A train state of the task's shapes with NumPy-drawn values (no init compile)."""
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  params, stats = numpy_params(shapes.params, 5), numpy_params(shapes.batch_stats, 6)
  return harmonization.HarmonizationState.create(apply_fn=task.model.apply, params=params,
                                                 tx=task.tx, batch_stats=stats)


def _assert_same(a, b) -> None:
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_cli_converts_a_pth_that_the_task_starts_from(tmp_path, idih_torch):
  """torch.save -> cpjax.tools.convert -> init_from: the fresh state holds the reference's
  weights (and a fresh optimiser state); a config of another network is refused by name."""
  pth = tmp_path / "idih256.pth"
  torch.save({"module." + k: v for k, v in idih_torch.state_dict().items()}, pth)
  convert_tool.run(str(pth), "idih256", str(tmp_path / "idih256"))
  expected = convert.convert("idih256", ti.state_dict(idih_torch)).variables

  config = load_config("iharmony4_idih")
  config.init_from = str(tmp_path / "idih256")
  task = harmonization.HarmonizationTask(config)
  warm = task.warm_start(_state(task))
  _assert_same(warm.params, expected["params"])
  _assert_same(warm.batch_stats, expected["batch_stats"])
  _assert_same(warm.opt_state, task.tx.init(warm.params))

  config.model.batchnorm_from = 0
  with pytest.raises(ValueError, match="--config.model.batchnorm_from=2"):
    pretrained_variables(config, variables=None)
