"""cpjax.system: one way to build a system, make a fresh state and restore one (a training
workdir's checkpoint or converted released weights), with errors that name the fix."""
from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest

from conftest import load_config
from cpjax import convert, system, tasks
from cpjax.convert import checkpoint
from cpjax.convert import harmonization as harmonization_convert
from cpjax.train import checkpointing, trainer


def _random_like(tree, seed=0):
  r = np.random.default_rng(seed)
  return jax.tree.map(lambda s: r.normal(size=s.shape).astype(np.float32) * 0.05, tree)


def test_converted_weights_load_as_the_released_system(tmp_path):
  """A converted idih256 directory loads as the iHarmony4 iDIH system holding exactly the
  converted weights (parameters and BatchNorm statistics), with no checkpoint step."""
  variables = _random_like(harmonization_convert.model_expected("idih256"))
  saved = checkpoint.save(convert.Converted("idih256", variables, {}), tmp_path / "idih256",
                          {"path": "idih256.pth", "sha256": "0"})
  loaded = system.load(saved, task="harmonization")
  assert loaded.config.model.name == "idih" and loaded.config.init_from == str(saved)
  assert loaded.step is None
  restored = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), restored, variables)
  with pytest.raises(ValueError, match="holds a 'harmonization' run, but this needs a "
                     r"'copy_paste' one \(e.g. trained with --config=configs/demo.py\)"):
    system.load(saved, task="copy_paste")


def test_part_of_a_system_is_not_loadable(tmp_path):
  """An ImageNet trunk alone is not a system: the error says how to use it."""
  saved = checkpoint.save(convert.Converted("hrnet_w18s", {"params": {}}, {}), tmp_path / "w18s",
                          {"path": "w18s.pth", "sha256": "0"})
  with pytest.raises(ValueError, match="hrnet_w18s weights, a part of a system .* idih256"):
    system.load(saved)


def test_a_fresh_state_traces_init_once(monkeypatch):
  """`System` (the state's shapes) and `init_state` (the state) share one trace of
  `Task.init`, and the state is what `Task.init` jitted on its own gives, bit for bit, laid
  out in the state shardings."""
  config = load_config("demo", "tiny")
  task_class = type(tasks.build(config))
  original, traces = task_class.init, []
  def counted(self, key):
    traces.append(key)
    return original(self, key)
  monkeypatch.setattr(task_class, "init", counted)
  built = system.System(config)
  state = built.init_state()
  assert len(traces) == 1
  with jax.threefry_partitionable(False):
    expected = jax.jit(functools.partial(original, built.task))(built.root_key)
  assert jax.tree.structure(state) == jax.tree.structure(expected)
  for got, want, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(expected),
                                 jax.tree.leaves(built.state_shardings)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert got.sharding == sharding


@pytest.mark.parametrize("task,demo", [("harmonization", "configs/harmonization_demo.py"),
                                       ("video_inpainting", "configs/video_demo.py"),
                                       ("fcn", "configs/fcn_demo.py"),
                                       ("copy_paste", "configs/demo.py")])
def test_missing_workdir_names_the_tasks_own_demo(tmp_path, task, demo):
  with pytest.raises(FileNotFoundError, match=f"--config={demo} --workdir={tmp_path}$"):
    system.load(tmp_path, task=task)


def test_workdir_loads_the_run_it_holds(tmp_path):
  """The state of a checkpoint, in the config saved with it, equal to what training returned;
  a fresh System of the same config restores it into its own (8-device) shardings too."""
  config = load_config("demo", "tiny")
  config.total_steps, config.checkpoint.async_save = 1, False
  trained = trainer.train(config, tmp_path, devices=jax.devices()[:1])
  loaded = system.load(tmp_path)
  assert loaded.step == 1
  assert json.loads(loaded.config.to_json()) == json.loads(config.to_json())
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded.state),
               jax.device_get(trained))
  eight = system.System(config)
  checkpointer = checkpointing.Checkpointer(tmp_path, read_only=True)
  try:
    state = eight.restore(checkpointer, 1)
  finally:
    checkpointer.close()
  leaf = jax.tree.leaves(state.generator)[0]
  assert len(leaf.sharding.device_set) == 8
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(trained))


def test_checkpoint_of_a_config_without_pretrained_weights_still_loads(tmp_path):
  """A config that names no VGG16 weights (saved by a run before they were required, or trained
  with init_from since removed) cannot start a new run, but its checkpoint loads: the weights
  come from the checkpoint."""
  config = load_config("fcn_voc", "tiny")
  config.total_steps, config.checkpoint.async_save = 1, False
  trained = trainer.train(config, tmp_path, devices=jax.devices()[:1])
  config.model.vgg_init = ""
  with pytest.raises(ValueError, match="model.vgg_init is not set"):
    system.System(config, jax.devices()[:1]).init_state()
  saved = json.loads((tmp_path / "config.json").read_text())
  saved["model"]["vgg_init"] = ""   # as an older run saved it
  (tmp_path / "config.json").write_text(json.dumps(saved))
  checkpointer = checkpointing.Checkpointer(tmp_path, read_only=True)
  try:
    state = system.System(config, jax.devices()[:1]).restore(checkpointer, 1)
  finally:
    checkpointer.close()
  # Leaf by leaf: the two states' TrainState metadata (each system's optimiser) differ.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.leaves(jax.device_get(state)),
               jax.tree.leaves(jax.device_get(trained)))


def test_saved_config_without_a_current_setting_is_one_line_with_its_fix(tmp_path):
  """A checkpoint whose saved config lacks a setting the code now reads (as an earlier version
  saved it): one line naming the setting and the resume that fixes it; after that resume the
  run loads."""
  config = load_config("harmonization_demo", "tiny")
  config.total_steps, config.checkpoint.async_save = 1, False
  config.eval.every_steps, config.sample_every_steps = 0, 0
  trainer.train(config, tmp_path, devices=jax.devices()[:1])
  metadata = tmp_path / "checkpoints" / "1" / checkpointing.CONFIG / "metadata"
  saved = json.loads(metadata.read_text())
  del saved["model"]["input_space"]
  metadata.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"saved with step 1 has no setting 'input_space'; .*"
                                       r"--config.total_steps=2\) to save"):
    system.load(tmp_path)
  config.total_steps = 2
  trainer.train(config, tmp_path, devices=jax.devices()[:1])
  assert system.load(tmp_path).step == 2
  saved["transform"]["saturation"] = [0.5, 1.5]   # a flat key of the earlier transform layout
  (tmp_path / "checkpoints" / "2" / checkpointing.CONFIG / "metadata").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"saved with step 2 does not build \(.*unknown transform "
                                       r"keys \['saturation'\].*--config.total_steps=3\) to save"):
    system.load(tmp_path)
