"""Converted-weights directories: what `cpjax.tools.convert` writes and `init_from` reads.

Layout of DIR:
  converted.json   {"model", "module_config", "dropped", "source": {"path", "sha256"}}
  variables/       an orbax (StandardCheckpointer) checkpoint of the flax variables
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import orbax.checkpoint as ocp

from cpjax.convert import Converted

METADATA = "converted.json"
VARIABLES = "variables"


def save(converted: Converted, out_dir: str | pathlib.Path, source: dict[str, str]) -> pathlib.Path:
  """Writes `converted` to a new directory `out_dir` (refuses to touch an existing one)."""
  out = pathlib.Path(out_dir).expanduser().absolute()
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f"{out} exists and is not empty; choose a new --out directory")
  out.mkdir(parents=True, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(out / VARIABLES, converted.variables)
  (out / METADATA).write_text(json.dumps(
      {"model": converted.model, "module_config": converted.module_config,
       "dropped": converted.dropped, "source": source}, indent=2))
  return out


def is_converted(directory: str | pathlib.Path) -> bool:
  return (pathlib.Path(directory).expanduser() / METADATA).is_file()


def load(directory: str | pathlib.Path) -> Converted:
  """Reads a directory written by `save` (variables as NumPy float32)."""
  d = pathlib.Path(directory).expanduser().absolute()
  if not is_converted(d):
    raise FileNotFoundError(f"{d} holds no converted weights ({METADATA} is missing); create it "
                            "with python -m cpjax.tools.convert --from=FILE.pth --model=NAME "
                            f"--out={d}")
  meta = json.loads((d / METADATA).read_text())
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(d / VARIABLES)
  variables = _to_numpy(variables)
  return Converted(model=meta["model"], variables=variables,
                   module_config=meta["module_config"], dropped=meta.get("dropped", []))


def _to_numpy(tree):
  if isinstance(tree, dict):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)
