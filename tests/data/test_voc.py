"""Tests of data_pipelines.voc on a tiny VOC-format tree (real JPEGs, palette PNGs, SBD .mat),
read through `sources.make_source('voc:...')` and the real pipelines."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data_pipelines import image_ops, pipeline, sources, voc

_IDS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
_SIZES = {"2007_000032": (20, 28), "2007_000039": (24, 16), "2007_000033": (18, 22)}


def _labels_for(image_id: str) -> np.ndarray:
  """A label map with classes 0, 15 (person) and 20 and a 255 outline: every kind of pixel."""
  h, w = _SIZES[image_id]
  labels = np.zeros((h, w), np.uint8)
  labels[2:h // 2, 3:w // 2] = 15
  labels[h // 2 + 2:, w // 2 + 2:] = 20
  labels[h // 2 - 1:h // 2 + 1, :] = 255
  return labels


def _image_for(image_id: str) -> np.ndarray:
  """Smooth colour ramps (JPEG keeps them to a few levels), different per image."""
  h, w = _SIZES[image_id]
  y, x = np.mgrid[:h, :w]
  k = int(image_id[-3:])
  return np.stack([8 * y + k, 6 * x + 2 * k, 4 * (x + y)], -1).clip(0, 255).astype(np.uint8)


def _palette_png(labels: np.ndarray, path) -> None:
  """Writes class ids as a palette PNG with the VOC colour map, as VOC's SegmentationClass."""
  img = Image.fromarray(labels, mode="P")
  img.putpalette(voc.PALETTE.ravel().tolist())
  img.save(path)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("VOCdevkit") / "VOC2012"
  for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
    (root / sub).mkdir(parents=True)
  for split, ids in _IDS.items():
    (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    for i in ids:
      Image.fromarray(_image_for(i)).save(root / "JPEGImages" / f"{i}.jpg", quality=95)
      _palette_png(_labels_for(i), root / "SegmentationClass" / f"{i}.png")
  return root


@pytest.fixture(scope="module")
def sbd_root(tmp_path_factory):
  """SBD with one image of its own and one that is also in VOC val (excluded by train_aug)."""
  root = tmp_path_factory.mktemp("benchmark_RELEASE") / "dataset"
  (root / "img").mkdir(parents=True)
  (root / "cls").mkdir()
  (root / "train.txt").write_text("2008_000002\n")
  (root / "val.txt").write_text("2007_000033\n")
  for image_id, (h, w) in (("2008_000002", (12, 14)), ("2007_000033", (18, 22))):
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "img" / f"{image_id}.jpg")
    seg = np.zeros((h, w), np.uint8)
    seg[:, : w // 2] = 7
    gtcls = {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.array([7])}
    scipy.io.savemat(root / "cls" / f"{image_id}.mat", {"GTcls": gtcls})
  return root


def test_palette_matches_the_voc_colour_map():
  """Known VOC colours (VOCdevkit labelcolormap): background, aeroplane, bicycle, bird, person,
  tvmonitor and the void outline."""
  expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0),
              15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
  for class_id, rgb in expected.items():
    assert tuple(voc.PALETTE[class_id]) == rgb, class_id
  assert len(voc.CLASSES) == 21 and voc.CLASSES[15] == "person"


def test_reads_images_and_palette_labels(voc_root):
  """Items hold the JPEG's pixels and the PNG's class ids, 255 kept; in list order."""
  source = sources.make_source(f"voc:{voc_root}:train")
  assert len(source) == 2 and sources.source_fields(source) == {"image": "image",
                                                                 "label": "label"}
  for k, image_id in enumerate(_IDS["train"]):
    item = source[k]
    assert item["path"] == str(voc_root / "JPEGImages" / f"{image_id}.jpg") == source.path(k)
    np.testing.assert_array_equal(item["label"], _labels_for(image_id))
    assert item["label"].dtype == np.uint8
    # JPEG at quality 95: close to the written pixels, not equal.
    assert np.mean(np.abs(item["image"].astype(int) - _image_for(image_id))) < 4


def test_rgb_label_pngs_map_back_to_ids(tmp_path, voc_root):
  """A label re-saved as RGB decodes to the same ids through the colour map; a colour outside
  the map is a DecodeError naming the file."""
  labels = _labels_for("2007_000032")
  path = tmp_path / "rgb.png"
  Image.fromarray(voc.PALETTE[labels]).save(path)
  np.testing.assert_array_equal(voc.decode_label_png(path.read_bytes(), str(path)), labels)
  rgb = voc.PALETTE[labels].copy()
  rgb[0, 0] = (1, 2, 3)
  Image.fromarray(rgb).save(path)
  with pytest.raises(image_ops.DecodeError, match=r"rgb.png.*\(1, 2, 3\)"):
    voc.decode_label_png(path.read_bytes(), str(path))


def test_eval_pipeline_pads_labels_with_ignore(voc_root):
  """Through the real eval pipeline ('pad' geometry, 32x32): labels keep their ids exactly
  (nearest, no invented classes) and the padding is 255; batches hold image and label."""
  cfg = dict(source=f"voc:{voc_root}:train", image_size=32)
  batch = next(pipeline.eval_batches(cfg, batch_size=2, mode="pad"))
  assert batch["image"].shape == (2, 32, 32, 3) and batch["label"].shape == (2, 32, 32)
  for k, image_id in enumerate(_IDS["train"]):
    h, w = _SIZES[image_id]
    np.testing.assert_array_equal(batch["label"][k, :h, :w], _labels_for(image_id))
    assert np.all(batch["label"][k, h:] == 255) and np.all(batch["label"][k, :, w:] == 255)


def test_train_pipeline_resize_keeps_class_ids(voc_root):
  """Training batches at 40x40 (upscaled, cropped, flipped) contain only the ids of the map."""
  cfg = dict(source=f"voc:{voc_root}:train", image_size=40, resize=(40, 40))
  batch = next(iter(pipeline.train_dataset(cfg, global_batch_size=2, seed=0)))
  assert set(np.unique(batch["label"])) == {0, 15, 20, 255}


def test_sbd_splits(voc_root, sbd_root):
  """sbd_train reads the .mat annotation; train_aug = VOC train + SBD train + val minus VOC
  val (2007_000033 is in VOC val, so it is left out)."""
  sbd = sources.make_source(f"voc:{voc_root}:sbd_train@{sbd_root}")
  assert len(sbd) == 1
  item = sbd[0]
  assert item["path"].endswith("img/2008_000002.jpg")
  assert np.all(item["label"][:, :7] == 7) and np.all(item["label"][:, 7:] == 0)
  aug = sources.make_source(f"voc:{voc_root}:train_aug@{sbd_root}")
  assert [aug.path(i).rsplit("/", 1)[1] for i in range(len(aug))] == [
      "2007_000032.jpg", "2007_000039.jpg", "2008_000002.jpg"]


@pytest.mark.parametrize("spec,match", [
    ("voc:{missing}:train", r"PASCAL VOC 2012 not found.*host\.robots\.ox\.ac\.uk.*JPEGImages"),
    ("voc:{root}:test", r"no list .*test\.txt.*splits here: train, val"),
    ("voc:{root}:train_aug", r"needs the SBD annotations.*benchmark"),
    ("voc:{root}", r"needs a root and a split"),
])
def test_errors_name_the_fix(voc_root, tmp_path, spec, match):
  """A missing dataset says where to get VOC 2012 and the layout; a bad split lists the ones
  there; SBD splits without SBD say how to give it."""
  with pytest.raises((FileNotFoundError, ValueError), match=match):
    sources.make_source(spec.format(root=voc_root, missing=tmp_path / "nope"))


def test_missing_label_file_is_a_decode_error(voc_root, tmp_path):
  """An image listed without its label PNG raises DecodeError naming the PNG (so the training
  pipeline skips it and evaluation reports it)."""
  (voc_root / "ImageSets/Segmentation/broken.txt").write_text("2007_999999\n")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(voc_root / "JPEGImages/2007_999999.jpg")
  source = sources.make_source(f"voc:{voc_root}:broken")
  with pytest.raises(image_ops.DecodeError, match="SegmentationClass/2007_999999.png"):
    source[0]
