"""Training and evaluation pipelines: sharding contract, determinism, state, corrupt files.

Images are tiny PNGs whose red channel is a constant item id (20 * i + 5) and whose green/blue
channels are noise: the id survives crops and flips, the noise makes crops and flips visible.
grain worker processes (workers > 0) need absl flags parsed: the tests mark them parsed.
"""
from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest
from absl import flags
from PIL import Image

from conftest import first_batches
from data_pipelines import image_ops
from data_pipelines import pipeline

NUM_ITEMS = 10


def _item_image(i: int, h: int, w: int) -> np.ndarray:
  image = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
  image[:, :, 0] = 20 * i + 5
  return image


def _ids(batch: dict[str, np.ndarray]) -> list[int]:
  """Item ids of a batch, read from the constant red channel."""
  red = batch["image"][:, :, :, 0].astype(int)
  assert (red == red[:, :1, :1]).all()
  return [(v - 5) // 20 for v in red[:, 0, 0]]


@pytest.fixture
def folder(tmp_path) -> pathlib.Path:
  """NUM_ITEMS PNGs item_00 .. item_09 of different sizes, all at least 12 x 13."""
  for i in range(NUM_ITEMS):
    Image.fromarray(_item_image(i, 12 + i, 13 + 2 * (i % 3))).save(tmp_path / f"item_{i:02d}.png")
  return tmp_path


def _cfg(folder: pathlib.Path, **overrides):
  cfg = pipeline.default_data_config()
  cfg.source = f"folder:{folder}"
  cfg.image_size = 8
  cfg.update(overrides)
  return cfg


def _take(iterator, n: int) -> list[dict[str, np.ndarray]]:
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_default_config_has_documented_fields():
  """default_data_config has every field, and image_size can change from int to (h, w)."""
  cfg = pipeline.default_data_config()
  assert set(cfg.keys()) == {"source", "missing_hint", "image_size", "resize", "crop", "flip",
                             "workers", "prefetch", "image_key", "augment", "scale", "ratio",
                             "keep_foreground", "pad_color", "resample", "mask_source",
                             "mask_size"}
  cfg.image_size, cfg.resize = (512, 1024), (512, 1024)
  assert cfg.crop == "random" and cfg.workers == 0


def test_unknown_field_is_refused_with_the_closest_name(folder):
  """A misspelt data field is an error naming it and the field meant, not silently ignored;
  eval settings are not data fields."""
  with pytest.raises(ValueError, match=r"unknown data config field 'image_sise' \(did you mean "
                                       r"'image_size'\?\); the fields are source, missing_hint"):
    pipeline.train_iterator(_cfg(folder, image_sise=8), global_batch_size=2, seed=0)
  with pytest.raises(ValueError, match="unknown data config field 'eval_mode'"):
    list(pipeline.eval_batches(_cfg(folder, eval_mode="pad"), batch_size=2))


def test_batch_format(folder):
  """Batches hold uint8 images of the crop size, int32 stream positions and skip counts."""
  it = pipeline.train_iterator(_cfg(folder, image_size=(8, 6)), global_batch_size=4, seed=0)
  batch = next(it)
  assert batch["image"].shape == (4, 8, 6, 3) and batch["image"].dtype == np.uint8
  assert batch["index"].dtype == np.int32 and batch["skipped"].dtype == np.int32
  np.testing.assert_array_equal(batch["index"], np.arange(4))
  np.testing.assert_array_equal(next(it)["index"], np.arange(4, 8))
  assert (batch["skipped"] == 0).all()


def test_two_processes_concatenate_to_one(folder):
  """For P = 2 the two processes' batches concatenated equal the P = 1 batch, over epochs."""
  cfg = _cfg(folder, prefetch=0)
  one = first_batches(cfg, 6, global_batch_size=4, seed=3)  # 2.4 epochs
  two = [first_batches(cfg, 6, global_batch_size=4, seed=3, process_index=p, process_count=2)
         for p in range(2)]
  for step in range(6):
    for key in ("image", "index", "skipped"):
      np.testing.assert_array_equal(
          np.concatenate([two[0][step][key], two[1][step][key]]), one[step][key])
  np.testing.assert_array_equal(two[1][2]["index"], [10, 11])


def test_each_process_decodes_only_its_share(folder, monkeypatch):
  """Process p decodes exactly the items of its chunk of each global batch, nothing else."""
  decoded: list[str] = []
  decode = image_ops.decode_image
  monkeypatch.setattr(image_ops, "decode_image",
                      lambda data, path: decoded.append(path) or decode(data, path))
  cfg = _cfg(folder, prefetch=0)  # synchronous: nothing is read ahead
  first_batches(cfg, 3, global_batch_size=4, seed=1)
  single = list(decoded)
  assert len(single) == 12
  for p in range(2):
    decoded.clear()
    first_batches(cfg, 3, global_batch_size=4, seed=1, process_index=p, process_count=2)
    assert decoded == [single[s * 4 + p * 2 + k] for s in range(3) for k in range(2)]


def test_random_augmentation_depends_on_position_not_layout(folder):
  """Crops and flips come from (seed, position): same with threads or synchronous reading."""
  cfg = _cfg(folder, prefetch=0)
  sync = first_batches(cfg, 3, global_batch_size=4, seed=5)
  threaded = first_batches(_cfg(folder, prefetch=3), 3, global_batch_size=4, seed=5)
  _assert_batches_equal(sync, threaded)
  # The augmentation does vary: some example differs from the center crop of its item.
  centered = first_batches(_cfg(folder, crop="center", flip=False), 3, global_batch_size=4, seed=5)
  assert [_ids(b) for b in sync] == [_ids(b) for b in centered]
  assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(sync, centered))


def test_same_seed_same_stream_other_seed_other_order(folder):
  """The stream is a function of the seed: equal for equal seeds, reordered for another one."""
  cfg = _cfg(folder)
  a = first_batches(cfg, 2, global_batch_size=5, seed=0)
  b = first_batches(cfg, 2, global_batch_size=5, seed=0)
  c = first_batches(cfg, 2, global_batch_size=5, seed=1)
  _assert_batches_equal(a, b)
  ids_a = [i for batch in a for i in _ids(batch)]
  ids_c = [i for batch in c for i in _ids(batch)]
  assert sorted(ids_a) == sorted(ids_c) == list(range(NUM_ITEMS))
  assert ids_a != ids_c


def test_epochs_are_reshuffled(folder):
  """Every epoch is a permutation of the source, in a new order each epoch."""
  batches = first_batches(_cfg(folder), 6, global_batch_size=5, seed=0)
  ids = [i for batch in batches for i in _ids(batch)]
  epochs = [ids[e * NUM_ITEMS:(e + 1) * NUM_ITEMS] for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(NUM_ITEMS))
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def _check_restore(cfg) -> list[dict[str, np.ndarray]]:
  """Checks the restore contract; returns the 5 batches of the first iterator."""
  it = pipeline.train_iterator(cfg, global_batch_size=4, seed=2)
  first = _take(it, 3)
  state = it.get_state()
  expected = _take(it, 2)
  fresh = pipeline.train_iterator(cfg, global_batch_size=4, seed=2)
  fresh.set_state(state)
  _assert_batches_equal(_take(fresh, 2), expected)
  np.testing.assert_array_equal(expected[0]["index"], np.arange(12, 16))
  for iterator in (it, fresh):
    pipeline.close_iterator(iterator)
  return first + expected


def test_state_save_restore_in_process(folder):
  """3 batches, save, 2 more; a fresh iterator restored from the state gives the same 2."""
  _check_restore(_cfg(folder, prefetch=2))


def test_state_save_restore_with_workers(folder):
  """The same with 2 grain worker processes, which also match the in-process stream."""
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags
  with_workers = _check_restore(_cfg(folder, workers=2, prefetch=1))
  in_process = pipeline.train_iterator(_cfg(folder), global_batch_size=4, seed=2)
  _assert_batches_equal(with_workers, _take(in_process, 5))
  pipeline.close_iterator(in_process)


def test_corrupt_training_image_is_skipped_with_one_warning(folder, caplog):
  """A corrupt file is replaced by the next source item, counted in 'skipped', warned once."""
  bad = folder / "item_03_bad.png"  # sorted between item_03 and item_04: source index 4
  bad.write_bytes(b"\x89PNG broken")
  caplog.set_level(logging.WARNING)
  batches = first_batches(_cfg(folder, prefetch=0), 2, global_batch_size=11,
                          seed=0)  # two epochs of the 11 items
  for batch in batches:
    ids, skipped = _ids(batch), batch["skipped"].tolist()
    assert sum(skipped) == 1
    assert ids[skipped.index(1)] == 4  # item_04 (source index 5) stands in for the bad file
    assert sorted(ids) == sorted(list(range(NUM_ITEMS)) + [4])
  warnings = [r.getMessage() for r in caplog.records if str(bad) in r.getMessage()]
  assert len(warnings) == 1 and "skipping undecodable training image" in warnings[0]


def test_all_training_images_corrupt_is_an_error(tmp_path):
  """A source where nothing decodes stops with an error instead of looping."""
  for name in ("a.png", "b.jpg"):
    (tmp_path / name).write_bytes(b"nothing")
  it = pipeline.train_iterator(_cfg(tmp_path, prefetch=0), global_batch_size=2, seed=0)
  with pytest.raises(ValueError, match="none of the 2 images .* can be decoded"):
    next(it)


def test_eval_order_padding_and_sharding(folder):
  """Eval: source order, center crops, last batch padded and flagged; P = 2 concatenates."""
  cfg = _cfg(folder, crop="random", flip=True)  # eval ignores both
  one = list(pipeline.eval_batches(cfg, batch_size=4))
  assert len(one) == 3
  ids = [i for b in one for i, v in zip(_ids(b), b["valid"]) if v]
  assert ids == list(range(NUM_ITEMS))
  np.testing.assert_array_equal(one[2]["valid"], [True, True, False, False])
  np.testing.assert_array_equal(one[2]["index"], [8, 9, 10, 11])
  assert not one[2]["image"][2:].any()
  # The central 8x8 window of the 19x15 image (odd margins leave the extra pixel bottom/right).
  np.testing.assert_array_equal(one[1]["image"][3], _item_image(7, 19, 15)[5:13, 3:11])
  two = [list(pipeline.eval_batches(cfg, batch_size=4, process_index=p, process_count=2))
         for p in range(2)]
  for step in range(3):
    for key in ("image", "index", "valid"):
      np.testing.assert_array_equal(
          np.concatenate([two[0][step][key], two[1][step][key]]), one[step][key])
  limited = list(pipeline.eval_batches(_cfg(folder), batch_size=4, num_examples=5))
  assert [b["valid"].sum() for b in limited] == [4, 1]


def test_eval_corrupt_file_raises_naming_it(folder):
  """In evaluation a corrupt file is an error that names the file and the fix."""
  (folder / "item_05_bad.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(ValueError, match=rf"cannot decode image {folder}/item_05_bad.jpg: .*"
                                       "remove or replace the file"):
    list(pipeline.eval_batches(_cfg(folder), batch_size=4))


def test_batch_and_process_errors(folder, tmp_path):
  """Indivisible batches, fewer eval examples than processes and empty folders are errors."""
  with pytest.raises(ValueError, match="global batch size 5 is not divisible by the number of "
                                       "processes 2"):
    pipeline.train_iterator(_cfg(folder), global_batch_size=5, seed=0, process_count=2)
  with pytest.raises(ValueError, match="has 1 examples, fewer than the 2 processes"):
    list(pipeline.eval_batches(_cfg(folder), batch_size=2, num_examples=1,
                               process_count=2))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=f"no images found under {empty}"):
    pipeline.train_iterator(_cfg(empty), global_batch_size=2, seed=0)
  with pytest.raises(ValueError, match="data.crop is 'middle'"):
    pipeline.train_iterator(_cfg(folder, crop="middle"), global_batch_size=2, seed=0)


def test_small_images_are_upscaled_and_resize_applies_first(tmp_path):
  """resize runs first; images smaller than the crop are upscaled (aspect kept) to cover it."""
  Image.fromarray(_item_image(0, 4, 6)).save(tmp_path / "small.png")
  Image.fromarray(_item_image(1, 40, 80)).save(tmp_path / "wide.png")
  cfg = _cfg(tmp_path, image_size=(8, 8), resize=None)
  small, wide = next(iter(pipeline.eval_batches(cfg, batch_size=2)))["image"]
  covered = image_ops.resize(_item_image(0, 4, 6), (8, 12))  # shorter side 8, aspect kept
  np.testing.assert_array_equal(small, covered[:, 2:10])      # then the central window
  np.testing.assert_array_equal(wide, _item_image(1, 40, 80)[16:24, 36:44])
  cfg = _cfg(tmp_path, image_size=(20, 40), resize=(20, 40))  # "Cityscapes 1024x2048 -> 512x1024"
  _, wide = next(iter(pipeline.eval_batches(cfg, batch_size=2)))["image"]
  np.testing.assert_array_equal(wide, image_ops.resize(_item_image(1, 40, 80), (20, 40)))
  assert image_ops.resized_shape(1024, 2048, 512) == (512, 1024)


def test_samples_source_through_the_pipeline():
  """The bundled samples feed the training pipeline offline."""
  cfg = pipeline.default_data_config()
  cfg.update(source="samples:train", image_size=16)
  batch = next(pipeline.train_iterator(cfg, global_batch_size=2, seed=0))
  assert batch["image"].shape == (2, 16, 16, 3)


def test_eval_repeats_give_distinct_indices_of_the_same_image():
  """With repeats=3, examples 0-2 are item 0 (same pixels, indices 0, 1, 2), 3-5 item 1, and
  num_examples caps the total."""
  cfg = dict(source="samples:eval", image_size=32, resize=48)
  batches = list(pipeline.eval_batches(cfg, batch_size=4, repeats=3, num_examples=5))
  images = np.concatenate([b["image"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.sum() == 5 and list(index[:5]) == [0, 1, 2, 3, 4]
  np.testing.assert_array_equal(images[0], images[2])
  assert not np.array_equal(images[2], images[3])
  np.testing.assert_array_equal(images[3], images[4])


def _crop_draws(monkeypatch, mask: np.ndarray, examples: int) -> list[int]:
  """How many random-resized crops `_prepare` draws for each of `examples` training examples
  (stream positions 0, 1, ...) of a 64x64 item with this mask, keep_foreground='mask'; each
  example prepared twice gives the same crop."""
  calls = []
  box = image_ops.random_resized_crop_box
  monkeypatch.setattr(image_ops, "random_resized_crop_box",
                      lambda *args: calls.append(args) or box(*args))
  settings = pipeline._settings(dict(image_size=32, augment="random_resized_crop",
                                     keep_foreground="mask", flip=False, resample="linear"))
  item = {"image": _item_image(0, 64, 64), "mask": mask}
  fields = {"image": "image", "mask": "mask"}
  draws = []
  for position in range(examples):
    before = len(calls)
    out = pipeline._prepare_train(item, fields, settings, np.random.default_rng([0, position]))
    draws.append(len(calls) - before)
    again = pipeline._prepare_train(item, fields, settings, np.random.default_rng([0, position]))
    np.testing.assert_array_equal(out["image"], again["image"])
  return draws


def test_keep_foreground_counts_soft_mask_values(monkeypatch):
  """A crop is kept when its mask sums to more than one pixel on the 0..1 scale, soft values
  included (saic-vul sums its float mask): a mask of 100 / 255 everywhere, no pixel above half,
  keeps the first crop of every example."""
  assert _crop_draws(monkeypatch, np.full((64, 64, 1), 100, np.uint8), 40) == [1] * 40


def test_keep_foreground_redraws_without_a_limit(monkeypatch):
  """With no foreground to find, only the 0.05 coin keeps a crop: the draws per example are
  geometric (mean 20) and not capped, as the reference's while loop."""
  draws = _crop_draws(monkeypatch, np.zeros((64, 64, 1), np.uint8), 300)
  assert max(draws) > 30 and 16 < np.mean(draws) < 25
