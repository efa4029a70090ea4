"""The harmonisation task on its tiny configs: synthetic and real problems, 1 vs 8 devices, the
HRNet learning-rate groups, DIH's two-stage schedule, and the command line on an
iHarmony4-format tree."""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, load_config, subprocess_env, tiny_config
from cpjax import tasks
from cpjax.tasks import harmonization
from cpjax.train import trainer, writers
from data.test_iharmony4 import make_tree

_tiny = functools.partial(tiny_config, "iharmony4_idih")


def _random_trunk(c):
  """An iDIH-HRNet config asking for a random HRNet trunk (no converted ImageNet weights)."""
  c.model.backbone_init = "random"
  return c


def _smooth_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  base = 60 + 120 * yy[None, ..., None] * rng.random((n, 1, 1, 3)) + 60 * xx[None, ..., None]
  return base.astype(np.uint8)


def _variables(state) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(
      {"params": state.params, "batch_stats": state.batch_stats}))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def _scale_out_config():
  """The tiny config with Adam's epsilon at 1e-3 instead of 1e-8. The conv biases that feed a
  BatchNorm (kept, like the reference's PyTorch defaults) have an analytically zero gradient;
  its float round-off (~1e-9) depends on the reduction order, i.e. on the device layout, and
  Adam with eps 1e-8 turns it into steps of +-lr (also shifting the running means). With eps
  1e-3 round-off moves nothing, while real gradients still train every other parameter."""
  return _tiny(total_steps=2, **{"optim.eps": 1e-3})


def test_synthetic_problems_change_only_the_masked_region():
  """Without a 'real' field: target = the image; composite = image outside a rotated-rectangle
  mask and a colour-changed image inside; each example depends on its index, not its slot."""
  task = tasks.build(_tiny())
  images = _smooth_images(3, 32)
  batch = {"image": jnp.asarray(images), "index": jnp.asarray([4, 7, 9], jnp.int32)}
  ex = jax.jit(lambda b: task.problems(b, jax.random.key(0), jnp.int32(0), False))(batch)
  np.testing.assert_allclose(ex["target"], images / 255.0, atol=1e-6)
  mask = np.asarray(ex["mask"])
  assert set(np.unique(mask)) == {0.0, 1.0}
  outside = np.broadcast_to(mask == 0, ex["composite"].shape)
  np.testing.assert_allclose(np.asarray(ex["composite"])[outside],
                             np.asarray(ex["target"])[outside], atol=1e-6)
  change = np.abs(np.asarray(ex["composite"]) - np.asarray(ex["target"]))[..., 0]
  assert change[mask[..., 0] == 1].mean() > 0.01
  single = {"image": batch["image"][2:], "index": batch["index"][2:]}
  ex1 = jax.jit(lambda b: task.problems(b, jax.random.key(0), jnp.int32(0), False))(single)
  np.testing.assert_allclose(ex1["composite"][0], ex["composite"][2], atol=1e-6)


def _synthetic(image: np.ndarray, seed: int, **kw) -> dict[str, np.ndarray]:
  transform = harmonization.TransformConfig.from_dict(load_config("harmonization_demo").transform)
  config = harmonization.SyntheticConfig.from_dict(kw) if kw else None
  made = harmonization.synthetic_problem(jax.random.key(seed), jnp.asarray(image), transform,
                                         config)
  return {k: np.asarray(v) for k, v in made.items()}


def test_synthetic_strength_scales_the_change():
  """config.synthetic.strength: s = 0 pastes the unchanged photo (the composite is the target),
  s = 1 is the plain copy-paste example, s = 0.5 half its change, all inside the same mask;
  none_fraction=1 makes every s 0."""
  image = _smooth_images(1, 32)[0] / np.float32(255.0)
  plain = _synthetic(image, 3)
  none = _synthetic(image, 3, strength=(0.0, 0.0))
  full = _synthetic(image, 3, strength=(1.0, 1.0))
  half = _synthetic(image, 3, strength=(0.5, 0.5))
  forced = _synthetic(image, 3, strength=(1.0, 1.0), none_fraction=1.0)
  np.testing.assert_allclose(none["composite"], image, atol=1e-6)
  np.testing.assert_allclose(forced["composite"], image, atol=1e-6)
  np.testing.assert_allclose(full["composite"], plain["composite"], atol=1e-6)
  np.testing.assert_array_equal(half["mask"], plain["mask"])
  np.testing.assert_allclose(half["composite"] - image, (plain["composite"] - image) / 2,
                             atol=1e-5)
  assert np.abs(plain["composite"] - image).max() > 0.05


def test_synthetic_blobs_replace_rectangles_at_their_fraction():
  """blob_fraction=1: every mask is an object-like blob (not the rectangle drawn for the same
  key), within its radius range; the composite changes inside it only. 0: the rectangle."""
  image = _smooth_images(1, 64)[0] / np.float32(255.0)
  for seed in range(4):
    rectangle = _synthetic(image, seed)["mask"]
    blob = _synthetic(image, seed, blob_fraction=1.0, blob_radius=(0.15, 0.25))
    assert not np.array_equal(blob["mask"], rectangle)
    area = blob["mask"].mean()
    assert np.pi * (0.15 * 0.5) ** 2 * 0.5 < area < np.pi * (0.25 * 1.5) ** 2
    outside = np.broadcast_to(blob["mask"] == 0, image.shape)
    np.testing.assert_allclose(blob["composite"][outside], image[outside], atol=1e-6)
    kept = _synthetic(image, seed, blob_fraction=0.0)["mask"]
    np.testing.assert_array_equal(kept, rectangle)


def test_synthetic_recolor_changes_the_target_with_the_whole_photo():
  """recolor: the target is the photo after one random T_color (not the photo), the composite
  equals that target outside the mask, and at strength 0 everywhere."""
  image = _smooth_images(1, 32)[0] / np.float32(255.0)
  made = _synthetic(image, 5, recolor=True, strength=(0.0, 0.0))
  assert np.abs(made["target"] - image).mean() > 0.01
  np.testing.assert_allclose(made["composite"], made["target"], atol=1e-6)
  shifted = _synthetic(image, 5, recolor=True)
  np.testing.assert_allclose(shifted["target"], made["target"], atol=1e-6)
  outside = np.broadcast_to(shifted["mask"] == 0, image.shape)
  np.testing.assert_allclose(shifted["composite"][outside], shifted["target"][outside],
                             atol=1e-6)
  assert np.abs(shifted["composite"] - shifted["target"]).max() > 0.05
  np.testing.assert_array_equal(_synthetic(image, 5)["target"], image)


def test_camera_shift_is_gamma_gains_then_saturation():
  """camera_shift: identity at unit factors, x ** gamma * gains, saturation 0 gives the pixel's
  channel mean, and the result is clipped to [0, 1]."""
  image = _smooth_images(1, 8)[0] / np.float32(255.0)
  shift = lambda *f: np.asarray(harmonization.camera_shift(jnp.asarray(image), *f))
  np.testing.assert_allclose(shift(1.0, np.ones(3), 1.0), image, atol=1e-6)
  gains = np.array([0.5, 1.0, 1.5], np.float32)
  np.testing.assert_allclose(shift(2.0, gains, 1.0), np.clip(image ** 2 * gains, 0, 1), atol=1e-5)
  grey = shift(1.0, np.ones(3), 0.0)
  np.testing.assert_allclose(grey, np.broadcast_to(image.mean(-1, keepdims=True), image.shape),
                             atol=1e-6)
  assert shift(1.0, np.full(3, 4.0), 1.0).max() == 1.0


def test_synthetic_camera_fraction_picks_the_camera_shift():
  """camera_fraction=1: the pasted change is the camera-like shift (with camera_range 0, an
  identity: the composite is the photo), inside the same mask as T_color's problem."""
  image = _smooth_images(1, 32)[0] / np.float32(255.0)
  for seed in range(3):
    t_color = _synthetic(image, seed, strength=(1.0, 1.0))
    none = _synthetic(image, seed, strength=(1.0, 1.0), camera_fraction=1.0, camera_range=0.0)
    np.testing.assert_allclose(none["composite"], image, atol=1e-6)
    camera = _synthetic(image, seed, strength=(1.0, 1.0), camera_fraction=1.0, camera_range=0.4)
    np.testing.assert_array_equal(camera["mask"], t_color["mask"])
    change = np.abs(camera["composite"] - image).max(-1)
    assert change[camera["mask"][..., 0] == 1].mean() > 0.005
    np.testing.assert_allclose(change[camera["mask"][..., 0] == 0], 0.0, atol=1e-6)
    assert np.abs(camera["composite"] - t_color["composite"]).max() > 0.02


def test_strength_curriculum_applies_in_training_only():
  """strength_start/curriculum_steps: s ~ U(strength_start) at step 0, moving linearly to
  U(strength) by curriculum_steps; evaluation (train=False) draws from `strength` at any step."""
  synthetic = dict(strength=(0.0, 0.0), strength_start=(1.0, 1.0), curriculum_steps=100)
  config = harmonization.SyntheticConfig.from_dict(synthetic)
  for step, expected in ((0, 1.0), (50, 0.5), (100, 0.0), (400, 0.0)):
    np.testing.assert_allclose(config.strength_range(jnp.int32(step)), (expected, expected))
  task = tasks.build(_tiny(**{"synthetic": synthetic}))
  image = _smooth_images(1, 32)
  batch = {"image": jnp.asarray(image), "index": jnp.asarray([3], jnp.int32)}
  made = jax.jit(lambda step, train: task.problems(batch, jax.random.key(1), step, train),
                 static_argnums=1)
  for step, train, changed in ((0, True, True), (100, True, False), (0, False, False)):
    ex = made(jnp.int32(step), train)
    change = np.abs(np.asarray(ex["composite"]) - np.asarray(ex["target"])).max()
    assert (change > 0.02) == changed, (step, train, change)


def test_synthetic_config_rejects_unknown_keys():
  with pytest.raises(ValueError, match="unknown keys \\['strenght'\\]; use strength"):
    harmonization.SyntheticConfig.from_dict({"strenght": (0.0, 1.0)})


def test_real_pairs_keep_soft_masks_in_training():
  """iHarmony4 batches: composite/real from the fields; the soft mask of a bilinear resize is
  mask / 255 in training as in evaluation (saic-vul trains on its bilinearly resized mask)."""
  task = tasks.build(_tiny())
  mask = np.array([0, 100, 128, 200, 255], np.uint8).reshape(1, 1, 5, 1)
  batch = {"image": np.zeros((1, 1, 5, 3), np.uint8), "real": np.full((1, 1, 5, 3), 255, np.uint8),
           "mask": mask, "index": np.zeros(1, np.int32), "subset": np.array([2], np.int32)}
  for train in (True, False):
    ex = task.problems(batch, jax.random.key(0), jnp.int32(0), train)
    np.testing.assert_allclose(ex["mask"][0, 0, :, 0], [0, 100 / 255, 128 / 255, 200 / 255, 1],
                               atol=1e-6)
    assert float(ex["target"].min()) == 1.0 and int(ex["subset"][0]) == 2


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("one_device")
  return workdir, trainer.train(_scale_out_config(), workdir, devices=jax.devices()[:1])


def test_eight_devices_match_one_device(one_device_run, tmp_path):
  """The same global batch on 8 devices gives the same parameters, BatchNorm statistics
  (synchronised over the global batch) and evaluation as on 1 device (1e-5)."""
  assert jax.device_count() == 8
  ref_dir, ref_state = one_device_run
  state = trainer.train(_scale_out_config(), tmp_path, devices=jax.devices())
  ref, got = _variables(ref_state), _variables(state)
  assert ref.keys() == got.keys() and any("batch_stats" in k for k in ref)
  worst = max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref)
  assert worst < 1e-5, worst
  ref_eval = json.loads((ref_dir / "eval" / "step_00000002.json").read_text())
  got_eval = json.loads((tmp_path / "eval" / "step_00000002.json").read_text())
  for key in ("result", "composite"):
    assert got_eval[key]["All"] == pytest.approx(ref_eval[key]["All"], rel=1e-4)
  for _, path, baselines in harmonization.HarmonizationTask.curves:   # eval/curves.png's paths
    for p in [path, *baselines.values()]:
      assert writers._lookup(got_eval, p) is not None, p  # pylint: disable=protected-access


def test_hrnet_trunk_trains_at_a_tenth_of_the_learning_rate():
  """Adam's first step moves each parameter by lr: 1e-4 in the HRNet trunk ('backbone/hrnet'),
  1e-3 in its OCR head, its mask fusion and the iDIH."""
  task = tasks.build(tiny_config("iharmony4_idih_hrnet"))
  params = {"backbone": {"hrnet": {"conv1": {"kernel": jnp.zeros(3)}},
                         "ocr_conv3x3": {"0": {"kernel": jnp.zeros(3)}},
                         "mask_conv": {"0": {"kernel": jnp.zeros(3)}}},
            "model": {"encoder": {"kernel": jnp.zeros(3)}}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = task.tx.update(grads, task.tx.init(params), params)
  steps = jax.tree.map(lambda u: float(-u[0]), updates)
  assert steps["backbone"]["hrnet"]["conv1"]["kernel"] == pytest.approx(1e-4, rel=1e-4)
  for sub in (steps["backbone"]["ocr_conv3x3"]["0"], steps["backbone"]["mask_conv"]["0"],
              steps["model"]["encoder"]):
    assert sub["kernel"] == pytest.approx(1e-3, rel=1e-4)


def test_pyramid_variant_builds_the_pyramid_model():
  """configs/iharmony4_idih_hrnet.py:w18s_v2p reaches the model: the task's parameters hold the
  feature pyramid ('downsize', at the full learning rate) and number 18,090,581 (tests/models/test_dih.py derives it)."""
  task = tasks.build(_random_trunk(load_config("iharmony4_idih_hrnet", "w18s_v2p")))
  state = jax.eval_shape(task.init, jax.random.key(0))
  assert set(state.params) == {"backbone", "downsize", "model"}
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)) == 18_090_581


def test_no_mask_variant_has_no_mask_fusion():
  """configs/iharmony4_idih_hrnet.py:w18s_no_mask (reference hrnet18s_no_mask_idih): the HRNet
  trunk gets no mask-fusion conv: w18s minus its 3x3 conv 1 -> 64 with bias and its scale
  (9 * 64 + 64 + 1 = 641 parameters); the iDIH still reads the mask."""
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
  params = {}
  for variant in ("w18s", "w18s_no_mask"):
    task = tasks.build(_random_trunk(load_config("iharmony4_idih_hrnet", variant)))
    params[variant] = jax.eval_shape(task.init, jax.random.key(0)).params
  assert "mask_conv" in params["w18s"]["backbone"]
  assert "mask_conv" not in params["w18s_no_mask"]["backbone"]
  assert count(params["w18s"]) - count(params["w18s_no_mask"]) == 641
  encoder_in = params["w18s_no_mask"]["model"]["encoder"]["block0"]["conv"]["kernel"].shape[2]
  assert encoder_in == 4   # image + mask


def test_dih_two_stage_schedule():
  """Joint stage (step < stage1_steps): L = L_rec + 100 CE and the parsing decoder learns; then
  L = L_rec and the parsing decoder (weights and BatchNorm statistics) stays fixed while the
  harmonisation decoder keeps learning."""
  c = tiny_config("iharmony4_dih", **{"loss.stage1_steps": 1})
  task = tasks.build(c)
  state = jax.jit(task.init)(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(_smooth_images(4, 32)), "index": jnp.arange(4, dtype=jnp.int32),
           "label": jnp.asarray(rng.choice([0, 3, 25, 255], (4, 32, 32)).astype(np.uint8))}
  step = jax.jit(task.train_step)
  s1, m1 = step(state, batch, jax.random.key(1))
  assert float(m1["loss"]) == pytest.approx(
      float(m1["reconstruction"]) + 100 * float(m1["parsing_ce"]), rel=1e-5)
  s2, m2 = step(s1, batch, jax.random.key(1))
  assert float(m2["loss"]) == pytest.approx(float(m2["reconstruction"]), rel=1e-6)
  moved = lambda a, b: max(float(jnp.max(jnp.abs(x - y)))  # noqa: E731
                           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert moved(state.params["parsing_decoder"], s1.params["parsing_decoder"]) > 0
  assert moved(s1.params["parsing_decoder"], s2.params["parsing_decoder"]) == 0
  assert moved(s1.batch_stats["parsing_decoder"], s2.batch_stats["parsing_decoder"]) == 0
  assert moved(s1.params["harmonization_decoder"], s2.params["harmonization_decoder"]) > 0


def test_apply_change_is_a_resize_of_the_change_onto_the_extent():
  """apply_change = clip(composite + mask * resize(change, (h, w))) (jax.image.resize: up- and
  downsampling), and an image padded into a larger canvas gets the same pixels."""
  from cpjax.tasks.harmonization import apply_change  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for h, w in ((20, 30), (10, 12)):
    composite = jnp.asarray(rng.random((h, w, 3)), jnp.float32)
    mask = jnp.asarray(rng.random((h, w, 1)) > 0.5, jnp.float32)
    change = jnp.asarray(rng.normal(0, 0.2, (16, 16, 3)), jnp.float32)
    want = jnp.clip(composite + mask * jax.image.resize(change, (h, w, 3), "linear"), 0, 1)
    got = apply_change(composite, mask, change, jnp.asarray((h, w)))
    np.testing.assert_allclose(got, want, atol=1e-6)
    pad = [(0, 24 - h), (0, 40 - w), (0, 0)]
    padded = jax.jit(apply_change)(jnp.pad(composite, pad), jnp.pad(mask, pad), change,
                                   jnp.asarray((h, w)))
    np.testing.assert_allclose(padded[:h, :w], want, atol=1e-6)


def test_full_resolution_evaluation(tmp_path):
  """eval.mode='full' adds scores at each image's own size: the composite's equal NumPy's on
  the files as read (the two test images, 32x32 and 30x50, share one padded canvas), and the
  result's tables have the same rows as the model-size ones."""
  from data_pipelines import sources  # pylint: disable=g-import-not-at-top
  root = make_tree(tmp_path / "iHarmony4")
  spec = f"iharmony4:{root}:{{}}:HCOCO,Hday2night"
  c = _tiny(**{"data.source": spec.format("train"), "eval.source": spec.format("test"),
               "eval.mode": "full", "eval.full_size": 50, "eval.num_examples": 2,
               "eval.repeats": 1, "eval.batch_size": 4, "total_steps": 1})
  trainer.train(c, tmp_path / "w", devices=jax.devices()[:1])
  result = json.loads((tmp_path / "w" / "eval" / "step_00000001.json").read_text())
  source = sources.make_source(spec.format("test"))
  mse, fmse = [], []
  for i in range(2):
    item = source[i]
    err = np.square(item["image"].astype(np.float64) - item["real"].astype(np.float64))
    mse.append(err.mean())
    fg = item["mask"][..., 0] > 127
    fmse.append(err[fg].sum() / (3 * fg.sum() + 1e-6))
  assert result["composite_full"]["All"]["MSE"] == pytest.approx(np.mean(mse), rel=1e-4)
  assert result["composite_full"]["All"]["fMSE"] == pytest.approx(np.mean(fmse), rel=1e-4)
  assert result["composite_full"]["All"]["N"] == 2
  assert set(result["result_full"]["subset"]) == set(result["result"]["subset"])
  assert result["full_mse"] == pytest.approx(result["result_full"]["All"]["MSE"])
  assert "| result |" in result["table_subset_full"]


def _main(workdir, config, *extra):
  return [sys.executable, "-m", "cpjax.main", f"--config={config}", f"--workdir={workdir}",
          "--config.checkpoint.async_save=False", *extra]


def test_command_line_on_an_iharmony4_tree(tmp_path):
  """Train 2 steps on an iHarmony4-format tree, evaluate with the reference geometry (resize);
  the eval JSON holds per-subset and foreground-ratio tables for the result and the composite;
  eval_sweep then evaluates the other checkpoint."""
  root = make_tree(tmp_path / "iHarmony4")
  env = subprocess_env()
  spec = f"iharmony4:{root}:{{}}:HCOCO,Hday2night"
  args = ["configs/iharmony4_idih.py:tiny", f"--config.data.source={spec.format('train')}",
          f"--config.eval.source={spec.format('test')}", "--config.eval.mode=resize",
          "--config.eval.num_examples=2",
          "--config.eval.repeats=1", "--config.eval.batch_size=2", "--config.batch_size=4",
          "--config.total_steps=2", "--config.checkpoint.every_steps=1"]
  run = subprocess.run(_main(tmp_path / "w", *args), cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((tmp_path / "w" / "eval" / "step_00000002.json").read_text())
  assert result["num_examples"] == 2
  for method in ("result", "composite"):
    assert set(result[method]["subset"]) == {"HCOCO", "Hday2night"}
    assert result[method]["subset"]["HCOCO"]["N"] == 1
    assert result[method]["All"]["N"] == 2
  assert result["composite"]["All"]["MSE"] > 100          # the inverted foreground
  assert "| composite |" in result["table_subset"] and "Hday2night" in result["table_subset"]
  sweep = subprocess.run(_main(tmp_path / "w", *args, "--mode=eval_sweep"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
  assert sweep.returncode == 0, sweep.stderr[-3000:]
  assert (tmp_path / "w" / "eval" / "step_00000001.json").exists()


def test_missing_dataset_message(tmp_path):
  """configs/iharmony4_idih.py without data stops with one line saying how to fix it."""
  run = subprocess.run(_main(tmp_path, "configs/iharmony4_idih.py"), cwd=REPO,
                       capture_output=True, text=True, timeout=300,
                       env=subprocess_env())
  assert run.returncode == 1
  assert "--config.data.source=iharmony4:" in run.stderr
  assert "harmonization_demo.py" in run.stderr and "Traceback" not in run.stderr


def test_missing_hrnet_weights_stop_before_anything_is_built(tmp_path):
  """configs/iharmony4_idih_hrnet.py without model.backbone_init stops with one line naming the
  flag, the released file and its convert command, before any compilation or checkpoint."""
  run = subprocess.run(_main(tmp_path / "w", "configs/iharmony4_idih_hrnet.py",
                             "--config.data.source=samples:train",
                             "--config.eval.source=samples:eval"),
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=subprocess_env())
  assert run.returncode == 1 and "Traceback" not in run.stderr
  message = [line for line in run.stderr.splitlines() if line.startswith("cpjax.main:")]
  assert len(message) == 1, run.stderr[-3000:]
  assert "--config.model.backbone_init=weights/hrnet_w18s" in message[0]
  assert ("python -m cpjax.tools.convert --from=hrnet_w18_small_model_v2.pth --model=hrnet_w18s"
          in message[0])
  assert not list((tmp_path / "w").glob("checkpoints/[0-9]*"))   # no checkpoint written


def test_random_or_converted_trunk_is_accepted(tmp_path):
  """backbone_init='random' (as the tiny variant sets it) builds the task and its warm start
  reads nothing; init_from (a whole converted network) satisfies the requirement too, and
  an unknown width is named."""
  task = tasks.build(tiny_config("iharmony4_idih_hrnet"))
  state = jax.eval_shape(task.init, jax.random.key(0))
  assert task.warm_start(state) is state
  c = load_config("iharmony4_idih_hrnet", "w18")
  c.init_from = str(tmp_path)
  tasks.build(c).check_warm_start()
  c.init_from, c.model.hrnet_width = "", "w48"
  with pytest.raises(ValueError, match="model.hrnet_width is 'w48'; use one of w18s, w18, w32"):
    tasks.build(c).check_warm_start()
