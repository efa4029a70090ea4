"""Mask shapes from a folder (data.mask_source): VOC object ids, binary/greyscale masks, the
drawn masks' size and shape, determinism over process counts, and the error messages.

The folder holds a VOC SegmentationObject-style palette PNG (objects 1 and 2, each outlined by
255 'void' pixels), a greyscale PNG with an L-shaped object and a file without foreground.
"""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import first_batches
from data_pipelines import image_ops
from data_pipelines import mask_folder
from data_pipelines import pipeline
from data_pipelines import voc

SIZE = (32, 40)


def _palette_png(path: pathlib.Path, ids: np.ndarray) -> None:
  """ids uint8 [H, W] written as a VOC palette ('P') PNG."""
  img = Image.fromarray(ids, "P")
  img.putpalette(voc.PALETTE.ravel().tolist())
  img.save(path)


def _voc_objects() -> np.ndarray:
  """Two rectangles (ids 1, 2), each with a 255 outline, on background 0: uint8 [40, 60]."""
  ids = np.zeros((40, 60), np.uint8)
  ids[3:22, 3:27] = 255
  ids[4:21, 4:26] = 1
  ids[20:39, 30:58] = 255
  ids[21:38, 31:57] = 2
  return ids


def _l_shape() -> np.ndarray:
  """Greyscale uint8 [50, 50]: an L of 200 (foreground) on 100 (background, <= 127)."""
  grey = np.full((50, 50), 100, np.uint8)
  grey[10:40, 10:18] = 200
  grey[32:40, 10:35] = 200
  return grey


@pytest.fixture
def folder(tmp_path) -> pathlib.Path:
  masks = tmp_path / "masks"
  (masks / "sub").mkdir(parents=True)
  _palette_png(masks / "a_objects.png", _voc_objects())
  Image.fromarray(_l_shape()).save(masks / "sub" / "b_l_shape.png")
  Image.fromarray(np.full((8, 8), 40, np.uint8)).save(masks / "sub" / "c_empty.png")
  (masks / "notes.txt").write_text("not an image")
  return masks


def test_voc_object_ids_are_separate_masks_and_void_is_not_foreground(folder):
  """Palette ids 1 and 2 are two masks, exactly the pixels of each id; the 255 outline and the
  background are in none; the greyscale L is one mask (> 127); the empty file gives none."""
  masks = mask_folder.MaskFolder(str(folder))
  ids = _voc_objects()
  assert len(masks) == 3
  np.testing.assert_array_equal(masks.mask(0), ids == 1)
  np.testing.assert_array_equal(masks.mask(1), ids == 2)
  np.testing.assert_array_equal(masks.mask(2), _l_shape() > 127)
  assert not (masks.mask(0) | masks.mask(1))[ids == 255].any()


def test_drawn_masks_are_placed_scaled_copies_of_an_object(folder):
  """A draw is uint8 {0, 255} [h, w, 1]; its box's longer side is in mask_size * min(h, w);
  the box has an object's aspect and holds that object (or its mirror) resized with OpenCV
  (IoU > 0.8). The asymmetric L tells a mirror or a transpose from the original."""
  masks = mask_folder.MaskFolder(str(folder), size=(0.3, 0.6))
  cuts = []
  for k in range(len(masks)):
    rows, cols = np.nonzero(masks.mask(k))
    cuts.append(masks.mask(k)[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
  for position in range(30):
    drawn = masks.draw(mask_folder.mask_rng(7, position), SIZE)
    assert drawn.shape == (*SIZE, 1) and drawn.dtype == np.uint8
    assert set(np.unique(drawn)) == {0, 255}
    ys, xs = np.nonzero(drawn[..., 0])
    box = drawn[ys.min():ys.max() + 1, xs.min():xs.max() + 1, 0] > 0
    assert 0.3 * min(SIZE) - 1 <= max(box.shape) <= 0.6 * min(SIZE) + 1
    best = 0.0
    for cut in cuts:
      aspect_kept = np.array(cut.shape) * max(box.shape) / max(cut.shape)
      if np.abs(aspect_kept - box.shape).max() > 1:
        continue
      want = cv2.resize(cut.astype(np.uint8) * 255, box.shape[::-1],
                        interpolation=cv2.INTER_AREA) > 127
      for candidate in (want, want[:, ::-1]):
        best = max(best, (candidate & box).sum() / (candidate | box).sum())
    assert best > 0.8, (position, best)


def test_empty_draws_are_redrawn_and_all_empty_is_an_error(folder, tmp_path):
  """A 1-px diagonal vanishes when shrunk: with another mask beside it every draw is that one;
  alone, the draws give up with an error naming the fix."""
  diagonal = np.eye(200, dtype=np.uint8) * 255
  Image.fromarray(diagonal).save(folder / "sub" / "d_diagonal.png")
  only = tmp_path / "only_diagonal"
  only.mkdir()
  Image.fromarray(diagonal).save(only / "diagonal.png")
  thin = mask_folder.MaskFolder(str(only))
  with pytest.raises(ValueError, match=r"all vanished when resized .* raise data.mask_size"):
    thin.draw(mask_folder.mask_rng(0, 0), SIZE)
  masks = mask_folder.MaskFolder(str(folder))
  assert len(masks) == 4
  draws = [masks.draw(mask_folder.mask_rng(0, g), SIZE) for g in range(40)]
  assert all(d.any() for d in draws)


def _image_folder(tmp_path: pathlib.Path) -> pathlib.Path:
  images = tmp_path / "images"
  images.mkdir()
  for i in range(6):
    pixels = np.random.default_rng(i).integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / f"{i}.png")
  return images


def test_training_masks_depend_on_seed_and_position_not_on_processes(folder, tmp_path):
  """The 'object_mask' of stream position g is draw(mask_rng(seed, g)): the same for 1 process
  and for 2 processes' concatenated batches; the images equal those without a mask folder."""
  cfg = pipeline.default_data_config()
  cfg.source, cfg.image_size, cfg.prefetch = f"folder:{_image_folder(tmp_path)}", SIZE, 0
  plain = first_batches(cfg, 3, global_batch_size=4, seed=3)
  cfg.mask_source = str(folder)
  one = first_batches(cfg, 3, global_batch_size=4, seed=3)
  two = [first_batches(cfg, 3, global_batch_size=4, seed=3, process_index=p, process_count=2)
         for p in range(2)]
  masks = mask_folder.MaskFolder(str(folder))
  for step in range(3):
    batch, halves, without = one[step], [half[step] for half in two], plain[step]
    for key in ("object_mask", "image", "index"):
      np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), batch[key])
    np.testing.assert_array_equal(batch["image"], without["image"])
    for g, drawn in zip(batch["index"], batch["object_mask"]):
      np.testing.assert_array_equal(drawn, masks.draw(mask_folder.mask_rng(3, int(g)), SIZE))
  assert len({m.tobytes() for m in batch["object_mask"]}) > 1
  assert pipeline.batch_fields(cfg, train=True) == set(batch)   # 'object_mask' declared too


def test_evaluation_batches_carry_fixed_masks(folder, tmp_path):
  """Evaluation example j (padding too) gets draw(mask_rng(0, j)), at every evaluation."""
  cfg = pipeline.default_data_config()
  cfg.source, cfg.image_size = f"folder:{_image_folder(tmp_path)}", SIZE
  cfg.mask_source = str(folder)
  batches = list(pipeline.eval_batches(cfg, batch_size=4))
  assert len(batches) == 2 and not batches[1]["valid"][2:].any()
  masks = mask_folder.MaskFolder(str(folder))
  for batch in batches:
    for j, drawn in zip(batch["index"], batch["object_mask"]):
      np.testing.assert_array_equal(drawn, masks.draw(mask_folder.mask_rng(0, int(j)), SIZE))


def test_bad_mask_folders_are_one_line_errors(folder, tmp_path):
  """Missing folder, no image files, no foreground anywhere (a VOC file of only 0 and 255),
  a bad size range and an undecodable file: one line each, naming the problem and the fix."""
  cases = {tmp_path / "nowhere": "mask folder .*nowhere does not exist; set data.mask_source",
           tmp_path / "texts": "no mask images under .*texts .*; set data.mask_source"}
  (tmp_path / "texts").mkdir()
  (tmp_path / "texts" / "readme.txt").write_text("masks go here")
  void_only = tmp_path / "void_only"
  void_only.mkdir()
  ids = np.zeros((10, 10), np.uint8)
  ids[2:8, 2:8] = 255
  _palette_png(void_only / "void.png", ids)
  cases[void_only] = ("none of the 1 mask files under .*void_only has foreground .*object ids "
                      "1..254.*data.mask_source")
  for root, message in cases.items():
    with pytest.raises(ValueError, match=message) as error:
      mask_folder.MaskFolder(str(root))
    assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match=r"data.mask_size is \(0.5, 1.5\); use \(lo, hi\)"):
    mask_folder.MaskFolder(str(folder), size=(0.5, 1.5))
  (folder / "broken.png").write_bytes(b"not a png")
  with pytest.raises(image_ops.DecodeError, match="cannot decode image .*broken.png"):
    mask_folder.MaskFolder(str(folder))


def test_pipeline_names_the_mask_source_problem(tmp_path):
  """A missing data.mask_source fails when the training iterator is made, not mid-training."""
  cfg = pipeline.default_data_config()
  cfg.source, cfg.image_size = f"folder:{_image_folder(tmp_path)}", SIZE
  cfg.mask_source = str(tmp_path / "missing")
  with pytest.raises(ValueError, match="mask folder .*missing does not exist"):
    pipeline.train_iterator(cfg, global_batch_size=2, seed=0)
