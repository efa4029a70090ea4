"""Tools take a directory of converted released weights in place of a training workdir."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from cpjax import convert
from cpjax.convert import checkpoint
from cpjax.convert import harmonization as harmonization_convert
from cpjax.tools import common


def _random_like(tree, seed=0):
  r = np.random.default_rng(seed)
  return jax.tree.map(lambda s: r.normal(size=s.shape).astype(np.float32) * 0.05, tree)


def test_restore_task_builds_the_released_system(tmp_path):
  """A converted idih256 directory restores as the iHarmony4 iDIH system holding exactly the
  converted weights (parameters and BatchNorm statistics)."""
  variables = _random_like(harmonization_convert.model_expected("idih256"))
  saved = checkpoint.save(convert.Converted("idih256", variables, {}), tmp_path / "idih256",
                          {"path": "idih256.pth", "sha256": "0"})
  config, task, state = common.restore_task(saved)
  assert config.model.name == "idih" and config.init_from == str(saved)
  restored = {"params": state.params, "batch_stats": state.batch_stats}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), restored, variables)


def test_backbone_weights_are_not_runnable(tmp_path):
  """An ImageNet trunk alone is not a system: the error says how to use it."""
  saved = checkpoint.save(convert.Converted("hrnet_w18s", {"params": {}}, {}), tmp_path / "w18s",
                          {"path": "w18s.pth", "sha256": "0"})
  with pytest.raises(common.ToolError, match="hrnet_w18s weights, a part of a system .* idih256"):
    common.restore_task(saved)
