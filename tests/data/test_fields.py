"""Pipelines over sources with aligned fields (image + mask + label + scalars) and the
random-resized-crop / evaluation geometries."""
from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import image_ops
from data_pipelines import pipeline
from data_pipelines import schema
from data_pipelines import sources


def _item(i: int, h: int, w: int) -> dict[str, np.ndarray]:
  """A random image whose mask and label are functions of its red channel, pixel by pixel."""
  image = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
  return {"image": image, "mask": _mask_of(image), "label": _label_of(image),
          "subset": i % 3, "path": f"item{i}"}


def _mask_of(image: np.ndarray) -> np.ndarray:
  return np.where(image[..., :1] > 127, 255, 0).astype(np.uint8)


def _label_of(image: np.ndarray) -> np.ndarray:
  return (image[..., 0] // 64).astype(np.uint8)


class _FieldSource:
  """In-memory items of several sizes with aligned mask / label fields and a 'subset' scalar."""
  fields = {"image": "image", "mask": "mask", "label": "label"}
  scalars = ("subset",)

  def __init__(self, sizes):
    self._sizes = list(sizes)

  def __len__(self):
    return len(self._sizes)

  def __getitem__(self, i):
    return _item(i, *self._sizes[i])

  def path(self, i):
    return f"item{i}"


class _SmallForeground(_FieldSource):
  """64x64 items whose foreground is one 10x10 square at a random place."""

  def __getitem__(self, i):
    item = _item(i, 64, 64)
    r = np.random.default_rng(1000 + i)
    top, left = r.integers(0, 54, 2)
    item["mask"] = np.zeros((64, 64, 1), np.uint8)
    item["mask"][top:top + 10, left:left + 10] = 255
    return item


def _fake_from_spec(rest: str, *, image_key: str = "image"):
  del image_key
  return _FieldSource([(int(rest), int(rest))] * 5)


@pytest.fixture
def field_source(monkeypatch):
  """'fake:<side>' names a _FieldSource through the plugin table, like a dataset module."""
  monkeypatch.setitem(sources._PLUGINS, "fake", f"{__name__}:_fake_from_spec")
  return "fake:20"


def _train_batches(spec, n, **cfg):
  it = pipeline.train_iterator(dict(source=spec, **cfg), global_batch_size=4, seed=3)
  return [next(it) for _ in range(n)]


def test_plugin_prefix_builds_the_module_source(field_source):
  """make_source dispatches a registered prefix to its module's source_from_spec."""
  source = sources.make_source(field_source)
  assert isinstance(source, _FieldSource) and len(source) == 5
  assert sources.source_fields(source) == _FieldSource.fields


def test_crop_and_flip_keep_fields_aligned(field_source):
  """Random crops and flips move the mask and label with the image, pixel for pixel."""
  for batch in _train_batches(field_source, 3, image_size=(12, 10)):
    assert batch["image"].shape == (4, 12, 10, 3)
    assert batch["mask"].shape == (4, 12, 10, 1) and batch["label"].shape == (4, 12, 10)
    np.testing.assert_array_equal(batch["mask"], _mask_of(batch["image"]))
    np.testing.assert_array_equal(batch["label"], _label_of(batch["image"]))


def test_scalars_pass_through(field_source):
  """The source's scalar fields arrive as int32, matching the item each example came from."""
  batch = next(pipeline.eval_batches(dict(source=field_source, image_size=20), batch_size=4))
  assert batch["subset"].dtype == np.int32
  np.testing.assert_array_equal(batch["subset"], np.arange(4) % 3)


def test_random_resized_crop_resizes_every_field(field_source):
  """random_resized_crop gives image_size for all fields; labels stay class ids (nearest) and
  mask values stay in 0..255 with the mask at least as smooth as a bilinear resize."""
  batches = _train_batches(field_source, 2, image_size=16, augment="random_resized_crop")
  for batch in batches:
    assert batch["image"].shape == (4, 16, 16, 3) and batch["label"].shape == (4, 16, 16)
    assert set(np.unique(batch["label"])) <= {0, 1, 2, 3}
  # Crops of a 20x20 item resized to 16x16 with area in [0.5, 1]: the crop side is in
  # [~12, 20]; a plain crop would have no resampled (non 0/255) mask values at all.
  masks = np.concatenate([b["mask"] for b in batches])
  assert np.any((masks > 0) & (masks < 255))


def test_random_resized_crop_box_ranges():
  """Boxes drawn like torchvision: area fraction in scale, aspect in ratio, inside the image."""
  rng = np.random.default_rng(0)
  areas, aspects = [], []
  for _ in range(500):
    top, left, h, w = image_ops.random_resized_crop_box(100, 150, (0.5, 1.0), (0.75, 4 / 3), rng)
    assert 0 <= top <= 100 - h and 0 <= left <= 150 - w
    areas.append(h * w / 15000)
    aspects.append(w / h)
  # Rounding moves the area and aspect by at most ~2 %; draws spread over the ranges (large
  # square-ish boxes do not fit a 100x150 image and are redrawn, as in torchvision).
  assert 0.48 <= min(areas) < 0.55 and 0.85 < max(areas) <= 0.89  # w <= 4/3 h <= 133
  assert 0.73 <= min(aspects) < 0.8 and 1.27 < max(aspects) <= 1.37


def test_keep_foreground_redraws_empty_crops():
  """With keep_foreground='mask', most crops keep part of a small foreground square; without it,
  most miss it. (Each empty draw is still kept with probability 0.05, so with 1/3 of the draws
  hitting the square about 0.034 / (0.034 + 0.33) ~ 10 % of the crops stay empty.)"""
  def fraction_with_foreground(keep):
    source = _SmallForeground([(64, 64)] * 128)
    cfg = pipeline._settings(dict(image_size=32, augment="random_resized_crop",
                                  scale=(0.1, 0.2), keep_foreground=keep, flip=False))
    fields = sources.source_fields(source)
    hits = 0
    for i in range(128):
      out = pipeline._prepare_train(source[i], fields, cfg, np.random.default_rng([0, i]))
      hits += pipeline._foreground_pixels(out["mask"]) > 1
    return hits / 128

  without, with_keep = fraction_with_foreground(None), fraction_with_foreground("mask")
  assert without < 0.45
  assert with_keep > 0.78


def test_eval_resize_mode(field_source):
  """Eval mode 'resize' resizes every field exactly to image_size (no crop)."""
  batch = next(pipeline.eval_batches(
      dict(source=field_source, image_size=(8, 12)), batch_size=4, mode="resize"))
  expected = image_ops.resize(_item(0, 20, 20)["image"], (8, 12))
  np.testing.assert_array_equal(batch["image"][0], expected)
  assert batch["mask"].shape == (4, 8, 12, 1) and batch["label"].shape == (4, 8, 12)


def test_eval_pad_mode(field_source):
  """Eval mode 'pad' keeps the item whole and pads with 0 (image, mask) and 255 (label)."""
  batch = next(pipeline.eval_batches(
      dict(source=field_source, image_size=(24, 26)), batch_size=4, mode="pad"))
  item = _item(1, 20, 20)
  np.testing.assert_array_equal(batch["image"][1, :20, :20], item["image"])
  np.testing.assert_array_equal(batch["label"][1, :20, :20], item["label"])
  assert np.all(batch["label"][1, 20:] == 255) and np.all(batch["label"][1, :, 20:] == 255)
  assert np.all(batch["image"][1, 20:] == 0) and np.all(batch["mask"][1, :, 20:] == 0)


def test_eval_pad_mode_rejects_larger_items(field_source):
  """An item larger than the padded size is an error naming it and the fix."""
  with pytest.raises(ValueError, match=r"item0 is 20x20, larger than .* eval.mode='resize'"):
    next(pipeline.eval_batches(dict(source=field_source, image_size=16), batch_size=4,
                               mode="pad"))


def test_eval_padding_examples_have_every_field(field_source):
  """The padded tail of the last eval batch has each field's shape and valid=False."""
  batches = list(pipeline.eval_batches(dict(source=field_source, image_size=20), batch_size=4))
  last = batches[-1]
  np.testing.assert_array_equal(last["valid"], [True, False, False, False])
  assert last["label"].shape == (4, 20, 20) and last["mask"].shape == (4, 20, 20, 1)


def test_misaligned_item_is_an_error(monkeypatch):
  """A source whose mask does not match its image size fails with a message naming the item."""
  class Misaligned(_FieldSource):
    def __getitem__(self, i):
      item = super().__getitem__(i)
      item["mask"] = item["mask"][:-1]
      return item

  monkeypatch.setattr(sources, "make_source", lambda spec, image_key="image": Misaligned([(9, 9)]))
  with pytest.raises(ValueError, match="item0: field 'mask' is .* must be aligned"):
    next(pipeline.eval_batches(dict(source="x", image_size=8), batch_size=1))


def test_unknown_field_kind_is_an_error():
  class Bad(_FieldSource):
    fields = {"image": "image", "depth": "depth"}

  with pytest.raises(ValueError, match="field 'depth' has kind 'depth'"):
    sources.source_fields(Bad([(4, 4)]))


def _half_pixel_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Exact bilinear resize, half-pixel centres, edges clamped, rounded to uint8: output pixel i
  samples input coordinate (i + 0.5) * in / out - 0.5 (what resize_linear computed in NumPy
  before it called OpenCV)."""
  def taps(n_out, n_in):
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    x0 = np.floor(x).astype(int)
    return x0, np.minimum(x0 + 1, n_in - 1), x - x0

  (y0, y1, ty), (x0, x1, tx) = taps(size[0], array.shape[0]), taps(size[1], array.shape[1])
  a = array.astype(np.float64)
  extra = (1,) * (a.ndim - 2)
  tx, ty = tx.reshape((1, -1) + extra), ty.reshape((-1, 1) + extra)
  top = a[y0][:, x0] * (1 - tx) + a[y0][:, x1] * tx
  bottom = a[y1][:, x0] * (1 - tx) + a[y1][:, x1] * tx
  return np.clip(np.round(top * (1 - ty) + bottom * ty), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,size", [((37, 53, 3), (16, 16)), ((20, 30, 3), (45, 31)),
                                        ((40, 40, 1), (17, 23)), ((33, 21), (64, 8)),
                                        ((9, 12, 5), (4, 24))])
def test_linear_resize_is_within_one_level_of_exact_bilinear(shape, size):
  """resize_linear (cv2.resize INTER_LINEAR) is within one grey level of the exact half-pixel
  bilinear formula (OpenCV rounds its fixed-point weights), for down- and upscaling and 1-5
  channels, keeping the array's channel layout; the same size returns the input itself."""
  image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  got = image_ops.resize_linear(image, size)
  want = _half_pixel_bilinear(image, size)
  assert got.shape == want.shape == size + shape[2:] and got.dtype == np.uint8
  assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
  assert image_ops.resize_linear(image, shape[:2]) is image


def test_sizes_from_ints_pairs_and_text():
  """pair: an int is a square, (h, w) stays; parse_pair reads 'HxW' / 'H,W'; anything else,
  or a side of 0, is a ValueError naming it."""
  assert image_ops.pair(64) == (64, 64) and image_ops.pair([24, np.int64(40)]) == (24, 40)
  assert image_ops.parse_pair("240x424") == (240, 424)
  assert image_ops.parse_pair(" 48 X 64 ") == image_ops.parse_pair("48,64") == (48, 64)
  for bad in ("big", "48x", "48x64x3", "-4x8", "4.5x8"):
    with pytest.raises(ValueError, match=f"size '{bad}' is not HxW"):
      image_ops.parse_pair(bad)
  with pytest.raises(ValueError, match="must be positive"):
    image_ops.parse_pair("0x8")
  with pytest.raises(ValueError, match="must be an int or"):
    image_ops.pair((1, 2, 3))


def test_linear_resample_in_eval_resize(field_source):
  """data.resample='linear' switches images and masks to resize_linear; labels stay nearest."""
  batch = next(pipeline.eval_batches(
      dict(source=field_source, image_size=(8, 12), resample="linear"), batch_size=4,
      mode="resize"))
  item = _item(0, 20, 20)
  np.testing.assert_array_equal(batch["image"][0], image_ops.resize_linear(item["image"], (8, 12)))
  np.testing.assert_array_equal(batch["mask"][0], image_ops.resize_linear(item["mask"], (8, 12)))
  assert set(np.unique(batch["label"])) <= {0, 1, 2, 3}
  with pytest.raises(ValueError, match="data.resample is 'cubic'"):
    pipeline._settings(dict(resample="cubic"))


def test_keep_foreground_needs_a_mask_field():
  """keep_foreground naming a field the source lacks is a one-line error, not a KeyError."""
  with pytest.raises(ValueError, match="keep_foreground is 'mask' but the source samples has no "
                                       "mask field"):
    pipeline.train_iterator(dict(source="samples", image_size=8, keep_foreground="mask",
                                 augment="random_resized_crop"), global_batch_size=2, seed=0)


def _sized_from_spec(rest: str, *, image_key: str = "image"):
  """'sized:' -> three items of different sizes."""
  del rest, image_key
  return _FieldSource([(20, 30), (24, 18), (10, 10)])


def test_eval_full_mode_adds_full_resolution_fields(monkeypatch):
  """Eval mode 'full' gives the 'resize' fields plus each field whole, padded to full_size, and
  its extent; padding examples have the same keys and shapes."""
  monkeypatch.setitem(sources._PLUGINS, "sized", f"{__name__}:_sized_from_spec")
  cfg = dict(source="sized:", image_size=8)
  batch = next(pipeline.eval_batches(cfg, batch_size=4, mode="full", full_size=(24, 32)))
  resized = next(pipeline.eval_batches(cfg, batch_size=4, mode="resize"))
  for key in ("image", "mask", "label"):
    np.testing.assert_array_equal(batch[key], resized[key])
  assert batch["image_full"].shape == (4, 24, 32, 3) and batch["label_full"].shape == (4, 24, 32)
  np.testing.assert_array_equal(batch["full_extent"][:3], [(20, 30), (24, 18), (10, 10)])
  item = _item(1, 24, 18)
  np.testing.assert_array_equal(batch["image_full"][1, :, :18], item["image"])
  np.testing.assert_array_equal(batch["mask_full"][1, :, :18], item["mask"])
  assert np.all(batch["image_full"][1, :, 18:] == 0)
  assert np.all(batch["label_full"][1, :, 18:] == 255)
  assert not batch["valid"][3] and batch["mask_full"][3].shape == (24, 32, 1)


@pytest.mark.parametrize("train,mode", [(True, "center"), (False, "center"), (False, "full")])
def test_batch_fields_name_the_keys_of_the_batches(monkeypatch, train, mode):
  """pipeline.batch_fields (from the source's declaration, nothing read) is exactly the key set
  of the batches the same settings produce: source fields and scalars, 'index', 'skipped' in
  training or 'valid' in evaluation, the full-resolution fields in mode 'full'."""
  monkeypatch.setitem(sources._PLUGINS, "sized", f"{__name__}:_sized_from_spec")
  cfg = dict(source="sized:", image_size=8)
  if train:
    batch = next(pipeline.train_iterator(cfg, global_batch_size=2, seed=0))
  else:
    batch = next(pipeline.eval_batches(cfg, batch_size=2, mode=mode, full_size=(24, 32)))
  fields = pipeline.batch_fields(cfg, train=train, mode=mode)
  assert fields == set(batch)
  assert ("skipped" in fields) == train and ("image_full" in fields) == (mode == "full")


def test_a_missing_field_a_task_needs_is_one_line(field_source):
  """schema.require names the setting, what its batches hold and where the missing field comes
  from; a source with the field passes."""
  needs = {"label": "a source with label maps", "real": "iharmony4:ROOT"}
  with pytest.raises(ValueError, match=r"^--config.data.source=samples:train gives batches of "
                                       r"image, index, skipped, but the fcn task also reads "
                                       r"'label' \(a source with label maps\); 'real' "
                                       r"\(iharmony4:ROOT\)$"):
    schema.require(pipeline.batch_fields({"source": "samples:train"}, train=True), needs,
                   task="fcn", setting="--config.data.source=samples:train")
  schema.require(pipeline.batch_fields({"source": field_source}, train=False),
                 {"label": "-", "subset": "-", "valid": "-"}, task="fcn", setting="x")


def test_eval_full_mode_needs_a_large_enough_canvas(monkeypatch):
  monkeypatch.setitem(sources._PLUGINS, "sized", f"{__name__}:_sized_from_spec")
  with pytest.raises(ValueError, match="eval.mode 'full' needs .* set eval.full_size"):
    next(pipeline.eval_batches(dict(source="sized:"), batch_size=1, mode="full"))
  with pytest.raises(ValueError, match=r"item0 is 20x30, .* raise eval.full_size to at least"):
    next(pipeline.eval_batches(dict(source="sized:", image_size=8), batch_size=1, mode="full",
                               full_size=16))
