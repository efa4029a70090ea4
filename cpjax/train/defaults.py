"""Trainer fields every config starts from (`cpjax.train.trainer` reads them)."""
from __future__ import annotations

import importlib.util
import pathlib
import types
from typing import Any

import ml_collections


def trainer_config() -> ml_collections.ConfigDict:
  """Defaults for the loop: seed, checkpoints, logging, evaluation, partitioning."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.batch_size = 8                       # global, split over all devices and processes
  c.fsdp = False                         # True: shard params + optimizer state over `data`
  c.log_every_steps = 50
  c.sample_every_steps = 1000            # 0 = never (a grid is still written at the end)
  c.profile_steps = ""                   # 'A,B': jax.profiler trace of train steps A..B
  c.checkpoint = dict(every_steps=1000, max_to_keep=3, async_save=True)
  # source, num_examples (0 = all), repeats (examples per eval image: tasks with random problems
  # per example), mode and full_size (the geometry) are `pipeline.eval_dataset`'s arguments.
  c.eval = dict(source="", num_examples=64, repeats=1, batch_size=8, every_steps=0, step=-1,
                follow=False, poll_secs=60.0, seed=1234, mode="center", full_size=0)
  return c


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A nested dict (a config's `to_dict()`) as {'dotted.key': leaf value}."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for k, v in tree.items():
    out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
  return out


def load_sibling(config_file: str, name: str) -> types.ModuleType:
  """Loads `name.py` from the folder of `config_file` (configs build on each other)."""
  path = pathlib.Path(config_file).with_name(f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"cpjax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
