"""cpjax.tools.harmonize on a 1-step tiny iDIH run: any resolution, background untouched, the
network's prediction at its own resolution, one-line errors."""
from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, load_config, subprocess_env
from cpjax import system
from cpjax.tools import harmonize
from cpjax.tools.common import ToolError
from cpjax.train import trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  c = load_config("iharmony4_idih", "tiny")
  c.total_steps, c.checkpoint.async_save = 1, False
  workdir = tmp_path_factory.mktemp("harmonize_run")
  trainer.train(c, workdir, devices=jax.devices()[:1])
  return workdir


@pytest.fixture(scope="module")
def restored(run_dir):
  loaded = system.load(run_dir)
  return loaded.config, loaded.task, loaded.state


def _write_inputs(tmp_path, h: int, w: int):
  yy, xx = np.mgrid[0:h, 0:w]
  image = np.stack([yy * 200 // h, xx * 200 // w, np.full_like(yy, 90)], -1).astype(np.uint8)
  mask = np.zeros((h, w), np.uint8)
  mask[h // 4:3 * h // 4, w // 3:2 * w // 3] = 255
  Image.fromarray(image).save(tmp_path / "composite.png")
  Image.fromarray(mask).save(tmp_path / "mask.png")
  return image, mask


def test_any_resolution_keeps_the_background(run_dir, tmp_path):
  """A 37x53 composite (not the model's 32x32): the written PNG equals the composite outside
  the mask exactly and differs inside it."""
  image, mask = _write_inputs(tmp_path, 37, 53)
  harmonize.run(str(run_dir), str(tmp_path / "composite.png"), str(tmp_path / "mask.png"),
                str(tmp_path / "out.png"))
  out = np.asarray(Image.open(tmp_path / "out.png"))
  assert out.shape == image.shape
  np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
  assert np.abs(out[mask > 0].astype(int) - image[mask > 0]).max() > 0


def test_at_model_resolution_the_result_is_the_prediction(restored):
  """At 32x32 the change is not resampled: inside the mask the output is the network's
  harmonised image (task.harmonize), outside it the composite."""
  _, task, state = restored
  rng = np.random.default_rng(0)
  composite = rng.random((32, 32, 3)).astype(np.float32)
  mask = np.zeros((32, 32, 1), np.float32)
  mask[8:20, 5:30] = 1.0
  got = harmonize.harmonize(task, state, composite, mask)
  pred = np.asarray(task.harmonize(state, jnp.asarray(composite[None]), jnp.asarray(mask[None])))[0]
  np.testing.assert_allclose(got, np.where(mask > 0, pred, composite), atol=1e-5)


def test_bad_input_gets_one_line_errors(run_dir, restored, tmp_path):
  _, task, state = restored
  _write_inputs(tmp_path, 20, 30)
  with pytest.raises(ToolError, match="mask is 20x29 but the composite is 20x30"):
    harmonize.harmonize(task, state, np.zeros((20, 30, 3)), np.ones((20, 29, 1)))
  with pytest.raises(ToolError, match="mask is empty"):
    harmonize.harmonize(task, state, np.zeros((20, 30, 3)), np.zeros((20, 30, 1)))
  with pytest.raises(ToolError, match="would be overwritten"):
    harmonize.run(str(run_dir), str(tmp_path / "composite.png"), str(tmp_path / "mask.png"),
                  str(tmp_path / "composite.png"))
  with pytest.raises(ToolError, match="no checkpoint"):
    harmonize.run(str(tmp_path), str(tmp_path / "composite.png"), str(tmp_path / "mask.png"),
                  str(tmp_path / "x.png"))


def test_command_line_error_is_one_line(tmp_path):
  _write_inputs(tmp_path, 20, 30)
  Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small_mask.png")
  run = subprocess.run(
      [sys.executable, "-m", "cpjax.tools.harmonize", f"--workdir={tmp_path}",
       f"--image={tmp_path / 'composite.png'}", f"--mask={tmp_path / 'small_mask.png'}",
       f"--out={tmp_path / 'out.png'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=subprocess_env())
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1].startswith("cpjax.tools.harmonize: ")
  assert "is 10x10 but" in run.stderr and "Traceback" not in run.stderr
