"""The ablation sweeps name real config fields: each variant's overrides reach the built task."""
from __future__ import annotations

import pytest

from conftest import load_config
from cpjax import tasks
from experiments import copy_paste_ablations as ablations


@pytest.mark.parametrize("sweep", ["sigma", "shading", "noise"])
def test_every_variant_builds_a_task_with_its_override(sweep, tmp_path):
  runs = ablations.variants(sweep, base_sigma=15.0)
  assert len(runs) >= 2
  seen = set()
  for name, overrides in runs.items():
    config = load_config("faces", "tiny")
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
    task = tasks.build(config)
    seen.add((task.transform.sigma, task.transform.shading, task.generator.noise))
    cmd = ablations.command("configs/faces.py:tiny", tmp_path / name, overrides, ["--x=1"])
    assert cmd[-1] == "--x=1" and all(f"--config.{k}={v}" in cmd for k, v in overrides.items())
  assert len(seen) == len(runs)  # the variants really differ
