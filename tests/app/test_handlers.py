"""cpjax.app's request handlers without a browser: placement, every method, segmentation, video
jobs, and one-line messages for bad input."""
from __future__ import annotations

import io
import types

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.morphology
from PIL import Image
from scipy import ndimage

from conftest import load_config
from cpjax.app import handlers, models
from cpjax.app.handlers import NotFound, TooLarge
from cpjax.tools import clone, paste
from cpjax.tools.common import ToolError

from .conftest import random_checkpoint


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A smooth random image, float32 [h, w, 3] in [0.1, 0.9]."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  phase = rng.uniform(0, 2 * np.pi, 3)
  return (0.5 + 0.4 * np.sin(6 * x[..., None] + 4 * y[..., None] + phase)).astype(np.float32)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w]
  return (((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1).astype(np.float32)[..., None]


@pytest.fixture
def app(tmp_path):
  a = handlers.App({}, workspace=tmp_path)
  yield a
  a.close()


@pytest.fixture
def scene(app):
  """A 40x50 source with an elliptic region (its box: rows 10-29, columns 14-36) and a 60x70
  target, held by the app."""
  rng = np.random.default_rng(0)
  source, target = _smooth(rng, 40, 50), _smooth(rng, 60, 70)
  mask = _ellipse(40, 50, 19.5, 25, 10, 12)
  ids = {"source": app.hold(source, "s.png")["id"], "target": app.hold(target, "t.png")["id"],
         "mask": app.hold(mask, "m.png")["id"]}
  return source, target, mask, ids


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
  """(y0, x0, height, width) of the nonzero pixels."""
  ys, xs = np.nonzero(mask[..., 0] if mask.ndim == 3 else mask)
  return ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def test_cut_and_paste_puts_the_region_corner_at_x_y(app, scene):
  """At scale 1 the region's bounding box lands with its top-left pixel on (x, y): the result is
  the target with the source's region pixels copied there, bit for bit."""
  source, target, mask, ids = scene
  out = app.paste(**ids, x=20, y=15, methods=["cut"])
  ys, xs = np.nonzero(mask[..., 0])
  expected = target.copy()
  expected[ys - ys.min() + 15, xs - xs.min() + 20] = source[ys, xs]
  np.testing.assert_array_equal(app.held(out["results"][0]["id"]).pixels, expected)
  placed = app.held(out["mask"]["id"]).pixels[..., 0]
  assert set(zip(*np.nonzero(placed))) == set(zip(ys - ys.min() + 15, xs - xs.min() + 20))


@pytest.mark.parametrize("mode", ["normal", "mixed", "monochrome"])
def test_poisson_in_the_target_frame_equals_the_tool_at_the_offset(app, scene, mode):
  """The app runs Poisson cloning on the source placed in the target's frame (offset 0, so that
  moving the region needs no new compilation); the result equals `cpjax.tools.clone.clone` with
  the source at the equivalent offset, and the target outside the region's box + 1-px ring."""
  source, target, mask, ids = scene
  y0, x0, h, w = _box(mask)
  out = app.paste(**ids, x=20, y=15, methods=["cut", f"poisson_{mode}"], domain="box")
  assert [r["method"] for r in out["results"]] == ["cut", f"poisson_{mode}"]
  got = app.held(out["results"][1]["id"]).pixels
  want = clone.clone(source, target, mask, (20 - x0, 15 - y0), mode, "box")
  np.testing.assert_allclose(got, want, atol=1e-5)
  outside = np.ones(target.shape[:2], bool)
  outside[15 - 1:15 + h + 1, 20 - 1:20 + w + 1] = False
  np.testing.assert_array_equal(got[outside], target[outside])


def test_a_scaled_region_is_the_source_resized(app, scene):
  """Scale 2: the placed region is twice the size with its corner at (x, y), and inside it (away
  from its edge) the pixels are those of the whole source enlarged 2x by cv2.resize (bilinear)."""
  source, target, mask, ids = scene
  y0, x0, h, w = _box(mask)
  out = app.paste(**ids, x=10, y=12, scale=2.0, methods=["cut"])
  placed = app.held(out["mask"]["id"]).pixels[..., 0] > 0
  py, px, ph, pw = _box(placed)
  assert abs(py - 12) <= 1 and abs(px - 10) <= 1
  assert abs(ph - 2 * h) <= 1 and abs(pw - 2 * w) <= 1
  big = cv2.resize(source, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
  r, c = np.nonzero(ndimage.binary_erosion(placed, iterations=3))
  got = app.held(out["results"][0]["id"]).pixels
  np.testing.assert_allclose(got[r, c], big[r - 12 + 2 * y0, c - 10 + 2 * x0], atol=1e-5)
  np.testing.assert_array_equal(got[~placed], target[~placed])


def test_bad_placements_and_requests_get_one_line_messages(app, scene):
  _, _, mask, ids = scene
  _, _, h, w = _box(mask)
  cases = [
      (dict(ids, mask=None, x=5, y=5), "no region drawn on the source"),
      (dict(ids, x=None, y=None), "click or drag on the target"),
      (dict(ids, x=60, y=5), rf"region \({h}x{w}\) at x=60, y=5 falls off the target "
                             rf"\(60x70\) or onto its 1-px border; drag it inside: x in "
                             rf"\[1, {69 - w}\], y in \[1, {59 - h}\]"),
      (dict(ids, x=0, y=5), "onto its 1-px border"),
      (dict(ids, x=5, y=5, scale=3.0), r"region is \d+x\d+ at scale 3 but the target is only "
                                       "60x70"),
      (dict(ids, x=5, y=5, scale=100.0), r"use a scale in \[0.05, 8.0\]"),
      (dict(ids, x=5, y=5, methods=["median"]), "no method 'median'; choose from cut"),
      (dict(ids, x=5, y=5, methods=["copy_paste"]), "needs a model; start the app with "
                                                    "--copy_paste=DIR"),
      (dict(ids, x=5, y=5, harmonize=True), "start the app with --harmonize=DIR"),
      (dict(ids, x=5, y=5, domain="fft"), "domain 'fft'; use one of box, mask"),
      (dict(ids, source=None, x=5, y=5), "no source chosen"),
      (dict(ids, mask=ids["target"], x=5, y=5), "a mask as the region"),
  ]
  for request, message in cases:
    with pytest.raises(ToolError, match=message):
      app.paste(**request)
  empty = app.hold(np.zeros((40, 50, 1), np.float32), "empty.png")["id"]
  with pytest.raises(ToolError, match="no region drawn"):
    app.paste(**dict(ids, mask=empty), x=5, y=5)
  with pytest.raises(NotFound, match="no longer holds that target"):
    app.paste(**dict(ids, target="0123456789ab"), x=5, y=5)


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def test_uploads_are_decoded_and_checked(tmp_path):
  app = handlers.App({}, max_upload_bytes=20_000, max_pixels=10_000, workspace=tmp_path)
  rgb = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)
  held = app.upload(_png(rgb), "my photo.png")
  assert (held["name"], held["height"], held["width"]) == ("my_photo.png", 30, 40)
  np.testing.assert_array_equal(app.held(held["id"]).pixels, rgb / np.float32(255.0))
  mask = np.zeros((30, 40), np.uint8)
  mask[5:9, 5:30] = 255
  np.testing.assert_array_equal(app.held(app.upload(_png(mask), "m.png", "mask")["id"]).pixels,
                                (mask > 0)[..., None])
  with pytest.raises(ToolError, match=r"^broken\.png cannot be read as an image"):
    app.upload(b"not an image at all", "broken.png")
  with pytest.raises(ToolError, match="^grey.png is not a binary mask"):
    app.upload(_png(np.full((30, 40), 128, np.uint8)), "grey.png", "mask")
  with pytest.raises(TooLarge, match="the upload is 0.0 MB but the app takes at most"):
    app.upload(b"x" * 20_001, "big.png")
  with pytest.raises(TooLarge, match=r"wide.png is 10x1001 \(0.0 megapixels\)"):
    app.upload(_png(np.zeros((10, 1001, 3), np.uint8)), "wide.png")
  with pytest.raises(ToolError, match="no sample photo 'lena'"):
    app.sample("lena")
  app.close()


class _ColourClasses:
  """A stand-in FCN (hand-made labels): 'cat' where red > 0.5, else 'cup' where blue > 0.5."""
  classes = ("background", "cat", "cup")

  def predict(self, params, images):
    del params
    return jnp.where(images[..., 0] > 0.5, 1, jnp.where(images[..., 2] > 0.5, 2, 0))


def test_segment_picks_the_clicked_object_a_class_or_the_largest_region(tmp_path):
  """With hand-made labels (a large and a small red 'cat', a blue 'cup'): a click takes the
  component under it, a class its largest component, neither the largest of all; each dilated
  by a disk (skimage.morphology.disk) of the given radius."""
  stub = models.Model("segment", "stub", None, _ColourClasses(),
                      types.SimpleNamespace(params={}), False)
  app = handlers.App({"segment": stub}, workspace=tmp_path)
  image = np.zeros((40, 60, 3), np.float32)
  big, small, cup = (np.zeros((40, 60), bool) for _ in range(3))
  big[5:21, 5:26], small[30:35, 40:45], cup[25:39, 5:21] = True, True, True
  image[big | small, 0] = 1.0
  image[cup, 2] = 1.0
  held = app.hold(image, "objects.png")["id"]

  def dilated(region, radius):
    return ndimage.binary_dilation(region, structure=skimage.morphology.disk(radius))

  for request, name, region in [({"x": 42, "y": 32}, "cat", small),
                                ({"class_name": "cup"}, "cup", cup), ({}, "cat", big),
                                ({"x": 10, "y": 10, "dilation": 0}, "cat", big)]:
    out = app.segment(held, **{"dilation": 2, **request})
    assert out["class"] == name
    got = app.held(out["id"]).pixels[..., 0] > 0
    np.testing.assert_array_equal(got, dilated(region, request.get("dilation", 2)))
  with pytest.raises(ToolError, match="labels that pixel background; click on an object "
                                      r"\(it finds: cat, cup\)"):
    app.segment(held, x=55, y=2)
  with pytest.raises(ToolError, match="'dog' is not a class of the FCN; use one of: cat, cup"):
    app.segment(held, class_name="dog")
  plain = app.hold(np.zeros((8, 8, 3), np.float32), "plain.png")["id"]
  with pytest.raises(ToolError, match="finds no cup in plain.png"):
    app.segment(plain, class_name="cup")
  with pytest.raises(ToolError, match="finds no object in plain.png"):
    app.segment(plain)
  app.close()
  with pytest.raises(ToolError, match="start the app with --segment=DIR"):
    handlers.App({}, workspace=tmp_path).segment(held)


def test_harmonize_keeps_the_background_and_runs_on_top_of_paste(harmonize_model, app, scene):
  """The harmonised composite equals the composite outside the mask and differs inside it;
  'harmonize on top' of a paste does the same inside the placed region."""
  app.models["harmonize"] = harmonize_model
  rng = np.random.default_rng(1)
  composite = _smooth(rng, 37, 53)
  mask = _ellipse(37, 53, 18, 26, 9, 14)
  out = app.harmonize(app.hold(composite, "c.png")["id"], app.hold(mask, "m.png")["id"])
  before, after = (app.held(r["id"]).pixels for r in out["results"])
  inside = mask[..., 0] > 0
  np.testing.assert_array_equal(before, composite)
  np.testing.assert_array_equal(after[~inside], composite[~inside])
  assert np.abs(after[inside] - composite[inside]).mean() > 1e-3
  with pytest.raises(ToolError, match="the mask is 40x50 but the composite is 37x53"):
    app.harmonize(out["results"][0]["id"], scene[3]["mask"])

  _, target, _, ids = scene
  pasted = app.paste(**ids, x=20, y=15, methods=["cut"], harmonize=True)
  assert [r["method"] for r in pasted["results"]] == ["cut", "cut+harmonize"]
  cut, harmonised = (app.held(r["id"]).pixels for r in pasted["results"])
  placed = app.held(pasted["mask"]["id"]).pixels[..., 0] > 0
  np.testing.assert_array_equal(harmonised[~placed], target[~placed])
  assert np.abs(harmonised[placed] - cut[placed]).mean() > 1e-3


def test_learned_copy_paste_equals_the_tool_at_the_offset(copy_paste_model, app, scene):
  app.models["copy_paste"] = copy_paste_model
  """The generator on the source placed in the target's frame equals `cpjax.tools.paste.paste`
  with the source at the equivalent offset; the target is kept outside the region."""
  source, target, mask, ids = scene
  y0, x0, _, _ = _box(mask)
  out = app.paste(**ids, x=20, y=15, methods=["copy_paste"], seed=3)
  got = app.held(out["results"][1]["id"]).pixels
  want = paste.paste(copy_paste_model.task, copy_paste_model.state, source, target, mask,
                     (20 - x0, 15 - y0), seed=3)
  np.testing.assert_allclose(got, want, atol=1e-5)
  placed = app.held(out["mask"]["id"]).pixels[..., 0] > 0
  np.testing.assert_array_equal(got[~placed], target[~placed])


def _mp4(path, frames: np.ndarray) -> bytes:
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0,
                           frames.shape[2:0:-1])
  for frame in frames:
    writer.write(np.ascontiguousarray(frame[..., ::-1]))
  writer.release()
  return path.read_bytes()


def _wait(app, job_id):
  import time  # pylint: disable=g-import-not-at-top
  deadline = time.monotonic() + 300
  while (status := app.videos.status(job_id))["state"] in ("queued", "running"):
    assert time.monotonic() < deadline, status
    time.sleep(0.1)
  return status


def test_video_job_moves_the_box_and_keeps_the_rest(tmp_path):
  """A 5-frame clip, the first 4 inpainted under a box moving from (8, 8)-(24, 20) to
  (32, 20)-(48, 32): the job's masks hold the boxes of the straight path (hand-computed), the
  result keeps every pixel outside the box dilated 4 times by a 3x3 cross, and the MP4 exists."""
  workdir = random_checkpoint(load_config("video_demo", "tiny"), tmp_path / "video_run")
  app = handlers.App({"video": models.load("video", workdir)}, workspace=tmp_path / "ws")
  rng = np.random.default_rng(0)
  clip = np.stack([np.roll(_smooth(rng, 48, 64), 2 * i, axis=1) for i in range(5)])
  opened = app.videos.open(_mp4(tmp_path / "in.mp4", np.round(clip * 255).astype(np.uint8)),
                           "clip.mp4")
  assert (opened["frames"], opened["height"], opened["width"], opened["size"]) == (5, 48, 64,
                                                                                    "48x64")
  job = app.videos.start(opened["video"], box=[8, 8, 24, 20], end=[32, 20, 48, 32], frames=4,
                         size="48x64")
  status = _wait(app, job["job"])
  assert status["state"] == "done", status["error"]
  assert (status["done"], status["total"], status["frames"], status["mp4"]) == (8, 8, 4, True)
  folder = app.videos.file(job["job"], "inpainted.mp4").parent
  for i, (x0, y0, x1, y1) in enumerate([(8, 8, 24, 20), (16, 12, 32, 24), (24, 16, 40, 28),
                                        (32, 20, 48, 32)]):
    hole = np.asarray(Image.open(folder / "masks" / f"{i:05d}.png")) > 0
    expected = np.zeros((48, 64), bool)
    expected[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(hole, expected)
    kept = ~ndimage.binary_dilation(expected, iterations=4)   # 3x3 cross, 4 times
    result = np.asarray(Image.open(app.videos.file(job["job"], f"result/{i:05d}.png")))
    frame = np.asarray(Image.open(folder / "frames" / f"{i:05d}.png"))
    np.testing.assert_array_equal(result[kept], frame[kept])
    assert np.abs(result[~kept].astype(int) - frame[~kept]).mean() > 1

  for i in range(5):    # uploaded masks, taken in file-name order
    app.videos.add_mask(opened["video"], _png(np.full((48, 64), 255 * (i % 2), np.uint8)),
                        f"m{i}.png", first=i == 0)
  job = app.videos.start(opened["video"], use_masks=True, frames=3, dilate=0)
  assert _wait(app, job["job"])["state"] == "done"
  folder = app.videos.file(job["job"], "inpainted.mp4").parent
  assert [np.asarray(Image.open(folder / "masks" / f"{i:05d}.png")).max() for i in range(3)] == [
      0, 255, 0]

  for request, message in [
      (dict(box=[8, 8, 24, 20], frames=1), r"frames=1; use between 2 and 5"),
      (dict(box=[8, 8, 99, 20], frames=2), r"hole box \(8, 8\)-\(99, 20\) is not inside the "
                                           "frame"),
      (dict(box=None, frames=2), "the hole box is None; draw it on the first frame"),
      (dict(box=[8, 8, 24, 20], frames=2, size="big"), "size 'big' is not HxW")]:
    with pytest.raises(ToolError, match=message):
      app.videos.start(opened["video"], **request)
  no_masks = app.videos.open(_mp4(tmp_path / "in.mp4", np.zeros((3, 16, 16, 3), np.uint8)), "c.mp4")
  with pytest.raises(ToolError, match="0 masks uploaded for 3 frames"):
    app.videos.start(no_masks["video"], use_masks=True, frames=3)
  with pytest.raises(ToolError, match="clip.txt is not a video file"):
    app.videos.open(b"abc", "clip.txt")
  app.close()
  with pytest.raises(ToolError, match="start the app with --video=DIR"):
    handlers.App({}, workspace=tmp_path / "ws2").videos.start("x", box=[0, 0, 1, 1])
