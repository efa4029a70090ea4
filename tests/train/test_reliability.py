"""What the trainer, eval and the tools do with damaged or mismatched checkpoints, zero
intervals, a bad batch size, a full disk, a stop at an awkward moment and a lost evaluation:
one line that names the fix, nothing already written lost, and a rerun that finishes the job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, load_config, subprocess_env, tiny_config
from cpjax import system
from cpjax.tools import common
from cpjax.train import checkpointing, trainer


def _tiny(total_steps: int = 2, **overrides):
  """configs/demo.py:tiny for `total_steps`, a checkpoint at every step, no sample grids."""
  return tiny_config("demo", **{"total_steps": total_steps, "checkpoint.every_steps": 1,
                                "sample_every_steps": 0, **overrides})


def _train(config, workdir):
  return trainer.train(config, workdir, devices=jax.devices()[:1])


def _steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _leaves(state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _truncate(path, keep: int = 10) -> None:
  path.write_bytes(path.read_bytes()[:keep])


def _largest_state_file(workdir, step):
  files = (workdir / "checkpoints" / str(step) / "state").rglob("*")
  return max((p for p in files if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
  """A 2-step run with checkpoints 1 and 2 (a read-only template: tests copy it)."""
  workdir = tmp_path_factory.mktemp("template")
  _train(_tiny(), workdir)
  return workdir


@pytest.fixture
def run_dir(two_checkpoints, tmp_path):
  subprocess.run(["cp", "-a", f"{two_checkpoints}/.", str(tmp_path)], check=True)
  return tmp_path


def test_resume_sets_a_damaged_latest_checkpoint_aside(run_dir, two_checkpoints, tmp_path_factory):
  """The latest checkpoint's data file truncated (a copy cut short): training resumes from step
  1, moves step 2 to damaged_checkpoints/ (kept) and ends where a run that never had step 2
  would: step 3's parameters equal a clean resume from step 1."""
  _truncate(run_dir / "checkpoints" / "2" / "data" / "process_0-of-1.json")
  state = _train(_tiny(total_steps=3), run_dir)
  assert (run_dir / "damaged_checkpoints" / "2" / "data").is_dir()
  assert _steps(run_dir) == [1, 2, 3]
  clean = tmp_path_factory.mktemp("clean")
  subprocess.run(["cp", "-a", f"{two_checkpoints}/.", str(clean)], check=True)
  subprocess.run(["rm", "-r", str(clean / "checkpoints" / "2")], check=True)
  expected = _train(_tiny(total_steps=3), clean)
  for a, b in zip(_leaves(state), _leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_eval_and_tools_name_the_damaged_step_and_the_intact_ones(run_dir):
  """A truncated state file: eval of that step, and a tool on the workdir, say which step is
  damaged, which are intact and what to do, in one line."""
  _truncate(_largest_state_file(run_dir, 2))
  config = _tiny(**{"eval.step": 2})
  with pytest.raises(ValueError) as error:
    trainer.evaluate(config, run_dir, devices=jax.devices()[:1])
  message = str(error.value)
  assert "checkpoint of step 2 is damaged" in message and "intact checkpoints: steps 1" in message
  assert "--config.eval.step=1" in message and "\n" not in message
  with pytest.raises(common.ToolError) as error:
    common.load_system(run_dir, None, "copy_paste")
  assert "step 2 is damaged" in str(error.value) and "--step=1" in str(error.value)
  assert (run_dir / "checkpoints" / "2").is_dir()   # a tool never moves or deletes anything


def test_truncated_saved_config_names_its_file(run_dir):
  """The checkpoint's config file cut short: the message names that file (not a JSON
  decoder's position) and the intact step."""
  config_file = run_dir / "checkpoints" / "2" / "config" / "metadata"
  _truncate(config_file, 40)
  with pytest.raises(common.ToolError) as error:
    common.load_system(run_dir, None, "copy_paste")
  message = str(error.value)
  assert f"step 2 is damaged ({config_file.parent}" in message and "steps 1" in message


def test_every_checkpoint_damaged_is_one_line(run_dir):
  for step in (1, 2):
    _truncate(run_dir / "checkpoints" / str(step) / "data" / "process_0-of-1.json")
  with pytest.raises(ValueError, match="every checkpoint in .* is damaged"):
    _train(_tiny(total_steps=3), run_dir)
  assert _steps(run_dir) == [1, 2]   # nothing moved, nothing deleted


def test_resume_with_other_widths_or_task_names_the_difference(run_dir):
  """A run resumed with another network, or in a workdir of another task, stops with one line
  naming the differing fields (not orbax's partial_restore advice)."""
  with pytest.raises(ValueError) as error:
    _train(_tiny(total_steps=3, **{"model.generator_widths": (4, 8)}), run_dir)
  message = str(error.value)
  assert "model.generator_widths" in message and "use a new --workdir" in message
  assert "partial_restore" not in message
  other = load_config("fcn_demo", "tiny")
  other.total_steps, other.checkpoint.async_save = 3, False
  with pytest.raises(ValueError, match="holds a run of task 'copy_paste'"):
    _train(other, run_dir)
  assert _steps(run_dir) == [1, 2]


def test_zero_intervals_mean_only_at_the_end(tmp_path):
  """checkpoint.every_steps=0 and log_every_steps=0: no ZeroDivisionError; one checkpoint, at
  the end."""
  _train(_tiny(total_steps=3, **{"checkpoint.every_steps": 0, "log_every_steps": 0}), tmp_path)
  assert _steps(tmp_path) == [3]


@pytest.mark.parametrize("field,value,match", [
    ("batch_size", 0, r"--config.batch_size=0; give a global batch size >= 1"),
    ("eval.batch_size", -2, r"--config.eval.batch_size=-2; give a global batch size >= 1"),
    ("total_steps", 0, r"--config.total_steps=0; give a number of steps >= 1"),
    ("checkpoint.every_steps", -1, r"--config.checkpoint.every_steps=-1; .* or 0 for never"),
    ("checkpoint.max_to_keep", 0, r"--config.checkpoint.max_to_keep=0; give 1 or more")])
def test_bad_counts_are_refused_before_anything_runs(field, value, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    _train(_tiny(**{field: value}), tmp_path)
  assert not list(tmp_path.glob("checkpoints/[0-9]*"))


def test_bad_eval_source_is_reported_before_training(tmp_path):
  with pytest.raises(ValueError, match=r"--config.eval.source=folder:.*checked before training"):
    _train(_tiny(**{"eval.source": f"folder:{tmp_path / 'missing'}"}), tmp_path / "w")
  assert not list(tmp_path.glob("w/checkpoints/[0-9]*"))


def test_rerun_writes_the_missing_final_evaluation(run_dir):
  """A run that died before its final evaluation was written: the same command again evaluates
  the last step (and trains nothing)."""
  result = run_dir / "eval" / "step_00000002.json"
  expected = json.loads(result.read_text())
  result.unlink()
  _train(_tiny(), run_dir)
  assert json.loads(result.read_text())["psnr"] == pytest.approx(expected["psnr"], abs=1e-6)
  assert _steps(run_dir) == [1, 2]


def _sigterm_after(monkeypatch, target, name, when):
  """Sends this process SIGTERM right after `target.name(...)` returns for a call `when`
  accepts (the trainer's own handler then asks the loop to stop)."""
  original = getattr(target, name)

  def wrapped(self, *args, **kwargs):
    out = original(self, *args, **kwargs)
    if when(*args):
      os.kill(os.getpid(), signal.SIGTERM)
    return out

  monkeypatch.setattr(target, name, wrapped)


@pytest.mark.parametrize("async_save", [False, True])
def test_sigterm_right_after_a_scheduled_save_stops_cleanly(async_save, monkeypatch, tmp_path):
  """SIGTERM just after step 2's scheduled checkpoint started (with async_save, while it is
  still being written): train returns the state of step 2 without a second save of that step
  (before: 'Checkpoint for step 2 already exists'), and the checkpoint is complete."""
  _sigterm_after(monkeypatch, checkpointing.Checkpointer, "save", lambda step, *_: step == 2)
  config = _tiny(total_steps=5, **{"checkpoint.every_steps": 2,
                                   "checkpoint.async_save": async_save})
  state = _train(config, tmp_path)
  assert int(state.step) == 2 and _steps(tmp_path) == [2]
  for a, b in zip(_leaves(system.load(tmp_path).state), _leaves(state)):
    np.testing.assert_array_equal(a, b)


def test_sigterm_during_evaluation_stops_after_it(monkeypatch, tmp_path):
  """SIGTERM while step 2 is evaluated: the evaluation is written, the loop stops with step 2
  on disk; the rerun resumes and finishes the run."""
  _sigterm_after(monkeypatch, trainer._Run, "evaluate",  # pylint: disable=protected-access
                 lambda state, step: step == 2)
  config = _tiny(total_steps=3, **{"checkpoint.every_steps": 2, "eval.every_steps": 2})
  state = _train(config, tmp_path)
  assert int(state.step) == 2 and (tmp_path / "eval" / "step_00000002.json").exists()
  monkeypatch.undo()
  assert int(_train(config, tmp_path).step) == 3
  assert (tmp_path / "eval" / "step_00000003.json").exists()


def test_full_disk_during_a_save_keeps_the_last_checkpoint(run_dir):
  """Files capped at 40 KiB, as when a disk fills during a save. Every file the run writes
  before the save is smaller (the eval curves ~26 kB); the checkpoint's _METADATA (~58 kB) is
  not, however OCDBT splits the arrays into data files (the split varies from run to run, so
  a cap between data-file sizes was flaky). The run stops with one line naming the step and
  the intact checkpoint, which still loads; no half-written step remains."""
  before = _leaves(system.load(run_dir).state)
  # ulimit -f counts KiB; writes past it fail with EFBIG once SIGXFSZ is ignored.
  command = (f"ulimit -f 40; trap '' XFSZ; exec {sys.executable} -m cpjax.main "
             f"--config=configs/demo.py:tiny --workdir={run_dir} --config.total_steps=3 "
             "--config.checkpoint.async_save=False --config.sample_every_steps=0 "
             "--compilation_cache=off")
  run = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True,
                       env=subprocess_env(), timeout=600)
  assert run.returncode == 1, run.stderr[-3000:]
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("cpjax.main: saving the checkpoint of step 3"), run.stderr[-3000:]
  assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) < 10
  assert "the checkpoint of step 2 is intact" in last
  assert _steps(run_dir) == [1, 2]
  loaded = system.load(run_dir)
  assert loaded.step == 2
  for a, b in zip(_leaves(loaded.state), before):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/demo.py:nope"],
     "--config=configs/demo.py:nope: unknown variant 'nope' of configs/demo.py; use '' or 'tiny'."),
    (["--config=configs/demo.py:tiny", "--config.nope=1"],
     "--config.nope: configs/demo.py has no setting 'nope'"),
    (["--config=configs/demo.py:tiny", "--config.model.generator_widht=1"],
     "did you mean --config.model.generator_widths"),
    (["--config=configs/nope.py"], "--config=configs/nope.py: no such file 'configs/nope.py'"),
    (["--config=configs/demo.py:tiny", "--config.total_steps=abc"],
     "--config.total_steps=abc: invalid literal for int()")])
def test_command_line_mistakes_are_one_line(args, expected, tmp_path):
  """A wrong variant, key, file or value: exit status 2 and one line, no traceback."""
  run = subprocess.run([sys.executable, "-m", "cpjax.main", *args, f"--workdir={tmp_path}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert run.returncode == 2, run.stderr[-2000:]
  assert run.stderr.strip().splitlines() == [run.stderr.strip()], run.stderr[-2000:]
  assert run.stderr.startswith("cpjax.main: ") and expected in run.stderr


def test_eval_sweep_skips_a_half_deleted_checkpoint_and_names_it(run_dir):
  """An old checkpoint with its array files deleted (metadata left): the sweep evaluates the
  intact one, then ends with one line naming the damaged step (not a pytree structure error)."""
  subprocess.run(["rm", "-r", str(run_dir / "checkpoints" / "1" / "state" / "ocdbt.process_0")],
                 check=True)
  for result in (run_dir / "eval").glob("step_*.json"):
    result.unlink()
  with pytest.raises(ValueError, match=r"evaluated steps \[2\]; skipped damaged checkpoints: "
                                        r"the checkpoint of step 1 is damaged"):
    trainer.eval_sweep(_tiny(), run_dir, devices=jax.devices()[:1])
  assert (run_dir / "eval" / "step_00000002.json").exists()
