"""Video input/output: frame folders in numeric order, video files, masks, DAVIS layout, errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data_pipelines import video


def _write_frames(folder, frames, names=None):
  folder.mkdir(parents=True, exist_ok=True)
  for i, frame in enumerate(frames):
    Image.fromarray(frame).save(folder / (names[i] if names else f"{i:05d}.png"))


def test_clip_writer_refuses_a_bad_size_in_one_line(tmp_path, capsys):
  """python -m data_pipelines.video --size=big: exit status 1 and one line naming the flag."""
  assert video.main(["--size=big", f"--out={tmp_path / 'clip'}"]) == 1
  assert capsys.readouterr().out == ("data_pipelines.video: --size: size 'big' is not HxW; give "
                                     "e.g. 240x424.\n")
  assert not (tmp_path / "clip").exists()


def test_frame_folder_is_read_in_numeric_order(tmp_path):
  """f2 comes before f10 (the reference writes f%d.jpg); other files are ignored."""
  frames = [np.full((4, 6, 3), 10 * i, np.uint8) for i in range(11)]
  _write_frames(tmp_path, frames, [f"f{i}.png" for i in range(11)])
  (tmp_path / "notes.txt").write_text("not a frame")
  got = video.read_frames(tmp_path)
  assert got.shape == (11, 4, 6, 3)
  np.testing.assert_array_equal(got[:, 0, 0, 0], [10 * i for i in range(11)])


def test_video_file_round_trip(tmp_path):
  """An MP4 written with OpenCV reads back with the same count and size, close in value."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = skimage.data.chelsea()
  clip = np.stack([photo[100 + 4 * i:132 + 4 * i, 150:198] for i in range(6)])
  assert video.write_video(tmp_path / "c.mp4", clip)
  got = video.read_frames(tmp_path / "c.mp4")
  assert got.shape == clip.shape
  assert np.mean(np.abs(got.astype(float) - clip)) < 8    # lossy codec on a photo


def test_masks_palette_and_grayscale(tmp_path):
  """A palette mask is a hole where its index is > 0 (any DAVIS object); a gray mask where
  its value is >= 128."""
  index = np.zeros((4, 5), np.uint8)
  index[1, 1], index[2, 3] = 1, 2
  pal = Image.fromarray(index, mode="P")
  pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
  gray = np.zeros((4, 5), np.uint8)
  gray[0, 0], gray[3, 4] = 200, 100
  tmp_path.mkdir(exist_ok=True)
  pal.save(tmp_path / "00000.png")
  Image.fromarray(gray).save(tmp_path / "00001.png")
  got = video.read_masks(tmp_path, 2, (4, 5))
  np.testing.assert_array_equal(got[0], index > 0)
  np.testing.assert_array_equal(got[1], gray >= 128)


@pytest.mark.parametrize("problem, match", [
    ("count", "holds 2 masks but the video has 3 frames"),
    ("size", "are 4x5 but the frames are 8x8"),
    ("empty", "holds no images"),
    ("missing", "does not exist"),
])
def test_mask_errors_name_the_problem(tmp_path, problem, match):
  folder = tmp_path / "masks"
  if problem != "missing":
    folder.mkdir()
  if problem in ("count", "size"):
    for i in range(2):
      Image.fromarray(np.zeros((4, 5), np.uint8)).save(folder / f"{i}.png")
  count, size = (3, (4, 5)) if problem == "count" else (2, (8, 8))
  with pytest.raises(video.VideoError, match=match):
    video.read_masks(folder, count, size)


def test_frames_of_mixed_sizes_are_an_error(tmp_path):
  _write_frames(tmp_path, [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)])
  with pytest.raises(video.VideoError, match="00001.png is 4x6 but 00000.png is 4x4"):
    video.read_frames(tmp_path)


def test_davis_annotations_folder(tmp_path):
  frames = tmp_path / "DAVIS" / "JPEGImages" / "480p" / "tennis"
  annotations = tmp_path / "DAVIS" / "Annotations" / "480p" / "tennis"
  frames.mkdir(parents=True)
  assert video.davis_annotations(frames) is None
  annotations.mkdir(parents=True)
  assert video.davis_annotations(frames) == annotations


def test_camera_clip_moves_over_the_photo():
  """Frames have the requested size, differ from each other, and show the photo: the middle
  of the clip correlates with the centre of the photo."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = skimage.data.chelsea()
  clip = video.camera_clip(photo, 5, (30, 40), seed=1)
  assert clip.shape == (5, 30, 40, 3) and clip.dtype == np.uint8
  assert all(np.abs(clip[t].astype(int) - clip[t + 1]).mean() > 1 for t in range(4))
  assert clip.std() > 10
