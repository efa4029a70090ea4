"""Tests of data_pipelines.synthetic_segmentation ('seg_samples'): known-shape masks, labels that
match the pasted pixels, determinism, and the real pipeline on it."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import skimage.draw

from data_pipelines import pipeline, sources
from data_pipelines import synthetic_segmentation as ss


@pytest.mark.parametrize("center,radii", [((160, 220), (135, 170)), ((10.5, 7.2), (5.3, 3.1))])
def test_ellipse_mask_equals_skimage_draw(center, radii):
  """The ellipse masks are exactly the pixels of skimage.draw.ellipse."""
  mask = ss.shape_mask(300, 451, "ellipse", center, radii)
  ref = np.zeros_like(mask)
  ref[skimage.draw.ellipse(*center, *radii, shape=mask.shape)] = True
  np.testing.assert_array_equal(mask, ref)


def test_rocket_rectangle_bounds():
  """The rocket's rectangle covers rows 128-407 and columns 306-339, as documented."""
  ys, xs = np.nonzero(ss.shape_mask(427, 640, *ss.OBJECTS["rocket"][1:]))
  assert (ys.min(), ys.max(), xs.min(), xs.max()) == (128, 407, 306, 339)


def test_items_are_deterministic_and_picklable():
  """Item i is the same from a fresh or an unpickled source; other indices differ."""
  source = sources.make_source("seg_samples:train")
  again = pickle.loads(pickle.dumps(sources.make_source("seg_samples")))
  for i in (0, 5):
    a, b = source[i], again[i]
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  assert not np.array_equal(source[0]["image"], source[1]["image"])


def test_labels_mark_the_pasted_objects():
  """On 24 items: labels are background + 1 or 2 object classes, each object covers a plausible
  area (its longer side is 35-75 % of the canvas: at least 1 %, at most 60 % of the pixels),
  and where an item has one object the mean colour of its labelled pixels is that of the
  object's cut-out (within 12 levels), far from the other objects' colours for the cup."""
  source = sources.make_source("seg_samples:eval")
  cut_means = {c: ss.cutout(c)[0][ss.cutout(c)[1][..., 0] > 0].mean(0) for c in ss.CLASSES[1:]}
  checked = 0
  for i in range(24):
    item = source[i]
    assert item["image"].shape == (ss.CANVAS, ss.CANVAS, 3)
    ids = set(np.unique(item["label"]).tolist()) - {0}
    assert 1 <= len(ids) <= 2 and ids <= set(range(1, len(ss.CLASSES)))
    for class_id in ids:
      area = np.mean(item["label"] == class_id)
      assert 0.005 < area < 0.6, (i, class_id, area)
    if len(ids) == 1:
      (class_id,) = ids
      mean = item["image"][item["label"] == class_id].mean(0)
      np.testing.assert_allclose(mean, cut_means[ss.CLASSES[class_id]], atol=12)
      checked += 1
  assert checked >= 5
  assert np.abs(cut_means["cup"] - cut_means["person"]).max() > 40


def test_real_pipeline_batches():
  """The training pipeline resizes image and labels together: 64 px batches of both, labels
  still class ids (nearest resize); eval batches are center crops with 'valid'."""
  cfg = dict(source="seg_samples:train", image_size=64, resize=64)
  batch = next(iter(pipeline.train_dataset(cfg, global_batch_size=4, seed=0)))
  assert batch["image"].shape == (4, 64, 64, 3) and batch["label"].shape == (4, 64, 64)
  assert set(np.unique(batch["label"])) <= set(range(len(ss.CLASSES)))
  ev = next(pipeline.eval_batches(dict(source="seg_samples:eval", image_size=64, resize=64),
                                  batch_size=4))
  assert ev["valid"].all() and ev["label"].shape == (4, 64, 64)


def test_unknown_split_is_refused():
  with pytest.raises(ValueError, match="seg_samples:train or seg_samples:eval"):
    sources.make_source("seg_samples:test")
