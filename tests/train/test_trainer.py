"""The shared training loop on the tiny copy-paste config: 8-device and FSDP equivalence, exact
resume, preemption, the NaN guard, and the command line end to end (several processes:
`test_multiprocess.py`)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, evaluate_twice, subprocess_env
from cpjax.train import trainer
import trainer_runs
from trainer_runs import (CURRICULUM, assert_same_eval, assert_same_params,
                          assert_same_params_but_rounding, main_cmd, tiny)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
  """The reference: 4 steps of the tiny config on one device (workdir, state)."""
  return trainer_runs.one_device_run(tmp_path_factory.mktemp("one_device"))


def test_eight_devices_match_one_device(one_device_run, tmp_path):
  """Same global batch on 8 devices gives the same parameters and eval as on 1 (1e-5)."""
  assert jax.device_count() == 8
  ref_dir, ref_state = one_device_run
  state = trainer.train(tiny(), tmp_path, devices=jax.devices())
  assert_same_params(ref_state, state)
  assert_same_eval(ref_dir, tmp_path, 4)


def test_fsdp_matches_replicated(one_device_run, tmp_path):
  """Sharding params and optimizer state over 8 devices changes nothing numerically, and the
  large arrays really are split."""
  _, ref_state = one_device_run
  state = trainer.train(tiny(fsdp=True), tmp_path, devices=jax.devices())
  assert_same_params(ref_state, state)
  # The tiny model has no array above the FSDP size threshold, so check the rule directly.
  from cpjax.train import partitioning  # pylint: disable=g-import-not-at-top
  mesh = partitioning.make_mesh()
  spec = partitioning.state_shardings(
      {"w": jax.ShapeDtypeStruct((3, 3, 64, 512), np.float32),
       "b": jax.ShapeDtypeStruct((512,), np.float32)}, mesh, fsdp=True)
  assert spec["w"].spec == jax.sharding.PartitionSpec(None, None, None, "data")
  assert spec["b"].spec == jax.sharding.PartitionSpec()


def test_resume_is_exact(one_device_run, tmp_path):
  """2 steps + restart + 2 steps gives the parameters of 4 straight steps."""
  _, ref_state = one_device_run
  trainer.train(tiny(total_steps=2), tmp_path, devices=jax.devices()[:1])
  state = trainer.train(tiny(total_steps=4), tmp_path, devices=jax.devices()[:1])
  assert_same_params(ref_state, state, atol=1e-6)


def test_a_curriculum_resumes_exactly_and_matches_on_eight_devices(tmp_path):
  """curriculum.low_res_steps 3 and reconstruction_steps 1 of 4 steps: the run logs image_scale
  0.5 for steps 1-3 and 1 for step 4, and the critic's metrics from step 2 on; 2 steps + restart
  + 2 steps (the restart inside the low-resolution phase, the switch to full size after it) give
  the parameters of 4 straight steps.

  4 steps on 8 devices, logged every 2 steps, log each metric's mean over the steps that report
  it (step 2's critic loss alone for steps 1-2), the same as one device's to 1e-4, and end with
  the same parameters but for entries whose gradient is float rounding
  (`assert_same_params_but_rounding`). At 16 px the tiny generator's bottleneck is 2 x 2, where
  8 of the 9 taps of its dilated convs see only padding: 9 of the 2304 entries of dilated_0's
  kernel differ by up to 3.7 lr after 4 steps (measured; 20 of the 101223 entries in all)."""
  phased = CURRICULUM
  straight = trainer.train(tiny(**phased), tmp_path / "straight", devices=jax.devices()[:1])
  logged = [json.loads(line) for line in
            (tmp_path / "straight" / "train_metrics.jsonl").read_text().splitlines()]
  assert [(m["step"], m["image_scale"], "critic_loss" in m) for m in logged] == [
      (1, 0.5, False), (2, 0.5, True), (3, 0.5, True), (4, 1.0, True)]
  trainer.train(tiny(2, **phased), tmp_path / "resumed", devices=jax.devices()[:1])
  resumed = trainer.train(tiny(**phased), tmp_path / "resumed", devices=jax.devices()[:1])
  assert_same_params(straight, resumed, atol=1e-6)
  eight = trainer.train(tiny(**{**phased, "log_every_steps": 2}), tmp_path / "eight",
                        devices=jax.devices())
  assert_same_params_but_rounding(straight, eight)
  windows = [json.loads(line) for line in
             (tmp_path / "eight" / "train_metrics.jsonl").read_text().splitlines()]
  assert [w["step"] for w in windows] == [2, 4]
  for name, reported in (("l1", [(0, 1), (2, 3)]), ("critic_loss", [(1,), (2, 3)])):
    expected = [np.mean([logged[i][name] for i in steps]) for steps in reported]
    np.testing.assert_allclose([w[name] for w in windows], expected, rtol=1e-4, err_msg=name)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  """A NaN learning rate from step 3 on: step 3's critic update poisons the critic, so the
  generator loss of step 3 is NaN; the error names step 3 and the checkpoint of step 2 stays
  the latest (no checkpoint of the poisoned state is written)."""
  trainer.train(tiny(total_steps=2), tmp_path, devices=jax.devices()[:1])
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step 3;.*\(step 2\)"):
    trainer.train(tiny(total_steps=8, **{"optim.lr": float("nan")}), tmp_path,
                  devices=jax.devices()[:1])
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 2


def test_sigterm_saves_checkpoint_and_exits_zero(tmp_path):
  """SIGTERM during training: exit status 0 and a checkpoint at the step it stopped."""
  proc = subprocess.Popen(
      main_cmd(tmp_path, "--config.total_steps=100000", "--config.checkpoint.every_steps=100000",
               "--config.log_every_steps=1"),
      cwd=REPO, env=subprocess_env(),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  deadline = time.time() + 300
  for line in proc.stdout:
    lines.append(line)
    if "step 3/" in line or time.time() > deadline:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  log = "".join(lines) + out
  assert proc.returncode == 0, log[-3000:]
  steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
  assert steps and max(steps) >= 3, log[-3000:]
  assert "preempted" in log


def test_command_line_end_to_end(tmp_path):
  """`python -m cpjax.main --config=configs/demo.py:tiny` writes checkpoints, TensorBoard events,
  sample PNGs, eval JSON, the profile of the steps asked for and compiled executables into the
  cache folder given; eval and eval_sweep then work on the same directory."""
  env = subprocess_env()
  cache = tmp_path / "cache"
  run = subprocess.run(main_cmd(tmp_path, "--config.total_steps=2",
                                "--config.sample_every_steps=1",
                                "--config.checkpoint.every_steps=1",
                                "--config.profile_steps=2,2", f"--compilation_cache={cache}"),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert (tmp_path / "checkpoints" / "2").is_dir()
  assert len(list(cache.iterdir())) >= 2   # at least init and the train step
  [profile] = (tmp_path / "tensorboard" / "plugins" / "profile").iterdir()
  assert list(profile.glob("*.xplane.pb")) and (profile / "perfetto_trace.json.gz").exists()
  assert list((tmp_path / "tensorboard" / "train").glob("events.out.tfevents.*"))
  assert list((tmp_path / "tensorboard" / "eval").glob("events.out.tfevents.*"))
  assert (tmp_path / "samples" / "train_00000001.png").exists()
  result = json.loads((tmp_path / "eval" / "step_00000002.json").read_text())
  assert result["num_examples"] == 8 and 0 < result["ssim"] <= 1
  assert "steps/s" in run.stderr and "ETA" in run.stderr
  # Overrides reach the config: the sweep re-evaluates checkpoint 1 (none has a result yet),
  # with the evaluation the run compiled into the same cache.
  sweep = subprocess.run(main_cmd(tmp_path, "--mode=eval_sweep", "--config.total_steps=2",
                                  f"--compilation_cache={cache}"),
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert sweep.returncode == 0, sweep.stderr[-3000:]
  assert (tmp_path / "eval" / "step_00000001.json").exists()
  one = subprocess.run(main_cmd(tmp_path, "--mode=eval", "--config.eval.step=7"),
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert one.returncode == 1 and "no checkpoint of step 7" in one.stderr
  assert "Traceback" not in one.stderr


def test_missing_dataset_message(tmp_path):
  """configs/faces.py without data stops with one line that says how to fix it."""
  run = subprocess.run([sys.executable, "-m", "cpjax.main", "--config=configs/faces.py",
                        f"--workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=subprocess_env())
  assert run.returncode == 1
  assert "--config.data.source=folder:" in run.stderr and "configs/demo.py" in run.stderr
  assert "Traceback" not in run.stderr


def test_eval_sweep_follow_waits_for_the_final_step(tmp_path):
  """With eval.follow the sweep evaluates what exists, keeps polling while training goes on,
  and exits once the final step's result exists."""
  trainer.train(tiny(total_steps=1), tmp_path, devices=jax.devices()[:1])
  (tmp_path / "eval" / "step_00000001.json").unlink()  # leave step 1 to the sweep
  sweep = subprocess.Popen(
      main_cmd(tmp_path, "--mode=eval_sweep", "--config.total_steps=2",
               "--config.eval.follow=True", "--config.eval.poll_secs=1"),
      cwd=REPO, env=subprocess_env(),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while not (tmp_path / "eval" / "step_00000001.json").exists() and time.time() < deadline:
    time.sleep(1)
  assert sweep.poll() is None, "the sweep stopped before the final step existed"
  trainer.train(tiny(total_steps=2), tmp_path, devices=jax.devices()[:1])
  out, _ = sweep.communicate(timeout=300)
  assert sweep.returncode == 0, out[-3000:]
  assert (tmp_path / "eval" / "step_00000002.json").exists()


@pytest.mark.parametrize("spec", ["3", "0,2", "5,4", "a,b", "1,2,3"])
def test_bad_profile_steps_are_refused_before_training(spec, tmp_path):
  """profile_steps must be 'A,B' with 1 <= A <= B; anything else is a one-line error that shows
  the form, raised before any step runs."""
  with pytest.raises(ValueError, match="give 'A,B'"):
    trainer.train(tiny(profile_steps=spec), tmp_path, devices=jax.devices()[:1])
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_evaluations_share_one_event_writer_and_close_it(tmp_path):
  """Evaluating at every step (and then eval / eval_sweep on the same workdir) writes one
  TensorBoard event file per process run, and every writer thread is gone afterwards."""
  import gc  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  # Earlier tests' unreachable grain iterators stop their threads now, not inside the window.
  gc.collect()
  before = threading.active_count()
  config = tiny(total_steps=3, **{"eval.every_steps": 1})
  trainer.train(config, tmp_path, devices=jax.devices()[:1])
  trainer.evaluate(config, tmp_path, devices=jax.devices()[:1])
  assert len(list((tmp_path / "tensorboard" / "eval").glob("events.out.tfevents.*"))) == 2
  assert threading.active_count() <= before, [t.name for t in threading.enumerate()]


def test_a_closed_writer_leaves_no_thread(tmp_path):
  """Writer.close() returns after every thread the writer started has ended (tensorboardX's
  event-queue feeder thread included, which its own close() leaves running for a moment)."""
  import threading  # pylint: disable=import-outside-toplevel
  from cpjax.train import writers  # pylint: disable=import-outside-toplevel
  before = set(threading.enumerate())
  writer = writers.Writer(tmp_path, "train", enabled=True)
  writer.scalars(1, {"loss": 0.5})
  writer.grid(1, "train", {"image": np.zeros((2, 4, 4, 3), np.float32)})
  writer.close()
  assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
  writer.close()   # a second close is a no-op


def test_curves_plot_loss_and_eval_metrics_with_baselines(tmp_path):
  """Each evaluation writes eval/curves.png from the logged training losses
  (train_metrics.jsonl, one line per log interval) and the eval JSONs; the task's panels name
  result and baseline paths that exist in the JSON."""
  from cpjax.train import writers  # pylint: disable=import-outside-toplevel
  config = tiny(total_steps=4, **{"eval.every_steps": 2, "log_every_steps": 1})
  trainer.train(config, tmp_path, devices=jax.devices()[:1])
  lines = (tmp_path / writers.TRAIN_HISTORY).read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(tmp_path / "eval" / "curves.png") as image:
    assert image.width > 300 and image.height > 100
  from cpjax import tasks  # pylint: disable=import-outside-toplevel
  result = json.loads((tmp_path / "eval" / "step_00000004.json").read_text())
  for _, path, baselines in tasks.build(config).curves:
    for p in [path, *baselines.values()]:
      assert writers._lookup(result, p) is not None, p  # pylint: disable=protected-access


def test_baselines_are_computed_once_per_evaluation_set(tmp_path):
  """Baselines do not depend on the train state: the second evaluation of a run reuses the
  first one's sums (here the jitted baseline function is gone by then) and reports the same."""
  first, second = evaluate_twice(tiny(), tmp_path)
  assert first["poisson_psnr"] == second["poisson_psnr"]
  assert first["cut_paste_ssim"] == second["cut_paste_ssim"]
  assert first["psnr"] == second["psnr"]
