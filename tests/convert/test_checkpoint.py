"""The one way pretrained parts are read and merged: `checkpoint.put` (loaded subtrees into fresh
variables by scope, leaves and shapes checked) and `checkpoint.require_converted` (any path that
is no converted directory is refused with the convert command), as the harmonisation task uses
them (the segmentation and video tasks' uses are tested with those tasks)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from cpjax import convert
from cpjax.convert import checkpoint
from cpjax.convert.harmonization import model_expected, pretrained_variables


def _fresh() -> dict:
  return {"params": {"backbone": {"hrnet": {"conv": {"kernel": np.zeros((3, 3, 1, 2), np.float32),
                                                     "bias": np.zeros(2, np.float32)}},
                                  "head": {"bias": np.ones(4, np.float32)}}},
          "batch_stats": {"bn": {"mean": jnp.zeros(2, jnp.bfloat16)}}}


def test_put_replaces_only_the_scopes_in_the_fresh_dtypes():
  """The loaded subtrees land at their scopes with fresh's dtypes; the rest of the tree is the
  fresh one (the same objects), and the fresh tree itself is not modified."""
  fresh = _fresh()
  trunk = {"conv": {"kernel": np.full((3, 3, 1, 2), 0.5), "bias": np.arange(2.0)}}
  stats = {"bn": {"mean": np.array([1.5, -2.0], np.float32)}}
  out = checkpoint.put(fresh, {("params", "backbone", "hrnet"): trunk, ("batch_stats",): stats},
                       "model.backbone_init", "DIR")
  np.testing.assert_array_equal(out["params"]["backbone"]["hrnet"]["conv"]["kernel"], 0.5)
  np.testing.assert_array_equal(out["params"]["backbone"]["hrnet"]["conv"]["bias"], [0.0, 1.0])
  assert out["params"]["backbone"]["hrnet"]["conv"]["kernel"].dtype == np.float32
  assert out["batch_stats"]["bn"]["mean"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(out["batch_stats"]["bn"]["mean"].astype(np.float32), [1.5, -2.0])
  assert out["params"]["backbone"]["head"] is fresh["params"]["backbone"]["head"]
  assert not fresh["params"]["backbone"]["hrnet"]["conv"]["kernel"].any()


@pytest.mark.parametrize("trunk,message", [
    ({"conv": {"kernel": np.zeros((3, 3, 1, 5)), "bias": np.zeros(2)}},
     "params/backbone/hrnet/conv/kernel is (3, 3, 1, 5) there but (3, 3, 1, 2)"),
    ({"conv": {"kernel": np.zeros((3, 3, 1, 2))}},
     "params/backbone/hrnet/conv/bias is absent there but (2,)"),
    ({"conv": {"kernel": np.zeros((3, 3, 1, 2)), "bias": np.zeros(2), "scale": np.zeros(2)}},
     "params/backbone/hrnet/conv/scale is (2,) there but absent"),
])
def test_put_names_the_flag_the_leaf_and_both_shapes(trunk, message):
  """A leaf of another shape, missing, or extra: one line with the flag, the leaf's scope and
  the two shapes."""
  with pytest.raises(ValueError) as error:
    checkpoint.put(_fresh(), {("params", "backbone", "hrnet"): trunk}, "model.backbone_init",
                   "weights/hrnet_w18s")
  assert str(error.value) == (f"model.backbone_init=weights/hrnet_w18s: {message} in the network "
                              "the config builds; the config's model must be the converted "
                              "network")


@pytest.mark.parametrize("config,field,model,file", [
    (("iharmony4_idih_hrnet", "w18s"), "model.backbone_init", "hrnet_w18s",
     "hrnet_w18_small_model_v2.pth"),
    (("iharmony4_idih_hrnet", "w32"), "model.backbone_init", "hrnet_w32",
     "hrnetv2_w32_imagenet_pretrained.pth"),
    (("iharmony4_idih", ""), "init_from", "idih256", "idih256.pth"),
    (("iharmony4_idih_hrnet", "w18s"), "init_from", "hrnet18s_idih256", "hrnet18s_idih256.pth"),
])
def test_harmonization_refuses_unconverted_paths_with_the_command(tmp_path, config, field, model,
                                                                  file):
  """A .pth or .npz given where converted weights go is refused (before any weights are read)
  with the command converting the release that fits the config."""
  c = load_config(*config)
  c.model.backbone_init = ""
  path = tmp_path / "weights.npz"
  np.savez(path, x=np.zeros(1))
  (c.model if field.startswith("model.") else c)[field.split(".")[-1]] = str(path)
  with pytest.raises(FileNotFoundError) as error:
    pretrained_variables(c, variables=None)
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"{field}={path} holds no converted weights")
  assert message.endswith(f"convert {file} with python -m cpjax.tools.convert --from={file} "
                          f"--model={model} --out=weights/{model} and pass "
                          f"--config.{field}=weights/{model}")


def test_harmonization_backbone_init_checks_the_trunk_leaves(tmp_path):
  """A converted hrnet_w18s directory whose trunk lacks leaves of the network is refused by
  `put`, naming the first such leaf under its scope."""
  partial = {"params": {"conv1": {"kernel": np.zeros((3, 3, 3, 64), np.float32)}},
             "batch_stats": {}}
  checkpoint.save(convert.Converted("hrnet_w18s", partial, {"hrnet_width": "w18s"}),
                  tmp_path / "trunk", {})
  c = load_config("iharmony4_idih_hrnet", "w18s")
  c.model.backbone_init = str(tmp_path / "trunk")
  with pytest.raises(ValueError) as error:
    pretrained_variables(c, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                         model_expected("hrnet18s_idih256")))
  assert str(error.value) == (f"model.backbone_init={tmp_path / 'trunk'}: params/backbone/hrnet/"
                              "bn1/bias is absent there but (64,) in the network the config "
                              "builds; the config's model must be the converted network")
