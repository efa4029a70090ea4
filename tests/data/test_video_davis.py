"""davis: sources, the CPN paper's DAVIS restoration evaluation, on a small tree in DAVIS's own
layout (JPEGImages/480p/<seq>/00000.jpg, Annotations/480p/<seq>/00000.png palette PNGs,
ImageSets/2017/val.txt)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from data_pipelines import davis, pipeline, sources, video_clips
from data_pipelines.voc import PALETTE

# name -> (frames, height, width); dog is shorter than a 5-frame clip and of another size.
_SEQUENCES = {"bear": (7, 24, 40), "car": (6, 24, 40), "dog": (3, 30, 50)}


def _palette_png(ids: np.ndarray, path) -> None:
  image = Image.fromarray(ids, "P")
  image.putpalette(PALETTE.ravel().tolist())
  image.save(path)


@pytest.fixture
def root(tmp_path):
  """A DAVIS tree: each frame a random JPEG, each annotation two objects that move."""
  base = tmp_path / "DAVIS"
  for s, (name, (count, h, w)) in enumerate(_SEQUENCES.items()):
    frames, masks = base / "JPEGImages/480p" / name, base / "Annotations/480p" / name
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(count):
      pixels = np.random.default_rng([s, i]).integers(0, 256, (h, w, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(frames / f"{i:05d}.jpg", quality=95)
      ids = np.zeros((h, w), np.uint8)
      ids[2 + i:10 + i, 3 + 2 * s:12 + 2 * s] = 1
      ids[h - 8:h - 2, w - 10 - i:w - 3 - i] = 2
      _palette_png(ids, masks / f"{i:05d}.png")
  (base / "ImageSets/2017").mkdir(parents=True)
  (base / "ImageSets/2017/val.txt").write_text("bear\ncar\ndog\n")
  return base


def _holes(base, name: str, frames: list[int], size: tuple[int, int]) -> list[np.ndarray]:
  """The released test's reading of masks: convert('P') > 0, cv2 nearest to the frame size."""
  out = []
  for t in frames:
    ids = np.array(Image.open(base / "Annotations/480p" / name / f"{t:05d}.png").convert("P"))
    out.append(cv2.resize((ids > 0).astype(np.uint8), size[::-1],
                          interpolation=cv2.INTER_NEAREST))
  return out


def test_each_clip_gets_the_masks_of_the_next_video_in_the_list(root):
  """bear's clips take car's masks frame by frame; car's take dog's (3 frames, played back and
  forth: 0 1 2 1 0 1, and resized from 30x50 to car's 24x40); dog is too short for a clip but
  lends its masks, and would take bear's."""
  source = sources.make_source(f"davis:{root}")
  assert len(source) == (7 - 4) + (6 - 4)
  assert source.fields[video_clips.hole_field(4)] == "label"
  item = source[1]                                            # bear, frames 1..5
  assert item["path"].endswith("bear/00001.jpg") and source.mask_sequence(1) == "car"
  for k, want in enumerate(_holes(root, "car", [1, 2, 3, 4, 5], (24, 40))):
    np.testing.assert_array_equal(item[video_clips.hole_field(k)], want)
  item = source[4]                                            # car, frames 1..5
  assert source.mask_sequence(4) == "dog"
  for k, want in enumerate(_holes(root, "dog", [1, 2, 1, 0, 1], (24, 40))):
    np.testing.assert_array_equal(item[video_clips.hole_field(k)], want)
  with Image.open(root / "JPEGImages/480p/car/00003.jpg") as frame:
    np.testing.assert_array_equal(item["frame_2"], np.asarray(frame))


@pytest.mark.parametrize("t, count, want", [(0, 3, 0), (2, 3, 2), (3, 3, 1), (4, 3, 0),
                                            (5, 3, 1), (9, 4, 3), (7, 1, 0)])
def test_mask_sequences_play_back_and_forth(t, count, want):
  assert davis.mask_frame(t, count) == want


def test_lists_in_the_2016_path_format_name_their_sequences(root):
  (root / "ImageSets/480p").mkdir()
  (root / "ImageSets/480p/val.txt").write_text(
      "/JPEGImages/480p/car/00000.jpg /Annotations/480p/car/00000.png\n"
      "/JPEGImages/480p/car/00001.jpg /Annotations/480p/car/00001.png\n"
      "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png\n")
  source = sources.make_source(f"davis:{root}:480p/val:3:2")
  assert len(source) == (6 - 4) + (7 - 4) and source.mask_sequence(0) == "bear"
  assert [video_clips.frame_field(k) in source[0] for k in range(4)] == [True] * 3 + [False]


def test_bad_davis_trees_are_clear_errors(root):
  with pytest.raises(ValueError, match=r"no sequence list .*2017/test.txt; use one of 2017/val"):
    sources.make_source(f"davis:{root}:2017/test")
  (root / "ImageSets/2017/one.txt").write_text("bear\n")
  with pytest.raises(ValueError, match="lists 1 sequence; .* at least two"):
    sources.make_source(f"davis:{root}:2017/one")
  (root / "Annotations/480p/car/00004.png").unlink()
  with pytest.raises(ValueError, match="car holds 5 masks for 6 frames; .*every frame annotated"):
    sources.make_source(f"davis:{root}")


def test_evaluation_pipeline_resizes_frames_and_holes_together(root):
  """eval.mode='resize' with linear resampling (configs/video_inpainting.py:davis): the frames
  come at the evaluation size and the holes as labels resized nearest, still in {0, 1}."""
  data = dict(source=f"davis:{root}", image_size=(16, 24), resample="linear")
  batch = next(pipeline.eval_batches(data, batch_size=2, mode="resize"))
  assert batch["frame_4"].shape == (2, 16, 24, 3) and batch["hole_4"].shape == (2, 16, 24)
  want = _holes(root, "car", [0], (24, 40))[0]
  want = np.asarray(Image.fromarray(want).resize((24, 16), Image.Resampling.NEAREST))
  np.testing.assert_array_equal(batch["hole_0"][0], want)
