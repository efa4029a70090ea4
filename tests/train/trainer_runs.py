"""What the trainer's tests share: the tiny copy-paste config, parameter comparison, restoring a
workdir's state, the `cpjax.main` command line, and the one-device reference run."""
from __future__ import annotations

import json
import pathlib
import socket
import sys
from typing import Any

import jax
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from cpjax.train import trainer


# Settings of configs/demo.py:tiny that every run here overrides, in-process and on the command
# line: the paper's optimiser (Adam b1 0, lr 2e-4, constant) and a near-identity homography
# (sigma 0.12 px). The device-layout tests compare parameters at 1e-5, and the transform's
# output differs between layouts by float rounding (~6e-7). Measured after 4 steps, 1 vs 8
# devices: 7e-7 so; 2e-5 with the demo's b1 0.9 and lr 1e-3; 1e-3 with the demo tiny's sigma
# 0.23 px; 4e-3 with both.
PINNED = {"optim.b1": 0.0, "optim.lr": 2e-4, "optim.milestones": (), "transform.sigma": 0.1171875}


# A curriculum within the 4 steps of `tiny`: steps 0-2 at half size, step 0 without the critic;
# logged every step.
CURRICULUM = {"curriculum.low_res_steps": 3, "curriculum.reconstruction_steps": 1,
              "log_every_steps": 1}


def tiny(total_steps: int = 4, **overrides):
  """configs/demo.py:tiny with the `PINNED` settings."""
  return tiny_config("demo", **{**PINNED, "total_steps": total_steps, **overrides})


def params(state) -> dict[str, np.ndarray]:
  return flat_params({"generator": state.generator, "critic": state.critic,
                      "generator_ema": state.generator_ema})


def assert_same_params(a, b, atol=1e-5):
  pa, pb = params(a), params(b)
  assert pa.keys() == pb.keys()
  worst = max(float(np.max(np.abs(pa[k] - pb[k]))) for k in pa)
  assert worst < atol, f"max parameter difference {worst}"


def assert_same_params_but_rounding(a, b, atol=1e-5, fraction=1e-3):
  """The parameters of two layouts of the same run: at most `fraction` of the entries differ
  by more than `atol`. Adam's update lr g / (sqrt(v) + eps) is a part of lr whatever g's size,
  so where a gradient entry is float rounding (within a few eps of zero) the layouts' rounding
  moves it by up to lr / sqrt(1 - b2) per step; a layout error would move most entries."""
  pa, pb = params(a), params(b)
  assert pa.keys() == pb.keys()
  gaps = np.concatenate([np.abs(pa[k] - pb[k]).ravel() for k in pa])
  assert np.mean(gaps > atol) <= fraction, f"{np.mean(gaps > atol):.2e} of entries beyond {atol}"


def assert_same_eval(reference_dir: pathlib.Path, workdir: pathlib.Path, step: int,
                     atol: float = 1e-4) -> None:
  """The eval JSON of `step` in two workdirs: the same keys, every float within `atol`, the
  rest (step, source, example count) equal."""
  name = f"step_{step:08d}.json"
  reference = json.loads((reference_dir / "eval" / name).read_text())
  got = json.loads((workdir / "eval" / name).read_text())
  assert got.keys() == reference.keys()
  for k, value in reference.items():
    assert got[k] == (pytest.approx(value, abs=atol) if isinstance(value, float) else value), k


def restore(config, workdir, step=None):
  run = trainer._Run(config, workdir, jax.devices()[:1])  # pylint: disable=protected-access
  try:
    return run.system.restore(run.checkpointer, step or run.checkpointer.latest_step())
  finally:
    run.checkpointer.close()


def one_device_run(workdir: pathlib.Path) -> tuple[pathlib.Path, Any]:
  """The reference run: 4 steps of the tiny config on one device in `workdir`; (workdir, the
  final train state)."""
  return workdir, trainer.train(tiny(), workdir, devices=jax.devices()[:1])


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main_cmd(workdir, *extra):
  pinned = [f"--config.{k}={v}" for k, v in PINNED.items()]
  return [sys.executable, "-m", "cpjax.main", "--config=configs/demo.py:tiny",
          f"--workdir={workdir}", "--config.checkpoint.async_save=False", *pinned, *extra]
