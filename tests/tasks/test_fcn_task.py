"""The FCN task through the shared loop: the tiny config on the command line (train, eval,
eval_sweep) on 8 devices equals one device, frozen upscore layers, the eval scores of the whole
split, staged initialisation (32s -> 16s -> 8s), converted VGG weights and their requirement,
and the reference's full-resolution batch-1 geometry (whole images padded to one shape)."""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from conftest import REPO, first_batches, load_config, numpy_params, subprocess_env, tiny_config
from data.test_voc import _IDS, _SIZES, _labels_for, voc_root  # noqa: F401  (a fixture)
from cpjax import convert, system, tasks
from cpjax.convert import checkpoint
from cpjax.models import fcn
from cpjax.tasks import fcn as fcn_task
from cpjax.train import checkpointing, trainer
from data_pipelines import pipeline, voc

_tiny = functools.partial(tiny_config, "fcn_voc")


def _main(workdir, *extra, devices: int = 8,
          config: str = "configs/fcn_voc.py:tiny") -> subprocess.CompletedProcess:
  env = subprocess_env(devices=devices)
  cmd = [sys.executable, "-m", "cpjax.main", f"--config={config}",
         f"--workdir={workdir}", "--config.checkpoint.async_save=False", *extra]
  return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
  """`python -m cpjax.main --config=configs/fcn_voc.py:tiny` on 8 devices: 4 steps, checkpoints
  at 2 and 4, eval at 4."""
  workdir = tmp_path_factory.mktemp("fcn_cli")
  run = _main(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir, run


@pytest.fixture(scope="module")
def one_device_state(tmp_path_factory):
  """2 steps of the same config on one device, in process."""
  return trainer.train(_tiny(total_steps=2), tmp_path_factory.mktemp("fcn_one"),
                       devices=jax.devices()[:1])


def _params_at(workdir, step):
  loaded = system.load(workdir, step)
  return loaded.config, loaded.task, jax.device_get(loaded.state.params)


def test_cli_writes_eval_with_the_four_scores(cli_run):
  """Training ends with an eval JSON of the four scores in [0, 1] over the 8 eval examples, and
  the console shows them."""
  workdir, run = cli_run
  result = json.loads((workdir / "eval" / "step_00000004.json").read_text())
  assert result["num_examples"] == 8
  for name in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
    assert 0.0 <= result[name] <= 1.0, name
  assert all(name in result for _, name, _ in fcn_task.FCNTask.curves)
  assert "mean_iu=" in run.stderr and (workdir / "checkpoints" / "2").is_dir()


def test_eval_scores_equal_numpy_over_the_split(cli_run):
  """The trainer's summed confusion matrix gives the scores that NumPy computes from the
  checkpoint's predictions on the eval split (bincount matrix, the reference's formulas)."""
  workdir, _ = cli_run
  config, task, params = _params_at(workdir, 4)
  k = len(config.model.classes)
  hist = np.zeros((k, k))
  for batch in pipeline.eval_batches(config.data, batch_size=config.eval.batch_size,
                                     source=config.eval.source, mode=config.eval.mode,
                                     num_examples=config.eval.num_examples):
    pred = np.asarray(jax.jit(task.predict)(params, batch["image"]))
    labels = batch["label"][batch["valid"]].astype(int)
    keep = labels != 255
    hist += np.bincount(k * labels[keep] + pred[batch["valid"]][keep],
                        minlength=k * k).reshape(k, k)
  with np.errstate(invalid="ignore"):  # classes absent from labels and predictions: NaN
    iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
  freq = hist.sum(1) / hist.sum()
  result = json.loads((workdir / "eval" / "step_00000004.json").read_text())
  assert result["pixel_acc"] == pytest.approx(np.trace(hist) / hist.sum(), abs=1e-6)
  assert result["mean_iu"] == pytest.approx(np.nanmean(iu), abs=1e-6)
  assert result["fw_iu"] == pytest.approx(np.sum(freq[freq > 0] * iu[freq > 0]), abs=1e-6)


def test_eight_devices_match_one_device(cli_run, one_device_state):
  """The 8-device command-line run's step-2 checkpoint equals 2 steps on one device (same global
  batch; dropout from per-example keys)."""
  _, _, params = _params_at(cli_run[0], 2)
  ref = jax.device_get(one_device_state.params)
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, ref)
  assert max(jax.tree.leaves(diffs)) < 1e-5, diffs


def test_upscore_layers_stay_frozen_and_others_train(one_device_state):
  """After training, every upscore kernel is still exactly bilinear; the score layers (zero at
  init) have moved."""
  params = jax.device_get(one_device_state.params)
  k = 5
  for name, size in (("upscore2", 4), ("upscore_pool4", 4), ("upscore8", 16)):
    np.testing.assert_array_equal(params[name]["kernel"], fcn.bilinear_kernel(size, k))
  for name in ("score_fr", "score_pool4", "score_pool3"):
    assert np.any(params[name]["kernel"] != 0), name


def test_eval_and_eval_sweep_modes(cli_run):
  """--mode=eval re-evaluates the latest checkpoint (restored on one device; it was written by
  eight) to the same scores; --mode=eval_sweep evaluates the checkpoint of step 2, which had no
  result."""
  workdir, _ = cli_run
  before = json.loads((workdir / "eval" / "step_00000004.json").read_text())
  (workdir / "eval" / "step_00000004.json").unlink()
  one = _main(workdir, "--mode=eval", devices=1)
  assert one.returncode == 0, one.stderr[-3000:]
  again = json.loads((workdir / "eval" / "step_00000004.json").read_text())
  assert again["mean_iu"] == pytest.approx(before["mean_iu"], abs=1e-9)
  sweep = _main(workdir, "--mode=eval_sweep", devices=1)
  assert sweep.returncode == 0, sweep.stderr[-3000:]
  assert "mean_iu" in json.loads((workdir / "eval" / "step_00000002.json").read_text())


def _save_stage(workdir, config, params_seed):
  """A checkpoint of `config`'s network with random parameters (NumPy, no compile)."""
  task = tasks.build(config)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  state = shapes.replace(params=numpy_params(shapes.params, params_seed))
  state = state.replace(opt_state=task.tx.init(state.params), step=np.int32(0))
  checkpointer = checkpointing.Checkpointer(workdir, async_save=False)
  checkpointer.save(1, state, None, config)
  checkpointer.close()
  return state.params


def _fresh(config):
  task = tasks.build(config)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  params = numpy_params(shapes.params, 99)
  return task, shapes.replace(params=params, opt_state=task.tx.init(params), step=np.int32(0))


def test_staged_initialisation_copies_shared_modules(tmp_path):
  """16s from a 32s run copies vgg, fc6, fc7, score_fr and keeps its own score_pool4 and
  upscore layers; 8s from that 16s run also copies score_pool4 and upscore2."""
  p32 = _save_stage(tmp_path / "s32", _tiny(**{"model.variant": "32s"}), 1)
  task16, fresh16 = _fresh(_tiny(**{"model.variant": "16s", "init_from": str(tmp_path / "s32")}))
  p16 = jax.device_get(task16.warm_start(fresh16).params)
  leaves_equal = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  for name in ("vgg", "fc6", "fc7", "score_fr"):
    assert leaves_equal(p16[name], p32[name]), name
  for name in ("score_pool4", "upscore2", "upscore16"):
    assert leaves_equal(p16[name], fresh16.params[name]), name
  state16 = fresh16.replace(params=p16)
  checkpointer = checkpointing.Checkpointer(tmp_path / "s16", async_save=False)
  checkpointer.save(1, state16, None, task16.config)
  checkpointer.close()
  task8, fresh8 = _fresh(_tiny(**{"model.variant": "8s", "init_from": str(tmp_path / "s16")}))
  p8 = jax.device_get(task8.warm_start(fresh8).params)
  for name in ("vgg", "fc6", "score_fr", "score_pool4", "upscore2"):
    assert leaves_equal(p8[name], p16[name]), name
  for name in ("score_pool3", "upscore_pool4", "upscore8"):
    assert leaves_equal(p8[name], fresh8.params[name]), name


def test_staged_initialisation_refuses_other_widths(tmp_path):
  """An earlier stage with other widths cannot initialise this one: the error names the module."""
  _save_stage(tmp_path, _tiny(**{"model.variant": "32s", "model.fc_width": 8}), 1)
  task, fresh = _fresh(_tiny(**{"init_from": str(tmp_path)}))
  with pytest.raises(ValueError) as error:
    task.warm_start(fresh)
  assert str(error.value) == (f"init_from={tmp_path}: fc6/bias is (8,) there but (16,) in the "
                              "network the config builds; use the same model widths and classes")


def test_init_from_through_the_system(cli_run):
  """A fresh run's state with init_from (`System.init_state`, what the trainer starts from)
  holds the earlier run's parameters."""
  workdir, _ = cli_run
  state = system.System(_tiny(init_from=str(workdir)), jax.devices()[:1]).init_state()
  _, _, params = _params_at(workdir, 4)
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), jax.device_get(state.params),
                       params)
  assert max(jax.tree.leaves(diffs)) == 0.0


def test_eval_mode_scores_init_from_weights_without_training(cli_run, tmp_path):
  """--mode=eval in an empty workdir with init_from scores the warm-started weights as step 0:
  the same scores as the run they came from."""
  workdir, _ = cli_run
  results = trainer.evaluate(_tiny(init_from=str(workdir)), tmp_path, devices=jax.devices()[:1])
  original = json.loads((workdir / "eval" / "step_00000004.json").read_text())
  assert (tmp_path / "eval" / "step_00000000.json").is_file()
  for score in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
    assert results[score] == pytest.approx(original[score], abs=1e-9)


def test_vgg_init_reads_converted_directories_only(tmp_path):
  """model.vgg_init=<converted vgg16_caffe directory> puts vgg, fc6 and fc7 in and keeps the
  scoring layers; a leaf of another shape is a one-line error naming the flag, the leaf and both
  shapes; an .npz (or any path that is no converted directory) is refused with the convert
  command, for init_from as well."""
  task, fresh = _fresh(_tiny())
  fresh_params = jax.device_get(fresh.params)
  trunk = {name: jax.tree.map(lambda x: np.asarray(x) + 1.0, fresh_params[name])
           for name in ("vgg", "fc6", "fc7")}
  checkpoint.save(convert.Converted("vgg16_caffe", {"params": trunk}, {}), tmp_path / "vgg", {})
  task.config.model.vgg_init = str(tmp_path / "vgg")
  warm = jax.device_get(task.warm_start(fresh).params)
  for name, subtree in warm.items():
    want = trunk.get(name, fresh_params[name])
    jax.tree.map(np.testing.assert_array_equal, subtree, want)

  trunk["fc6"]["bias"] = np.zeros(3, np.float32)
  checkpoint.save(convert.Converted("vgg16_caffe", {"params": trunk}, {}), tmp_path / "bad", {})
  task.config.model.vgg_init = str(tmp_path / "bad")
  with pytest.raises(ValueError) as error:
    task.warm_start(fresh)
  assert str(error.value) == (f"model.vgg_init={tmp_path / 'bad'}: fc6/bias is (3,) there but "
                              "(16,) in the network the config builds; use the same model "
                              "widths and classes")

  np.savez(tmp_path / "vgg.npz", **{"vgg/conv1_1/kernel": np.zeros((3, 3, 3, 4), np.float32)})
  task.config.model.vgg_init = str(tmp_path / "vgg.npz")
  with pytest.raises(FileNotFoundError) as error:
    task.warm_start(fresh)
  assert "\n" not in str(error.value)
  assert str(error.value).startswith(f"model.vgg_init={tmp_path / 'vgg.npz'} holds no converted")
  assert str(error.value).endswith(
      "convert vgg16_from_caffe.pth with python -m cpjax.tools.convert "
      "--from=vgg16_from_caffe.pth --model=vgg16_caffe --out=weights/vgg16_caffe and pass "
      "--config.model.vgg_init=weights/vgg16_caffe")
  task.config.model.vgg_init, task.config.init_from = "random", str(tmp_path / "vgg.npz")
  with pytest.raises(FileNotFoundError, match=r"^init_from=.*vgg.npz holds no converted .*"
                     r"python -m cpjax.tools.convert --from=fcn8s_from_caffe.pth --model=fcn8s "
                     r"--out=weights/fcn8s and pass --config.init_from=weights/fcn8s$"):
    task.warm_start(fresh)


def test_optimizer_groups():
  """Upscore kernels are frozen, biases form their own group (2x lr, no decay), the rest decays:
  one SGD step on unit gradients moves a weight by lr (1 + wd w) and a bias by 2 lr."""
  params = {"upscore2": {"kernel": np.ones((2, 2))}, "fc6": {"kernel": np.full((2,), 3.0),
                                                             "bias": np.zeros((2,))}}
  o = ml_collections.ConfigDict(dict(name="sgd", lr=0.1, momentum=0.9, b1=0.9, b2=0.999,
                                     weight_decay=0.01, bias_lr_mult=2.0))
  tx = fcn_task.make_optimizer(o)
  grads = jax.tree.map(np.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["upscore2"]["kernel"], 0.0)
  np.testing.assert_allclose(updates["fc6"]["kernel"], -0.1 * (1 + 0.01 * 3.0), rtol=1e-6)
  np.testing.assert_allclose(updates["fc6"]["bias"], -0.2, rtol=1e-6)


def test_vgg_init_random_reads_nothing():
  """model.vgg_init='random' (the tiny config's) is a request, not a path: the fresh state stays
  as it is."""
  task, fresh = _fresh(_tiny())
  assert task.config.model.vgg_init == "random"
  assert task.warm_start(fresh) is fresh


def test_missing_vgg_weights_stop_before_anything_is_built(tmp_path):
  """configs/fcn_voc.py without model.vgg_init stops with one line naming the flag, the file and
  its convert command, before any compilation or checkpoint."""
  run = _main(tmp_path / "w", "--config.data.source=seg_samples:train",
              "--config.eval.source=seg_samples:eval", config="configs/fcn_voc.py", devices=1)
  assert run.returncode == 1 and "Traceback" not in run.stderr
  message = [line for line in run.stderr.splitlines() if line.startswith("cpjax.main:")]
  assert len(message) == 1, run.stderr[-3000:]
  assert ("python -m cpjax.tools.convert --from=vgg16_from_caffe.pth --model=vgg16_caffe "
          "--out=weights/vgg16_caffe and pass --config.model.vgg_init=weights/vgg16_caffe"
          in message[0])
  assert not list((tmp_path / "w").glob("checkpoints/[0-9]*"))   # no checkpoint written


@pytest.mark.parametrize("setting", ["data", "eval"])
def test_a_source_without_labels_stops_before_training(tmp_path, setting):
  """Photos without label maps as the training or the evaluation source: one line naming the
  setting, the batches' fields and the sources that give 'label' (not a KeyError inside the
  traced step); no checkpoint is written."""
  config = _tiny(**{f"{setting}.source": "samples:train"})
  with pytest.raises(ValueError, match=rf"^--config.{setting}.source=samples:train gives batches "
                                       r"of image, index, (skipped|valid), but the fcn task also "
                                       r"reads 'label' \(a source with label maps: voc:ROOT"):
    trainer.train(config, tmp_path, devices=jax.devices()[:1])
  assert not list(tmp_path.glob("checkpoints/[0-9]*"))


def _full_resolution(voc_root, size: int, **overrides) -> ml_collections.ConfigDict:
  """configs/fcn_voc.py's default (the reference's geometry and schedule) on the tiny VOC tree,
  padded to `size` instead of 500, with a narrow network from random weights."""
  c = load_config("fcn_voc")
  c.data.source, c.eval.source = f"voc:{voc_root}:train", f"voc:{voc_root}:val"
  c.data.image_size = size
  c.model.widths, c.model.fc_width, c.model.vgg_init = (4, 4, 8, 8, 8), 16, "random"
  c.eval.num_examples, c.eval.batch_size = 1, 1
  c.checkpoint.async_save = False
  c.update_from_flattened_dict(overrides)
  return c


def test_full_resolution_batches_pad_whole_images(voc_root):
  """The default's training batches hold one whole image at its own resolution in the top-left
  of the canvas; the rest is label 255 and, in the image, the Caffe mean colour. With flips on,
  the image is mirrored inside its extent and the padding stays bottom/right."""
  c = _full_resolution(voc_root, 32, **{"data.source": f"voc:{voc_root}:val",
                                        "data.flip": True})
  (image_id,) = _IDS["val"]
  h, w = _SIZES[image_id]
  labels = _labels_for(image_id)
  item = voc.VOCSegmentationSource(str(voc_root), "val")[0]
  flips = []
  for batch in first_batches(c.data, 8, global_batch_size=c.batch_size, seed=0):
    assert batch["image"].shape == (1, 32, 32, 3) and batch["label"].shape == (1, 32, 32)
    flipped = not np.array_equal(batch["label"][0, :h, :w], labels)
    flips.append(flipped)
    window = np.s_[:, ::-1] if flipped else np.s_[:, :]
    np.testing.assert_array_equal(batch["label"][0, :h, :w], labels[window])
    np.testing.assert_array_equal(batch["image"][0, :h, :w], item["image"][window])
    assert np.all(batch["label"][0, h:] == 255) and np.all(batch["label"][0, :, w:] == 255)
    assert np.all(batch["image"][0, h:] == (123, 117, 104))
    assert np.all(batch["image"][0, :, w:] == (123, 117, 104))
  assert any(flips) and not all(flips)
  evaluated = next(pipeline.eval_batches(c.data, batch_size=1, mode="pad"))
  np.testing.assert_array_equal(evaluated["image"][0, :h, :w], item["image"])
  assert np.all(evaluated["image"][0, h:] == (123, 117, 104))
  with pytest.raises(ValueError, match=r"data.pad_color is \(300, 0, 0\); use an RGB colour"):
    pipeline.train_dataset(dict(c.data.to_dict(), pad_color=(300, 0, 0)), global_batch_size=1,
                           seed=0)


def test_full_resolution_training_at_batch_one(voc_root, tmp_path):
  """The default config trains through the loop on whole images of different sizes padded to
  one shape, at batch 1 on one device, and evaluates the same way (the eval JSON's scores come
  from the image's own pixels: the padding is ignored)."""
  c = _full_resolution(voc_root, 32, total_steps=2)
  state = trainer.train(c, tmp_path, devices=jax.devices()[:1])
  assert int(state.step) == 2
  result = json.loads((tmp_path / "eval" / "step_00000002.json").read_text())
  assert result["num_examples"] == 1 and 0.0 <= result["pixel_acc"] <= 1.0
  too_small = _full_resolution(voc_root, 16, total_steps=1)
  with pytest.raises(ValueError, match=r"is 20x28, larger than the padded size 16x16; raise "
                                       r"data.image_size .* or shrink the images with data.resize"):
    trainer.train(too_small, tmp_path / "small", devices=jax.devices()[:1])
