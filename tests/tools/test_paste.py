"""`python -m cpjax.tools.paste` and `cpjax.tools.common` on a real 1-step checkpoint of the tiny
demo config: Y = (G(X) + S) M + T (1 - M) at sizes that are not multiples of the generator's
factor, with offsets; and one clear line for every mistake a user can make."""
from __future__ import annotations

import functools
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config, subprocess_env
from cpjax import system
from cpjax.tools import common, paste
from cpjax.tools.common import ToolError
from cpjax.train import trainer


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A training run with one checkpoint (1 step of configs/demo.py:tiny on one device)."""
  workdir = tmp_path_factory.mktemp("paste_run")
  config = load_config("demo", "tiny")
  config.total_steps = 1
  config.checkpoint.async_save = False
  trainer.train(config, workdir, devices=jax.devices()[:1])
  return workdir


@pytest.fixture(scope="module")
def restored(workdir):
  loaded = system.load(workdir)
  return loaded.config, loaded.task, loaded.state


def _rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """A smooth random image, uint8 [h, w, 3]."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  phase = rng.uniform(0, 2 * np.pi, 3)
  image = 0.5 + 0.4 * np.sin(6 * x[..., None] + 4 * y[..., None] + phase)
  return np.round(image * 255).astype(np.uint8)


def _save(path, pixels: np.ndarray) -> str:
  Image.fromarray(pixels).save(path)
  return str(path)


def _placed_mask(mask: np.ndarray, shape: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
  """Independent reference for the placement: moves every white pixel by (DX, DY)."""
  out = np.zeros(shape + (1,), np.float32)
  ys, xs = np.nonzero(mask[..., 0])
  out[ys + offset[1], xs + offset[0], 0] = 1.0
  return out


def test_load_reads_the_config_saved_in_the_checkpoint(restored):
  """The network is rebuilt from the checkpoint's own config, on one device."""
  config, task, state = restored
  widths = load_config("demo", "tiny").model.generator_widths
  assert tuple(config.model.generator_widths) == tuple(widths)
  assert int(state.step) == 1
  assert {d for leaf in jax.tree.leaves(state) for d in leaf.devices()} == {jax.local_devices()[0]}
  assert task.config is config


def test_paste_is_target_outside_and_generator_inside_the_moved_mask(restored):
  """37x53 target (not a multiple of 8), 45x60 source, offset (-7, 4): outside the moved mask the
  output is the target to 8-bit rounding; inside it equals clip(G(X) + S) from a direct call of
  task.generate on the padded canvas (reflect for images, zeros for the mask), within 1e-4, G
  with the moving average of the generator's weights that the demo config keeps."""
  config, task, state = restored
  rng = np.random.default_rng(0)
  source_u8, target_u8 = _rgb(rng, 45, 60), _rgb(rng, 37, 53)
  source, target = source_u8 / np.float32(255), target_u8 / np.float32(255)
  mask = np.zeros((45, 60, 1), np.float32)
  mask[12:30, 20:41] = 1
  mask[30, 25] = 1
  offset, seed = (-7, 4), 3
  out = paste.paste(task, state, source, target, mask, offset, seed=seed)
  assert out.shape == (37, 53, 3) and out.dtype == np.float32

  m = _placed_mask(mask, (37, 53), offset)
  outside = m[..., 0] == 0
  np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8)[outside], target_u8[outside])

  # The reference: the source moved by the offset (zeros elsewhere: S only matters inside M).
  s = np.zeros((37, 53, 3), np.float32)
  s[4:37, 0:53] = source[0:33, 7:60]
  factor = 2**(len(config.model.generator_widths) - 1)
  pad = ((0, -37 % factor), (0, -53 % factor), (0, 0))
  t_p, s_p, m_p = np.pad(target, pad, "reflect"), np.pad(s, pad, "reflect"), np.pad(m, pad)
  assert t_p.shape[:2] == (40, 56)
  ex = {"input": np.concatenate([t_p * (1 - m_p) + s_p * m_p, m_p], -1)[None],
        "source": s_p[None], "mask": m_p[None], "image": t_p[None]}
  ref = np.clip(np.asarray(task.generate(state.generator_ema, ex, jax.random.key(seed),
                                         deterministic=False))[0, :37, :53], 0, 1)
  inside = ~outside
  np.testing.assert_allclose(out[inside], ref[inside], atol=1e-4)
  assert np.abs(out[inside] - s[inside]).max() > 1e-3   # the generator did change the paste


def test_paste_runs_the_generators_moving_average(restored):
  """With the average's weights all zero (G(X) = 0) the paste is clip(S) inside the mask,
  whatever the trained weights `state.generator` are."""
  _, task, state = restored
  assert state.generator_ema is not None
  zeroed = state.replace(generator_ema=jax.tree.map(jnp.zeros_like, state.generator_ema))
  image = _rgb(np.random.default_rng(4), 24, 40) / np.float32(255)
  mask = np.zeros((24, 40, 1), np.float32)
  mask[4:18, 6:30] = 1
  inside = mask[..., 0] == 1
  out = paste.paste(task, zeroed, image, image[::-1], mask)
  np.testing.assert_allclose(out[inside], image[inside], atol=1e-6)
  trained = paste.paste(task, state, image, image[::-1], mask)
  assert np.abs(trained[inside] - image[inside]).max() > 1e-3


def test_seed_selects_the_noise(restored):
  """Same seed, same result; with the noise weights set to 1, another seed gives another one."""
  _, task, state = restored
  rng = np.random.default_rng(1)
  image = _rgb(rng, 37, 53) / np.float32(255)
  mask = np.zeros((37, 53, 1), np.float32)
  mask[5:20, 10:30] = 1
  a = paste.paste(task, state, image, image[::-1], mask, seed=0)
  np.testing.assert_array_equal(a, paste.paste(task, state, image, image[::-1], mask, seed=0))
  bump = functools.partial(jax.tree_util.tree_map_with_path,
                           lambda p, x: x + 1.0 if "noise" in jax.tree_util.keystr(p) else x)
  noisy = state.replace(generator=bump(state.generator), generator_ema=bump(state.generator_ema))
  b0 = paste.paste(task, noisy, image, image[::-1], mask, seed=0)
  b1 = paste.paste(task, noisy, image, image[::-1], mask, seed=1)
  assert np.abs(b0 - b1).max() > 1e-3


def test_large_image_keeps_the_target_size(restored):
  """256x520 target (520 = 8 * 65), 200x300 source: the output has the target's size."""
  _, task, state = restored
  rng = np.random.default_rng(2)
  target = _rgb(rng, 256, 520)
  mask = np.zeros((200, 300, 1), np.float32)
  mask[50:150, 100:250] = 1
  out = paste.paste(task, state, _rgb(rng, 200, 300) / np.float32(255),
                    target / np.float32(255), mask, offset=(200, 50))
  assert out.shape == (256, 520, 3)
  outside = _placed_mask(mask, (256, 520), (200, 50))[..., 0] == 0
  np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8)[outside], target[outside])


def test_placement_error_gives_the_offsets_that_work():
  """The offset ranges in the message are exactly the ones accepted."""
  mask = np.zeros((40, 50, 1), np.float32)
  mask[10:20, 5:15] = 1          # rows 10-19, columns 5-14
  with pytest.raises(ToolError, match=r"falls outside t\.png \(30x25\); use DX in \[-5, 10\] and "
                     r"DY in \[-10, 10\]"):
    paste.check_placement((40, 50), (30, 25), mask, (11, 0), ("s.png", "t.png", "m.png"))
  for offset in [(-5, -10), (10, 10), (-5, 10), (10, -10)]:
    paste.check_placement((40, 50), (30, 25), mask, offset)
  for offset in [(-6, 0), (0, -11), (0, 11)]:
    with pytest.raises(ToolError, match="use DX in"):
      paste.check_placement((40, 50), (30, 25), mask, offset)
  with pytest.raises(ToolError, match=r"region of m\.png is 10x10 but t\.png is only 8x25"):
    paste.check_placement((40, 50), (8, 25), mask, (0, 0), ("s.png", "t.png", "m.png"))


@pytest.mark.parametrize("text,expected", [("0,0", (0, 0)), ("40,-12", (40, -12)),
                                           (" -3 , +7 ", (-3, 7))])
def test_parse_offset(text, expected):
  assert paste.parse_offset(text) == expected


@pytest.mark.parametrize("text", ["3", "1,2,3", "a,b", "1.5,2", ""])
def test_bad_offset_names_the_flag_and_the_syntax(text):
  with pytest.raises(ToolError, match=r"^--offset=.* is not DX,DY; give two integers"):
    paste.parse_offset(text)


def test_read_image_converts_gray_rgba_and_16_bit(tmp_path):
  """Every mode becomes float32 [H, W, 3] in [0, 1]."""
  rgb = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  rgba = np.concatenate([rgb, np.full((5, 7, 1), 17, np.uint8)], -1)
  np.testing.assert_allclose(common.read_image(_save(tmp_path / "a.png", rgba)), rgb / 255,
                             atol=1e-6)
  gray = common.read_image(_save(tmp_path / "g.png", rgb[..., 0]))
  np.testing.assert_allclose(gray, np.repeat(rgb[..., :1], 3, -1) / 255, atol=1e-6)
  Image.fromarray(np.full((5, 7), 65535 // 2, np.uint16)).save(tmp_path / "d.png")
  deep = common.read_image(tmp_path / "d.png")
  assert deep.shape == (5, 7, 3) and deep.dtype == np.float32
  np.testing.assert_allclose(deep, 0.5, atol=1e-4)


def test_unreadable_and_missing_files_are_named(tmp_path):
  (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  with pytest.raises(ToolError, match=r"broken\.png cannot be read as an image .*; give a PNG"):
    common.read_image(tmp_path / "broken.png")
  with pytest.raises(ToolError, match=r"nothere\.png: no such file"):
    common.read_mask(tmp_path / "nothere.png")


def test_mask_checks(tmp_path):
  """Threshold 0.5 with anti-aliased edges allowed; wrong size, gray and empty masks refused."""
  source = _save(tmp_path / "source.png", np.zeros((20, 30, 3), np.uint8))
  m = np.zeros((20, 30), np.uint8)
  m[5:15, 5:20] = 255
  m[4, 5:20] = 128                                   # an anti-aliased edge: 15 of 600 pixels
  mask = common.read_mask(_save(tmp_path / "mask.png", m), like=source)
  assert mask.shape == (20, 30, 1) and set(np.unique(mask)) == {0.0, 1.0}
  assert mask.sum() == 10 * 15 + 15                  # 128 / 255 >= 0.5
  with pytest.raises(ToolError, match=r"^\S*small\.png is 10x30 but \S*source\.png is 20x30; "
                     "give a mask the size of source.png"):
    common.read_mask(_save(tmp_path / "small.png", m[:10]), like=source)
  gray = np.zeros((20, 30), np.uint8)
  gray[:, :10] = 100                                 # 1/3 of the pixels 39% gray
  gray[:, 20:] = 255
  with pytest.raises(ToolError, match=r"gray\.png is not a binary mask \(33\.3% of pixels are "
                     r"gray\); save it as black/white"):
    common.read_mask(_save(tmp_path / "gray.png", gray))
  with pytest.raises(ToolError, match=r"empty\.png is empty \(no white pixels\)"):
    common.read_mask(_save(tmp_path / "empty.png", np.zeros((20, 30), np.uint8)))


def test_write_image_refuses_inputs_and_creates_folders(tmp_path):
  target = _save(tmp_path / "target.png", np.zeros((4, 6, 3), np.uint8))
  common.read_image(target)
  with pytest.raises(ToolError, match=r"target\.png is one of the input files"):
    common.write_image(target, np.ones((4, 6, 3)))
  with pytest.raises(ToolError, match=r"target\.png is one of the input files"):
    common.write_image(tmp_path / "sub" / ".." / "target.png", np.ones((4, 6, 3)))
  assert not np.asarray(Image.open(target)).any()
  out = tmp_path / "new" / "dir" / "out.png"
  common.write_image(out, np.full((4, 6, 3), 0.5))
  np.testing.assert_array_equal(np.asarray(Image.open(out)), np.full((4, 6, 3), 128, np.uint8))


def test_no_checkpoint(tmp_path, workdir):
  message = (f"no checkpoint in {tmp_path}/checkpoints; train one with python -m cpjax.main "
             f"--config=configs/demo.py --workdir={tmp_path}")
  with pytest.raises(FileNotFoundError, match=f"^{re.escape(message)}$"):
    system.load(tmp_path, task="copy_paste")
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="^no checkpoint in"):
    system.load(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 7 .*available steps: 1"):
    system.load(workdir, step=7)


def _cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "cpjax.tools.paste", *args], cwd=REPO,
                        env=subprocess_env(),
                        capture_output=True, text=True, timeout=300)


@pytest.fixture
def files(tmp_path):
  rng = np.random.default_rng(4)
  m = np.zeros((30, 40), np.uint8)
  m[8:20, 10:30] = 255
  return {"source": _save(tmp_path / "source.png", _rgb(rng, 30, 40)),
          "target": _save(tmp_path / "target.png", _rgb(rng, 41, 59)),
          "mask": _save(tmp_path / "mask.png", m)}


def test_cli_writes_the_pasted_png(workdir, files, restored, tmp_path):
  """End to end: the PNG written equals paste() rounded to uint8."""
  out = tmp_path / "out" / "result.png"
  run = _cli(f"--workdir={workdir}", f"--source={files['source']}",
             f"--target={files['target']}", f"--mask={files['mask']}", "--offset=12,-3",
             "--seed=5", f"--out={out}")
  assert run.returncode == 0, run.stderr
  _, task, state = restored
  expected = paste.paste(task, state, common.read_image(files["source"]),
                         common.read_image(files["target"]), common.read_mask(files["mask"]),
                         (12, -3), seed=5)
  got = np.asarray(Image.open(out))
  assert got.shape == (41, 59, 3)
  assert np.abs(got.astype(int) - np.round(expected * 255)).max() <= 1


@pytest.mark.parametrize("case,expected", [
    ("out_is_target", r"target\.png is one of the input files and would be overwritten"),
    ("mask_size", r"target\.png is 41x59 but \S*source\.png is 30x40; give a mask the size of "
                  r"source\.png"),
])
def test_cli_errors_are_one_line(case, expected, files, tmp_path):
  """Exit status 1, one line `cpjax.tools.paste: ...` naming the file, no traceback; the
  target is untouched."""
  before = (tmp_path / "target.png").read_bytes()
  mask = files["mask"] if case != "mask_size" else files["target"]
  out = files["target"] if case == "out_is_target" else str(tmp_path / "out.png")
  run = _cli(f"--workdir={tmp_path / 'no_run'}", f"--source={files['source']}",
             f"--target={files['target']}", f"--mask={mask}", f"--out={out}")
  assert run.returncode == 1
  assert "Traceback" not in run.stderr
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1, run.stderr
  assert lines[0].startswith("cpjax.tools.paste: ")
  assert re.search(expected, lines[0]), lines[0]
  assert (tmp_path / "target.png").read_bytes() == before
