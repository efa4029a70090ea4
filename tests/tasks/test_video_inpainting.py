"""The video-inpainting task: synthetic sequences vs OpenCV, holes from a mask folder, the
nearest-fill baseline, and training / evaluation through the shared loop (command line, 1 vs 8
devices)."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import (REPO, evaluate_twice, first_batches, flat_params, load_config, numpy_params,
                      subprocess_env, tiny_config)
from cpjax import convert, tasks
from cpjax.convert import checkpoint
from cpjax.ops import masks
from cpjax.tasks import video_inpainting
from cpjax.train import partitioning, trainer, writers
from data_pipelines import video_clips
from data_pipelines.voc import PALETTE


def test_sequence_frames_are_the_photo_warped_by_their_motions(rng):
  """Frame t = cv2.warpAffine(photo, motion_t, BORDER_REFLECT_101) (clipped to [0, 1]); the
  first motion is the zoom about the centre; the holes are binary and move."""
  task = tasks.build(load_config("video_inpainting", "tiny"))
  image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
  ex = jax.jit(task._sequence)(rng, jnp.asarray(image))  # pylint: disable=protected-access
  frames, motions = np.asarray(ex["frames"]), np.asarray(ex["motions"])
  zoom = task.config.sequence.zoom
  np.testing.assert_allclose(motions[0], [[zoom, 0, 15.5 * (1 - zoom)], [0, zoom, 15.5 * (1 - zoom)]],
                             atol=1e-5)
  for t in range(5):
    want = cv2.warpAffine(image, motions[t].astype(np.float64), (32, 32), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(frames[t], np.clip(want, 0, 1), atol=1e-4)
  holes = np.asarray(ex["holes"])
  assert set(np.unique(holes)) <= {0.0, 1.0} and holes.sum() > 0
  assert np.any(holes[0] != holes[4])


def test_static_sequences_repeat_the_zoomed_photo_and_keep_their_moving_hole(rng):
  """sequence.static_fraction=1: every motion is the zoom and every frame the same, while the
  hole (same key) is the one of the moving camera and still moves; 0.5 makes about half the
  sequences static, and the moving ones are those of static_fraction=0."""
  image = jnp.asarray(np.random.default_rng(0).random((32, 32, 3)).astype(np.float32))
  keys = jax.random.split(rng, 64)
  got = {}
  for name, fraction in (("moving", 0.0), ("static", 1.0), ("half", 0.5)):
    config = load_config("video_inpainting", "tiny")
    config.sequence.static_fraction = fraction
    task = tasks.build(config)
    make = jax.jit(task._sequence)  # pylint: disable=protected-access
    got[name] = {k: np.asarray(v) for k, v in jax.vmap(make, (0, None))(keys, image).items()}
  frames, motions = got["static"]["frames"], got["static"]["motions"]
  np.testing.assert_allclose(motions, np.broadcast_to(motions[:, :1], motions.shape), atol=1e-6)
  np.testing.assert_allclose(frames, np.broadcast_to(frames[:, :1], frames.shape), atol=1e-6)
  np.testing.assert_allclose(frames[:, 0], got["moving"]["frames"][:, 0], atol=1e-6)
  holes = got["static"]["holes"]
  np.testing.assert_array_equal(holes, got["moving"]["holes"])
  assert np.any(holes[:, 0] != holes[:, 4])
  half_frames = got["half"]["frames"]
  still = np.all(np.abs(half_frames - half_frames[:, :1]) < 1e-6, axis=(1, 2, 3, 4))
  assert 16 <= still.sum() <= 48, still.sum()
  np.testing.assert_allclose(half_frames[~still], got["moving"]["frames"][~still], atol=1e-6)


def test_a_given_shape_is_the_first_hole_and_moves_like_opencv(rng):
  """moving_shape_masks: frame 0 is the shape; frame t is cv2.warpAffine of it by the object
  path A_t (bilinear, constant 0 border) thresholded at 0.5; the shape does move."""
  shape = np.zeros((32, 40, 1), np.float32)
  shape[8:20, 10:16] = shape[16:20, 10:30] = 1.0
  ranges = masks.MovingMaskRanges(translation=0.1)
  holes = np.asarray(jax.jit(lambda k, s: masks.moving_shape_masks(k, s, 5, ranges))(rng, shape))
  path = np.asarray(masks.object_path(rng, 5, 32, 40, ranges))
  np.testing.assert_array_equal(holes[0], shape)
  for t in range(1, 5):
    want = cv2.warpAffine(shape[..., 0], path[t].astype(np.float64), (40, 32),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) > 0.5
    assert np.sum(holes[t, ..., 0] != want) <= 2, t   # a sample near 0.5 may round either way
  assert not np.array_equal(holes[4], shape)


def test_train_step_with_a_mask_folder_uses_its_masks_as_holes(tmp_path):
  """configs/video_inpainting.py:tiny with data.mask_source: every example's frame-0 hole is
  the pipeline's 'object_mask' (a VOC palette object or a binary mask), and a train step runs."""
  ids = np.zeros((48, 64), np.uint8)
  ids[4:30, 6:40], ids[30:46, 20:60] = 1, 2
  ids[3, 5:41] = 255
  voc_png = Image.fromarray(ids, "P")
  voc_png.putpalette(PALETTE.ravel().tolist())
  voc_png.save(tmp_path / "objects.png")
  binary = np.zeros((40, 40), np.uint8)
  binary[5:35, 12:28] = 255
  Image.fromarray(binary).save(tmp_path / "person.jpg")
  config = load_config("video_inpainting", "tiny")
  config.data.mask_source = str(tmp_path)
  task = tasks.build(config)
  batch, = first_batches(config.data, 1, global_batch_size=config.batch_size, seed=config.seed)
  batch.pop("skipped")
  key = jax.random.key(0)
  ex = jax.jit(task.problems)(batch, key, jnp.zeros((), jnp.int32))
  np.testing.assert_array_equal(np.asarray(ex["holes"][:, 0]), batch["object_mask"] / 255)
  state, metrics = jax.jit(task.train_step)(task.init(key), batch, key)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_real_clips_are_used_as_they_are_with_the_same_holes(tmp_path):
  """With a video_clips source the example's frames are the clip's (scaled to [0, 1]), its
  motions translations (the target's the identity) and its holes those a still image gets from
  the same key; train and eval steps run; clips of another length than sequence.num_frames are
  a clear error."""
  for s, name in enumerate(("bear", "car")):
    (tmp_path / name).mkdir()
    for i in range(6):
      frame = np.random.default_rng([s, i]).integers(0, 256, (40, 48, 3), dtype=np.uint8)
      Image.fromarray(frame).save(tmp_path / name / f"{i:05d}.jpg")
  config = load_config("video_inpainting", "tiny")
  config.data.source = f"video_clips:{tmp_path}"
  task = tasks.build(config)
  batch, = first_batches(config.data, 1, global_batch_size=config.batch_size, seed=config.seed)
  batch.pop("skipped")
  key, step = jax.random.key(0), jnp.zeros((), jnp.int32)
  ex = jax.jit(task.problems)(batch, key, step)
  clips = np.stack([batch[video_clips.frame_field(k)] for k in range(5)], axis=1)
  np.testing.assert_allclose(np.asarray(ex["frames"]), clips / 255.0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ex["motions"])[:, :, :, :2],
                                np.broadcast_to(np.eye(2), (config.batch_size, 5, 2, 2)))
  np.testing.assert_array_equal(np.asarray(ex["motions"])[:, 2], np.eye(2, 3)[None].repeat(8, 0))
  still = jax.jit(task.problems)({"image": batch["image"], "index": batch["index"]}, key, step)
  np.testing.assert_array_equal(np.asarray(ex["holes"]), np.asarray(still["holes"]))
  state, metrics = jax.jit(task.train_step)(task.init(key), batch, key)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))
  scores = jax.jit(task.eval_step)(state, batch, key)
  assert np.all(np.isfinite(np.asarray(scores["psnr"])))
  config.sequence.num_frames = 4
  with pytest.raises(ValueError, match="clips of 5 frames but sequence.num_frames is 4"):
    tasks.build(config).problems(batch, key, step)


def test_clip_motions_are_the_shifts_between_frames_and_the_baseline_uses_them():
  """A clip whose frames are shifted crops of a photo: 'motions' are the translations from the
  target (frame 2) to each frame, and 'prev_frame' moves frame 1 onto the target by them, so
  with a hole the previous frame sees, it restores the target almost exactly."""
  import skimage.data  # pylint: disable=import-outside-toplevel
  photo = skimage.data.astronaut()
  shifts = [(4, -3), (2, 1), (0, 0), (-3, 2), (-5, 5)]         # (dx, dy) of frame t vs frame 2
  frames = [photo[120 - dy:152 - dy, 200 - dx:232 - dx] for dx, dy in shifts]
  batch = {video_clips.frame_field(t): f[None] for t, f in enumerate(frames)}
  batch["index"] = np.zeros(1, np.int32)
  task = tasks.build(load_config("video_inpainting", "tiny"))
  ex = jax.jit(task.problems)(batch, jax.random.key(0), jnp.zeros((), jnp.int32))
  np.testing.assert_array_equal(np.asarray(ex["motions"])[0, :, :, 2], shifts)
  ex["holes"] = jnp.zeros_like(ex["holes"]).at[:, 2, 12:20, 12:20].set(1.0)
  baselines = jax.jit(task._baselines)(ex)  # pylint: disable=protected-access
  prev = np.asarray(baselines["prev_frame"])[0]
  hole = np.asarray(ex["holes"])[0, 2, ..., 0] > 0
  np.testing.assert_allclose(prev[hole], frames[2][hole] / 255.0, atol=1e-5)


def test_baselines_are_scored_by_baseline_step_not_by_the_eval_step():
  """The eval step scores the network alone; `baseline_step` scores 'mean_fill' (the mean colour
  of the target's visible pixels in its hole, recomputed here in NumPy) and 'prev_frame' on the
  same problems, under the names the eval JSON has always used."""
  task = tasks.build(load_config("video_inpainting", "tiny"))
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
           "index": np.arange(4, dtype=np.int32)}
  key = jax.random.key(0)
  scores = jax.device_get(jax.jit(task.eval_step)(task.init(key), batch, key))
  assert set(scores) == {"scored", "psnr", "ssim", "hole_l1"}
  baselines = jax.device_get(jax.jit(task.baseline_step)(batch, key))
  assert set(baselines) == {f"{b}_{m}" for b in ("mean_fill", "prev_frame")
                            for m in ("psnr", "ssim", "hole_l1")}
  ex = jax.device_get(jax.jit(task.problems)(batch, key, jnp.zeros((), jnp.int32)))
  gt, hole = ex["frames"][:, 2].astype(np.float64), ex["holes"][:, 2].astype(np.float64)
  assert np.all(hole.sum(axis=(1, 2, 3)) > 0)
  mean = (gt * (1 - hole)).sum(axis=(1, 2)) / (1 - hole).sum(axis=(1, 2))
  filled = gt * (1 - hole) + mean[:, None, None] * hole
  mse = np.mean((filled - gt) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(baselines["mean_fill_psnr"], 10 * np.log10(1 / mse), rtol=1e-4)
  np.testing.assert_allclose(baselines["mean_fill_hole_l1"],
                             np.sum(np.abs(filled - gt) * hole, axis=(1, 2, 3))
                             / (3 * hole.sum(axis=(1, 2, 3))), rtol=1e-4)


def test_the_trainer_scores_the_baselines_once_for_every_evaluation(tmp_path):
  """Two evaluations of a run: the first computes the baselines (`baseline_step`), the second
  reuses their sums (the baseline function is gone by then) and reports the same baseline
  values, beside the network's own scores."""
  first, second = evaluate_twice(tiny_config("video_demo"), tmp_path)
  for name in ("psnr", "ssim", "hole_l1"):
    for prefix in ("mean_fill_", "prev_frame_"):
      assert first[prefix + name] == second[prefix + name]
    assert first[name] == pytest.approx(second[name], rel=1e-5)
  assert first["prev_frame_psnr"] > first["mean_fill_psnr"]


def test_fill_nearest_keeps_valid_pixels_and_reaches_only_so_far():
  """Valid pixels are unchanged; one valid pixel spreads its value over chessboard distance
  <= iterations and no further."""
  image = jnp.zeros((9, 9, 2)).at[4, 4].set(jnp.array([0.3, 0.7]))
  valid = jnp.zeros((9, 9, 1)).at[4, 4].set(1.0)
  got = np.asarray(jax.jit(video_inpainting.fill_nearest, static_argnums=2)(image, valid, 2))
  ys, xs = np.mgrid[0:9, 0:9]
  near = np.maximum(np.abs(ys - 4), np.abs(xs - 4)) <= 2
  np.testing.assert_allclose(got[near], np.broadcast_to([0.3, 0.7], got[near].shape), atol=1e-6)
  np.testing.assert_array_equal(got[~near], 0.0)


def test_hole_dilation_matches_opencv_cross():
  """dilate_cross on [N, H, W, 1] (under jit) = cv2.dilate with the 3x3 cross, per frame."""
  m = (np.random.default_rng(0).random((2, 20, 25, 1)) > 0.97).astype(np.float32)
  got = np.asarray(jax.jit(video_inpainting.dilate_cross, static_argnums=1)(m, 4))
  kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
  for i in range(2):
    np.testing.assert_array_equal(got[i, ..., 0], cv2.dilate(m[i, ..., 0], kernel, iterations=4))


def test_clips_with_their_own_holes_use_them_dilated_and_score_only_holed_targets():
  """A batch with 'hole_k' fields (a davis source): the holes are the fields' 1s (not the
  pipeline's label padding, 255) dilated sequence.dilate times with the cross (cv2); an example
  whose target frame has no hole gets 'scored' 0 and stays out of the means."""
  config = load_config("video_inpainting", "tiny")
  task = tasks.build(config)
  rng = np.random.default_rng(0)
  batch = {video_clips.frame_field(k): rng.integers(0, 256, (2, 32, 40, 3), dtype=np.uint8)
           for k in range(5)}
  labels = (rng.random((5, 2, 32, 40)) > 0.995).astype(np.uint8)
  labels[:, :, :, -3:] = 255                                # padding, not a hole
  labels[2, 1] = 0                                          # example 1: target without a hole
  batch.update({video_clips.hole_field(k): labels[k] for k in range(5)})
  batch["index"] = np.arange(2, dtype=np.int32)
  key = jax.random.key(0)
  ex = jax.jit(task.problems)(batch, key, jnp.zeros((), jnp.int32))
  cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
  for k in range(5):
    for b in range(2):
      want = cv2.dilate((labels[k, b] == 1).astype(np.uint8), cross, iterations=4)
      np.testing.assert_array_equal(np.asarray(ex["holes"])[b, k, ..., 0], want)
  state = task.init(key)
  scores = jax.device_get(jax.jit(task.eval_step)(state, batch, key))
  np.testing.assert_array_equal(scores["scored"], [1.0, 0.0])
  sums = {k: np.sum(v, axis=0, dtype=np.float64) for k, v in scores.items()}
  summary = task.summarize_eval(sums, 2)
  assert summary["scored_examples"] == 1 and summary["psnr"] == pytest.approx(scores["psnr"][0])


def test_davis_evaluation_of_a_trained_run(video_demo_tiny_run, tmp_path):
  """--mode=eval of the tiny run's checkpoint on a DAVIS-layout tree with the 'davis' variant's
  settings (240x424 frames here shrunk to 24x40): every clip scored, with the baselines."""
  import shutil  # pylint: disable=import-outside-toplevel
  workdir, _ = video_demo_tiny_run
  shutil.copytree(workdir / "checkpoints", tmp_path / "run" / "checkpoints")
  base = tmp_path / "DAVIS"
  for s, name in enumerate(("bear", "car")):
    (base / "JPEGImages/480p" / name).mkdir(parents=True)
    (base / "Annotations/480p" / name).mkdir(parents=True)
    for i in range(6):
      frame = np.random.default_rng([s, i]).integers(0, 256, (48, 80, 3), dtype=np.uint8)
      Image.fromarray(frame).save(base / "JPEGImages/480p" / name / f"{i:05d}.jpg")
      ids = np.zeros((48, 80), np.uint8)
      ids[10 + i:30 + i, 20:40] = 1 + s
      Image.fromarray(ids, "P").save(base / "Annotations/480p" / name / f"{i:05d}.png")
  (base / "ImageSets/2017").mkdir(parents=True)
  (base / "ImageSets/2017/val.txt").write_text("bear\ncar\n")
  config = load_config("video_demo", "tiny")
  davis = load_config("video_inpainting", "davis")
  assert tuple(davis.data.image_size) == (240, 424) and davis.eval.mode == "resize"
  config.data.image_size, config.data.resample = (24, 40), davis.data.resample
  config.eval.mode, config.eval.num_examples = davis.eval.mode, davis.eval.num_examples
  config.eval.source = f"davis:{base}"
  result = trainer.evaluate(config, tmp_path / "run", jax.devices()[:1])
  assert result["num_examples"] == 4 and result["scored_examples"] == 4
  for prefix in ("", "mean_fill_", "prev_frame_"):
    assert 0 < result[f"{prefix}ssim"] <= 1 and result[f"{prefix}psnr"] > 5


def test_vgg_weights_are_needed_for_training_only():
  """The paper config (perceptual and style losses on) without loss.vgg_weights builds, its
  state holds no VGG and the network evaluates (inference never needs the loss network); the
  train step stops with a message naming the settings."""
  config = load_config("video_inpainting", "tiny")
  config.loss.perceptual, config.loss.style = 0.05, 120.0
  task = tasks.build(config)
  key = jax.random.key(0)
  state = jax.eval_shape(task.init, key)
  assert state.vgg == {}
  batch = {"image": jnp.zeros((2, 32, 32, 3), jnp.uint8), "index": jnp.arange(2)}
  scores = jax.eval_shape(task.eval_step, state, batch, key)
  assert scores["psnr"].shape == (2,)
  with pytest.raises(ValueError, match="need ImageNet VGG16 weights: convert vgg16-397923af.pth "
                     "with python -m cpjax.tools.convert --from=vgg16-397923af.pth "
                     "--model=vgg16_torchvision --out=weights/vgg16_torchvision and pass "
                     "--config.loss.vgg_weights=weights/vgg16_torchvision, or turn them off "
                     "with --config.loss.perceptual=0"):
    jax.eval_shape(task.train_step, state, batch, key)


def test_vgg_weights_read_converted_directories_only(tmp_path):
  """loss.vgg_weights=<converted vgg16_torchvision directory> becomes the state's frozen VGG16
  (values equal); a layer of another shape is a one-line error naming the flag, the layer and
  both shapes; an .npz is refused with the convert command."""
  config = load_config("video_inpainting", "tiny")
  config.loss.perceptual, config.loss.vgg_weights = 0.05, str(tmp_path / "tv")
  fresh = jax.eval_shape(tasks.build(config).init, jax.random.key(0))
  vgg = numpy_params(fresh.vgg, seed=3)
  assert len(vgg) == 13   # conv1_1 ... conv5_3
  checkpoint.save(convert.Converted("vgg16_torchvision", {"params": {"vgg": vgg}}, {}),
                  tmp_path / "tv", {})
  jax.tree.map(np.testing.assert_array_equal, tasks.build(config).warm_start(fresh).vgg, vgg)

  bad = {"conv1_1": {"kernel": vgg["conv1_1"]["kernel"], "bias": np.zeros(3, np.float32)}}
  checkpoint.save(convert.Converted("vgg16_torchvision", {"params": {"vgg": bad}}, {}),
                  tmp_path / "bad", {})
  config.loss.vgg_weights = str(tmp_path / "bad")
  with pytest.raises(ValueError) as error:
    tasks.build(config).warm_start(fresh)
  assert str(error.value) == (f"loss.vgg_weights={tmp_path / 'bad'}: vgg/conv1_1/bias is (3,) "
                              "there but (64,) in the network the config builds; the config's "
                              "model must be the converted network")

  np.savez(tmp_path / "vgg16.npz", **{"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
  config.loss.vgg_weights = str(tmp_path / "vgg16.npz")
  with pytest.raises(FileNotFoundError, match=r"^loss.vgg_weights=.*vgg16.npz holds no converted "
                     r".*python -m cpjax.tools.convert --from=vgg16-397923af.pth "
                     r"--model=vgg16_torchvision --out=weights/vgg16_torchvision and pass "
                     r"--config.loss.vgg_weights=weights/vgg16_torchvision$"):
    tasks.build(config).warm_start(fresh)


def test_align_lr_mult_scales_the_alignment_networks_steps_only():
  """optim.align_lr_mult=0.1: from the same state and batch, Adam's first step moves every
  alignment-network parameter by 0.1 x what it moves at 1 (Adam's first step is lr x the
  gradient's sign wherever the gradient exceeds eps), and the copy encoder and paste decoder
  exactly as at 1."""
  config = load_config("video_demo", "tiny")
  pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3))
  batch = {"image": jnp.asarray(pixels, jnp.uint8), "index": jnp.arange(2)}
  key = jax.random.key(0)
  steps = {}
  for mult in (1.0, 0.1):
    config.optim.align_lr_mult = mult
    task = tasks.build(config)
    state = task.init(jax.random.key(1))
    # The regressor's fc starts at zero (theta the identity), which leaves every alignment conv
    # without a gradient at step 0: give it small random weights.
    fc = state.params["align_regressor"]["fc"]
    fc = {**fc, "kernel": 1e-2 * jax.random.normal(key, fc["kernel"].shape)}
    state = state.replace(params={**state.params, "align_regressor": {
        **state.params["align_regressor"], "fc": fc}})
    new_state, _ = jax.jit(task.train_step)(state, batch, key)
    steps[mult] = jax.tree.map(lambda a, b: np.asarray(a - b), new_state.params, state.params)
  for scope in ("align_encoder", "align_regressor", "encoder", "decoder"):
    full, scaled = (np.concatenate([x.ravel() for x in jax.tree.leaves(steps[m][scope])])
                    for m in (1.0, 0.1))
    moved = np.abs(full) > 1e-6
    assert moved.mean() > 0.25, scope   # (some ReLUs are off for this batch)
    expected = 0.1 * full if scope.startswith("align_") else full
    # atol: new - old in float32 rounds to the parameters' ulp (~1.5e-8 at their size).
    np.testing.assert_allclose(scaled[moved], expected[moved], rtol=1e-3, atol=5e-8,
                               err_msg=scope)


def test_warmup_scales_the_rate_linearly_and_leaves_the_decay_steps_in_place():
  """optim.warmup_steps=N: the rate of step s is lr x 0.1^floor(s / decay_steps) x
  min(1, (s + 1) / N); N=0 (and a config without the field) is the paper's staircase decay; and
  the task's first Adam step moves every parameter by 1/N of what it moves without warm-up."""
  config = load_config("video_demo", "tiny")
  o = config.optim
  o.lr, o.decay_steps, o.decay_rate = 1e-3, 6, 0.1
  steps = np.arange(15)
  staircase = 1e-3 * 0.1 ** (steps // 6)
  o.warmup_steps = 0
  np.testing.assert_allclose([video_inpainting.learning_rate(o)(s) for s in steps], staircase,
                             rtol=1e-6)
  del o["warmup_steps"]
  np.testing.assert_allclose([video_inpainting.learning_rate(o, 0.5)(s) for s in steps],
                             0.5 * staircase, rtol=1e-6)
  o.warmup_steps = 4
  np.testing.assert_allclose([video_inpainting.learning_rate(o)(s) for s in steps],
                             staircase * np.minimum(1.0, (steps + 1) / 4), rtol=1e-6)
  o.warmup_steps = -1
  with pytest.raises(ValueError, match=r"^--config.optim.warmup_steps=-1; give 0"):
    tasks.build(config)

  pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3))
  batch = {"image": jnp.asarray(pixels, jnp.uint8), "index": jnp.arange(2)}
  moves = {}
  for warmup in (0, 4):
    o.warmup_steps = warmup
    task = tasks.build(config)
    state = task.init(jax.random.key(1))
    new_state, _ = jax.jit(task.train_step)(state, batch, jax.random.key(0))
    moves[warmup] = np.concatenate([np.ravel(a - b) for a, b in zip(
        jax.tree.leaves(new_state.params), jax.tree.leaves(state.params))])
  moved = np.abs(moves[0]) > 1e-6
  assert moved.mean() > 0.25
  # Adam's first step is lr x the gradient's sign (module test above); atol: float32 rounding
  # of new - old at the parameters' size.
  np.testing.assert_allclose(moves[4][moved], moves[0][moved] / 4, rtol=1e-3, atol=5e-8)


def test_command_line_trains_and_evaluates(video_demo_tiny_run):
  """`python -m cpjax.main --config=configs/video_demo.py:tiny` trains 2 steps with the losses
  logged, writes checkpoints and the eval JSON with both baselines."""
  workdir, log = video_demo_tiny_run
  assert (workdir / "checkpoints" / "2").is_dir()
  for name in ("align=", "hole_visible=", "hole_invisible=", "valid=", "tv="):
    assert name in log
  result = json.loads((workdir / "eval" / "step_00000002.json").read_text())
  assert result["num_examples"] == 8
  for prefix in ("", "mean_fill_", "prev_frame_"):
    assert 0 < result[f"{prefix}ssim"] <= 1 and result[f"{prefix}psnr"] > 5
  # The aligned previous frame sees most of the hole: a far better guess than the mean colour.
  assert result["prev_frame_psnr"] > result["mean_fill_psnr"]
  assert (workdir / "eval" / "curves.png").exists()
  for _, path, baselines in video_inpainting.VideoInpaintingTask.curves:
    for p in [path, *baselines.values()]:
      assert writers._lookup(result, p) is not None, p  # pylint: disable=protected-access


def test_eight_devices_match_the_command_line_run(video_demo_tiny_run):
  """Step 2 of the 1-device command-line run, redone on 8 devices from its step-1 checkpoint
  with the same global batch, gives its step-2 parameters within 1e-5."""
  ref_dir, _ = video_demo_tiny_run
  config = tiny_config("video_demo")
  run = trainer._Run(config, ref_dir, jax.devices())  # pylint: disable=protected-access
  try:
    assert run.mesh.size == 8
    state = run.system.restore(run.checkpointer, 1)
    want = flat_params(run.system.restore(run.checkpointer, 2).params)
  finally:
    run.close()
  _, local = first_batches(config.data, 2, global_batch_size=config.batch_size,
                           seed=config.seed)
  local.pop("skipped")
  state, metrics = run.train_fn(0)(state, partitioning.global_batch(local, run.mesh), run.root_key)
  assert int(state.step) == 2 and np.isfinite(float(metrics["loss"]))
  got = flat_params(state.params)
  worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
  assert worst < 1e-5, worst


def test_eval_of_a_missing_step_is_one_clear_line(video_demo_tiny_run):
  """--mode=eval with a step that has no checkpoint: exit 1, one line naming it, no traceback."""
  workdir, _ = video_demo_tiny_run
  bad = subprocess.run([sys.executable, "-m", "cpjax.main", "--config=configs/video_demo.py:tiny",
                        f"--workdir={workdir}", "--mode=eval", "--config.eval.step=7"], cwd=REPO,
                       env=subprocess_env(),
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode == 1 and "no checkpoint of step 7" in bad.stderr
  assert "Traceback" not in bad.stderr
