"""Registry of systems ("tasks"): config.task names one of these."""
from __future__ import annotations

import importlib

import ml_collections

from cpjax.tasks.base import Task

_TASKS = {
    "copy_paste": "cpjax.tasks.copy_paste:CopyPasteTask",
    "video_inpainting": "cpjax.tasks.video_inpainting:VideoInpaintingTask",
    "harmonization": "cpjax.tasks.harmonization:HarmonizationTask",
    "fcn": "cpjax.tasks.fcn:FCNTask",
}
# The config that trains each task on the bundled photos in CPU minutes (named in messages).
DEMO_CONFIGS = {
    "copy_paste": "configs/demo.py",
    "video_inpainting": "configs/video_demo.py",
    "harmonization": "configs/harmonization_demo.py",
    "fcn": "configs/fcn_demo.py",
}


def build(config: ml_collections.ConfigDict) -> Task:
  """Instantiates the task named by `config.task`."""
  if config.task not in _TASKS:
    raise ValueError(f"unknown task {config.task!r}; known tasks: {', '.join(sorted(_TASKS))}.")
  module_name, class_name = _TASKS[config.task].split(":")
  return getattr(importlib.import_module(module_name), class_name)(config)
