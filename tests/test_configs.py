"""Every config loads in every variant, unknown variants are refused, and the tiny variants of
the copy-paste configs train end to end (demo's is exercised by tests/train)."""
from __future__ import annotations

import json

import jax
import pytest

from conftest import REPO, load_config
from cpjax.train import trainer

CONFIGS = {"faces": ["", "tiny"], "cityscapes": ["", "tiny"], "demo": ["", "tiny"],
           "iharmony4_dih": ["", "joint", "tiny"],
           "iharmony4_idih": ["", "idih512", "dih256", "tiny"],
           "iharmony4_idih_hrnet": ["", "w18s", "w18", "w32", "w18s_v2p", "w18_v2p", "w18s_no_mask",
                                    "tiny"],
           "harmonization_demo": ["", "tiny"],
           "video_inpainting": ["", "davis", "tiny"], "video_demo": ["", "tiny"],
           "fcn_voc": ["", "32s", "16s", "8s", "4s", "tiny"], "fcn_demo": ["", "tiny"]}


def test_every_config_file_is_listed():
  assert {p.stem for p in (REPO / "configs").glob("*.py")} == set(CONFIGS)


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in CONFIGS.items() for v in vs])
def test_config_loads(name, variant):
  c = load_config(name, variant)
  assert c.task and c.total_steps > 0 and c.batch_size > 0
  if variant == "tiny":
    assert c.total_steps <= 10 and c.data.image_size <= 64


def test_paper_hyperparameters():
  """faces.py and cityscapes.py carry the paper's numbers (section 3.3)."""
  f, c = load_config("faces"), load_config("cityscapes")
  assert (f.data.image_size, f.batch_size, f.total_steps) == (512, 5, 250_000)
  assert f.transform.sigma == 15
  assert (f.loss.alpha, f.loss.gamma, f.loss.gp_lambda) == (1e-4, 1e-3, 10.0)
  assert (f.optim.lr, f.optim.b1, f.optim.b2) == (2e-4, 0.0, 0.9)
  assert c.transform.sigma == 10 and tuple(c.data.resize) == (512, 1024)
  assert len(f.model.dilations) == 7 and max(f.model.dilations) == 16


def _none_fields(tree: dict, prefix: str = "") -> list[str]:
  out = []
  for key, value in tree.items():
    if isinstance(value, dict):
      out += _none_fields(value, f"{prefix}{key}.")
    elif value is None:
      out.append(prefix + key)
  return out


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in CONFIGS.items() for v in vs])
def test_every_field_can_be_set_on_the_command_line(name, variant):
  """ml_collections makes no --config.x flag for a None field: configs say "off" with 0 or ''."""
  assert not _none_fields(load_config(name, variant).to_dict())


def test_command_line_sets_fields_a_variant_switched_off(monkeypatch):
  """harmonization_demo turns keep_foreground and resize off; both can be set again."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["prog", f"--config={REPO / 'configs' / 'harmonization_demo.py'}",
          "--config.data.keep_foreground=mask", "--config.data.resize=96",
          "--config.data.max_examples=3"]
  monkeypatch.setattr("sys.argv", argv)   # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  config = config_flags.DEFINE_config_file("config", flag_values=values)
  values(argv)
  assert (config.value.data.keep_foreground, config.value.data.resize) == ("mask", 96)
  assert config.value.data.max_examples == 3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unknown_variant_is_refused(name):
  with pytest.raises(ValueError, match=f"unknown variant 'huge' of configs/{name}.py"):
    load_config(name, "huge")


@pytest.mark.parametrize("name", ["faces", "cityscapes"])
def test_tiny_variant_trains(name, tmp_path):
  c = load_config(name, "tiny")
  c.total_steps, c.checkpoint.async_save = 2, False
  state = trainer.train(c, tmp_path, devices=jax.devices()[:1])
  assert int(state.step) == 2
  result = json.loads((tmp_path / "eval" / "step_00000002.json").read_text())
  assert result["num_examples"] == c.eval.num_examples
