"""Training on several processes (jax.distributed on 127.0.0.1, 2 CPU devices each) of the tiny
copy-paste config: multi-host preemption, a lost peer, (after the restart that follows a lost
peer) the one-device result, and the one-device result of a run with a curriculum."""
from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from conftest import REPO, subprocess_env
from cpjax.train import trainer
from trainer_runs import (CURRICULUM, assert_same_eval, assert_same_params,
                          assert_same_params_but_rounding, free_port, main_cmd, restore,
                          tiny)


def _launch(workdir: pathlib.Path, port: int, *extra: str,
            logs: list[pathlib.Path] | None = None) -> list[subprocess.Popen]:
  """Processes 0 and 1 of `main_cmd(workdir, *extra)`, 2 CPU devices each, coordinated on
  127.0.0.1:port; each writes to logs[i], or to a pipe without logs."""
  env = subprocess_env(devices=2)
  procs = []
  for i in range(2):
    cmd = main_cmd(workdir, *extra, f"--coordinator_address=127.0.0.1:{port}",
                   "--num_processes=2", f"--process_id={i}")
    if logs is None:
      procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True))
      continue
    with logs[i].open("w") as out:
      procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, text=True))
  return procs


def _wait_for_step_3(procs: list[subprocess.Popen], log: pathlib.Path) -> None:
  """Until process 0's log shows step 3 (at most 400 s); both processes must still run."""
  deadline = time.time() + 400
  while "step 3/" not in log.read_text() and time.time() < deadline:
    assert all(p.poll() is None for p in procs), log.read_text()[-3000:]
    time.sleep(0.2)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  """Multi-host preemption: SIGTERM to process 1 only; jax.distributed's preemption service tells
  process 0, both agree on a step (orbax's reached_preemption), save it together and exit 0."""
  logs = [tmp_path / f"process{i}.log" for i in range(2)]
  procs = _launch(tmp_path / "w", free_port(), "--config.total_steps=100000",
                  "--config.checkpoint.every_steps=100000", "--config.log_every_steps=1",
                  logs=logs)
  _wait_for_step_3(procs, logs[0])
  procs[1].send_signal(signal.SIGTERM)
  for p, log in zip(procs, logs):
    assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
  steps = [int(p.name) for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(steps) == 1 and steps[0] >= 3, steps
  assert all("preempted: saved the checkpoint of step" in log.read_text() for log in logs)


@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_peer_stops_the_other_with_one_line(victim, tmp_path):
  """SIGKILL to one of two processes (process 0 is also the coordinator): the survivor exits
  within 30 s (heartbeat timeout 5 s) with status 3 and, as its last line, which process was
  lost and how to resume. Restarting both resumes from the latest checkpoint; one more step
  then gives the parameters (1e-5) and the evaluation (1e-4) that one device gets for that
  many steps: 2 processes, from the start and after a resume, compute the one-device run."""
  port = free_port()
  logs = [tmp_path / f"process{i}.log" for i in range(2)]
  procs = _launch(tmp_path / "w", port, "--config.total_steps=100000",
                  "--config.log_every_steps=1", "--config.checkpoint.every_steps=1",
                  "--heartbeat_timeout_secs=5", logs=logs)
  _wait_for_step_3(procs, logs[0])
  procs[victim].kill()
  killed_at = time.time()
  survivor = procs[1 - victim]
  assert survivor.wait(timeout=120) == 3, logs[1 - victim].read_text()[-3000:]
  assert time.time() - killed_at < 30
  last = logs[1 - victim].read_text().strip().splitlines()[-1]
  assert last.startswith(f"cpjax: process {1 - victim} of 2 stops: lost process {victim}"), last
  assert "Rerun the same command on every host" in last
  if victim == 0:
    return
  latest = max(int(p.name) for p in (tmp_path / "w" / "checkpoints").iterdir()
               if p.name.isdigit())
  restart = _launch(tmp_path / "w", port, f"--config.total_steps={latest + 1}",
                    "--heartbeat_timeout_secs=5")
  outputs = [p.communicate(timeout=600)[0] for p in restart]
  assert [p.returncode for p in restart] == [0, 0], [out[-2000:] for out in outputs]
  assert f"resumed from the checkpoint of step {latest}" in outputs[0]
  reference = trainer.train(tiny(total_steps=latest + 1), tmp_path / "one",
                            devices=jax.devices()[:1])
  assert_same_params(reference, restore(tiny(), tmp_path / "w"))
  assert_same_eval(tmp_path / "one", tmp_path / "w", latest + 1)


def test_two_processes_run_a_curriculum_as_one_device_does(tmp_path):
  """curriculum.low_res_steps 3 and reconstruction_steps 1 of 4 steps on 2 processes: every
  process picks each step's compiled phase from its own step count, so both run the same
  program at every step; the run ends with one device's parameters, but for entries whose
  gradient is float rounding (`assert_same_params_but_rounding`, as for 8 devices in
  test_trainer.py), and logs the same losses (1e-4)."""
  curriculum = CURRICULUM
  procs = _launch(tmp_path / "w", free_port(), "--config.total_steps=4",
                  *(f"--config.{k}={v}" for k, v in curriculum.items()))
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [out[-2000:] for out in outputs]
  reference = trainer.train(tiny(**curriculum), tmp_path / "one", devices=jax.devices()[:1])
  assert_same_params_but_rounding(reference, restore(tiny(**curriculum), tmp_path / "w"))
  logged = [[json.loads(line) for line in (tmp_path / run / "train_metrics.jsonl").read_text()
             .splitlines()] for run in ("one", "w")]
  assert [[(m["step"], "critic_loss" in m) for m in run] for run in logged] == [
      [(1, False), (2, True), (3, True), (4, True)]] * 2
  np.testing.assert_allclose([m["loss"] for m in logged[1]], [m["loss"] for m in logged[0]],
                             rtol=1e-4)

