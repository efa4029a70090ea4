"""The trained systems the app runs: loaded once at start-up, kept for every request.

`load` is the one place the app turns a directory into a system, so that a change in how cpjax
restores systems touches only it. Each kind is the app's flag of the same name:

  copy_paste  a `copy_paste` run (configs/demo.py, faces.py, cityscapes.py)
  harmonize   a `harmonization` run or converted idih256 / hrnet*_idih256 / dih512 weights
  video       a `video_inpainting` run or converted cpn_video weights
  segment     an `fcn` run or converted fcn32s / fcn16s / fcn8s weights

The tools' jitted functions are cached per (task object, shapes), so keeping one task object per
kind for the server's lifetime is what keeps them compiled: the first request of a shape
compiles, later ones reuse it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from cpjax.tools import common


@dataclasses.dataclass(frozen=True)
class Kind:
  task: str      # config.task of a run of this kind
  example: str   # the command that makes one on a CPU, no dataset needed
  weights: str   # converted released weights of this kind ('' for none)


KINDS = {
    "copy_paste": Kind("copy_paste",
                       "python -m cpjax.main --config=configs/demo.py --workdir=/tmp/cpjax_demo",
                       ""),
    "harmonize": Kind("harmonization",
                      "python -m cpjax.main --config=configs/harmonization_demo.py "
                      "--workdir=/tmp/harm_demo", "idih256, hrnet18s_idih256, dih512"),
    "video": Kind("video_inpainting",
                  "python -m cpjax.main --config=configs/video_demo.py --workdir=/tmp/video_demo",
                  "cpn_video"),
    "segment": Kind("fcn",
                    "python -m cpjax.main --config=configs/fcn_demo.py --workdir=/tmp/fcn_demo",
                    "fcn8s"),
}


@dataclasses.dataclass(frozen=True)
class Model:
  """A restored system: its config, task (`cpjax.tasks`) and train state on one device."""
  kind: str
  directory: str
  config: Any
  task: Any
  state: Any
  converted: bool   # converted released weights (not a training run)


def how_to_enable(kind: str) -> str:
  """One line: the flag that enables `kind` and a way to make its directory."""
  k = KINDS[kind]
  weights = f", or converted {k.weights} weights (cpjax.tools.convert)" if k.weights else ""
  return (f"start the app with --{kind}=DIR: a {k.task} run, e.g. `{k.example}`{weights}.")


def load(kind: str, directory: str) -> Model:
  """Restores the latest checkpoint of a training run, or converted weights, for `kind`.

  Raises:
    common.ToolError: no checkpoint in `directory`, or a run of another task (one line, with
      the fix).
  """
  loaded = common.load_system(directory, None, KINDS[kind].task, f"--{kind}")
  return Model(kind, str(directory), loaded.config, loaded.task, loaded.state,
               loaded.step is None)
