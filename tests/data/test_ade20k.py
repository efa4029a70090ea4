"""ADE20K (ADEChallengeData2016 layout): a tiny tree read through the real loader, labels
mapped to DIH's top-25 + other classes, and the label field through the pipeline."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from PIL import Image

from data_pipelines import ade20k, pipeline, sources


def make_tree(root: pathlib.Path) -> pathlib.Path:
  """Two training images whose annotations hold ids 0 (unlabelled), 1, 25, 26 and 150."""
  for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
    (root / "images" / split).mkdir(parents=True)
    (root / "annotations" / split).mkdir(parents=True)
    for i in range(1, 3 if split == "training" else 2):
      stem = f"{prefix}_{i:08d}"
      image = np.full((24, 32, 3), 40 * i, np.uint8)
      Image.fromarray(image).save(root / "images" / split / f"{stem}.jpg", quality=95)
      ids = np.zeros((24, 32), np.uint8)
      ids[:, 8:16], ids[:, 16:20], ids[:, 20:24], ids[:, 24:] = 1, 25, 26, 150
      Image.fromarray(ids).save(root / "annotations" / split / f"{stem}.png")
  return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> pathlib.Path:
  return make_tree(tmp_path_factory.mktemp("ade20k"))


def test_top25_mapping():
  """1..25 -> 0..24 (the 25 most frequent classes), 26..150 -> 25 ('other'), 0 -> 255."""
  ids = np.array([0, 1, 2, 25, 26, 100, 150], np.uint8)
  np.testing.assert_array_equal(ade20k.map_to_top25(ids), [255, 0, 1, 24, 25, 25, 25])


def test_items_hold_image_and_mapped_labels(tree):
  source = sources.make_source(f"ade20k:{tree}:train")
  assert len(source) == 2 and source.fields == {"image": "image", "label": "label"}
  item = source[1]
  assert item["image"].shape == (24, 32, 3) and item["label"].dtype == np.uint8
  expected = np.full((24, 32), 255, np.uint8)
  expected[:, 8:16], expected[:, 16:20], expected[:, 20:] = 0, 24, 25
  np.testing.assert_array_equal(item["label"], expected)
  assert len(sources.make_source(f"ade20k:{tree}:val")) == 1


def test_missing_dataset_says_where_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError, match="ADEChallengeData2016.zip"):
    sources.make_source(f"ade20k:{tmp_path}")


def test_labels_resize_with_nearest_in_the_pipeline(tree):
  """Evaluation at another size keeps only class ids that exist (no interpolated ids)."""
  data = dict(source=f"ade20k:{tree}", image_size=(12, 20))
  batch = next(iter(pipeline.eval_dataset(data, batch_size=2, mode="resize")))
  assert batch["label"].shape == (2, 12, 20)
  assert set(np.unique(batch["label"])) == {0, 24, 25, 255}
