"""iHarmony4 in its on-disk format: a tiny tree of real JPEG/PNG files read through the real
loader (against OpenCV, the reference loader's library) and through the pipelines."""
from __future__ import annotations

import pathlib

import cv2
import numpy as np
import pytest

from data_pipelines import iharmony4, pipeline, sources
from data_pipelines.image_ops import DecodeError

# (subset, composite name, size) of the tiny tree; two subsets, names in the real format.
_ITEMS = {
    "HCOCO": {"train": [("c360951_1097742_1.jpg", (40, 56)), ("c360951_1097742_2.jpg", (40, 56)),
                        ("c7_88_1.jpg", (48, 36))],
              "test": [("c9_10_1.jpg", (32, 32))]},
    "Hday2night": {"train": [("d90000002-13_1_1.jpg", (36, 44))],
                   "test": [("d90000003-1_2_1.jpg", (30, 50))]},
}


def make_tree(root: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes an iHarmony4-format tree (composites and reals as JPEG, masks as 0/255 PNG)."""
  rng = np.random.default_rng(seed)
  for subset, splits in _ITEMS.items():
    base = root / subset
    for folder in ("composite_images", "real_images", "masks"):
      (base / folder).mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
      (base / f"{subset}_{split}.txt").write_text("".join(f"{n}\n" for n, _ in items))
      for name, (h, w) in items:
        yy, xx = np.mgrid[0:h, 0:w]   # smooth, so resizing keeps the values (JPEG too)
        tint = rng.integers(20, 80, 3)
        real = (tint + 100 * (yy / h)[..., None] + 60 * (xx / w)[..., None]).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
        composite = real.copy()
        composite[mask > 0] = 255 - composite[mask > 0]
        cv2.imwrite(str(base / "composite_images" / name), composite[..., ::-1])
        cv2.imwrite(str(base / "real_images" / iharmony4.real_name(name)), real[..., ::-1])
        cv2.imwrite(str(base / "masks" / iharmony4.mask_name(name)), np.stack([mask] * 3, -1))
  return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> pathlib.Path:
  return make_tree(tmp_path_factory.mktemp("iharmony4"))


def test_name_mapping_is_the_reference_rule():
  """The dataset's naming rule: c360951_1097742_1.jpg -> c360951.jpg and c360951_1097742.png."""
  assert iharmony4.real_name("c360951_1097742_1.jpg") == "c360951.jpg"
  assert iharmony4.mask_name("c360951_1097742_1.jpg") == "c360951_1097742.png"


def test_items_equal_opencv_reads(tree):
  """Each item holds the composite, the real image (RGB) and mask channel 0 as OpenCV reads
  them (the reference loader), plus the subset id; subsets in the order asked for."""
  source = sources.make_source(f"iharmony4:{tree}:train:Hday2night,HCOCO")
  assert len(source) == 4
  assert source.fields == {"image": "image", "real": "image", "mask": "mask"}
  first, last = source[0], source[3]
  assert first["subset"] == iharmony4.SUBSETS.index("Hday2night")
  assert last["subset"] == iharmony4.SUBSETS.index("HCOCO")
  base = tree / "HCOCO"
  read = lambda p: cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)  # noqa: E731
  np.testing.assert_array_equal(last["image"], read(base / "composite_images" / "c7_88_1.jpg"))
  np.testing.assert_array_equal(last["real"], read(base / "real_images" / "c7.jpg"))
  mask = cv2.imread(str(base / "masks" / "c7_88.png"))[:, :, 0]
  np.testing.assert_array_equal(last["mask"][..., 0], mask)
  assert last["mask"].shape == (48, 36, 1) and set(np.unique(mask)) == {0, 255}


def test_spec_defaults_and_errors(tree, tmp_path):
  """Default split train over all four subsets: a tree with two of them names the missing one,
  the download page and the layout; bad subset names list the choices."""
  test = iharmony4.source_from_spec(f"{tree}:test:hcoco")
  assert len(test) == 1 and test.path(0).endswith("c9_10_1.jpg")
  with pytest.raises(FileNotFoundError, match="HAdobe5k.*Image-Harmonization-Dataset-iHarmony4"):
    iharmony4.source_from_spec(str(tree))
  with pytest.raises(FileNotFoundError, match="does not exist.*composite_images"):
    iharmony4.source_from_spec(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="unknown iHarmony4 subset 'HCOCCO'"):
    iharmony4.source_from_spec(f"{tree}:train:HCOCCO,HFlickr")


def test_size_mismatch_is_a_decode_error(tmp_path):
  """A mask that is not the composite's size is reported with its path (no silent resize)."""
  root = make_tree(tmp_path)
  bad = root / "HCOCO" / "masks" / "c7_88.png"
  cv2.imwrite(str(bad), np.zeros((10, 10, 3), np.uint8))
  source = iharmony4.source_from_spec(f"{root}:train:HCOCO")
  with pytest.raises(DecodeError, match="c7_88.png"):
    source[2]


def test_pipelines_carry_all_fields(tree):
  """Training (random-resized crop keeping the foreground, flip) and evaluation ('resize' as the
  reference's 256 px evaluation) batches hold composite, real, mask and subset, aligned: the
  composite equals the real image outside the mask."""
  data = dict(source=f"iharmony4:{tree}:train:HCOCO,Hday2night", image_size=16,
              augment="random_resized_crop", keep_foreground="mask")
  batch = next(iter(pipeline.train_dataset(data, global_batch_size=4, seed=0)))
  assert batch["image"].shape == batch["real"].shape == (4, 16, 16, 3)
  assert batch["mask"].shape == (4, 16, 16, 1) and batch["subset"].dtype == np.int32
  assert sorted(batch["subset"].tolist()) == [0, 0, 0, 3]
  ev = next(iter(pipeline.eval_dataset(data, batch_size=4, mode="resize")))
  assert ev["valid"].all() and ev["subset"].tolist() == [0, 0, 0, 3]
  outside = ev["mask"][..., 0] == 0
  diff = np.abs(ev["image"].astype(int) - ev["real"].astype(int)).max(axis=-1)
  assert np.median(diff[outside]) <= 4     # JPEG noise only
  assert np.median(diff[ev["mask"][..., 0] == 255]) > 30
