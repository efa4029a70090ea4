"""Converted-weights directories: what `cpjax.tools.convert` writes and the tasks read.

Layout of DIR:
  converted.json   {"model", "module_config", "dropped", "source": {"path", "sha256"}}
  variables/       an orbax (StandardCheckpointer) checkpoint of the flax variables

A converted directory is the one format pretrained parts are read from (`init_from`,
`model.vgg_init`, `model.backbone_init`, `loss.vgg_weights`): `require_converted` refuses any
other path (an .npz, a .pth, a missing directory) with the convert command, and `put` is the one
way the tasks merge loaded subtrees into fresh variables, scope by scope.
"""
from __future__ import annotations

import json
import pathlib
from typing import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from cpjax.convert import Converted
from cpjax.convert.state_dict import Tree, flatten

Scope = tuple[str, ...]

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


def convert_advice(field: str, model: str, file: str) -> str:
  """'convert FILE with python -m cpjax.tools.convert ... and pass --config.FIELD=...': how to
  make what the config `field` takes from the released `file` (`--model=model`)."""
  return (f"convert {file} with python -m cpjax.tools.convert --from={file} --model={model} "
          f"--out=weights/{model} and pass --config.{field}=weights/{model}")


def require_converted(directory: str, field: str, model: str, file: str) -> None:
  """Refuses a `field` value that is no converted directory, saying how to make one.

  Args:
    directory: the config value.
    field: the config field, e.g. 'model.vgg_init'.
    model, file: the `--model` of `cpjax.tools.convert` that makes what `field` takes, and the
      released file it reads.

  Raises:
    FileNotFoundError: one line with the convert command and the flag to pass.
  """
  if not is_converted(directory):
    raise FileNotFoundError(
        f"{field}={directory} holds no converted weights ({METADATA} is missing; pretrained "
        f"weights are read only from converted directories): "
        + convert_advice(field, model, file))


def _shape(leaf) -> str:
  return "absent" if leaf is None else str(tuple(leaf.shape))


def _fitted(fresh: Tree, loaded: Tree, scope: Scope, field: str, source: str, fix: str) -> Tree:
  """`loaded` in the dtypes of `fresh` (NumPy), after checking they have the same leaves."""
  want, got = flatten(fresh), flatten(loaded)
  for path in sorted(set(want) | set(got)):
    a, b = got.get(path), want.get(path)
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
      raise ValueError(f"{field}={source}: {'/'.join((*scope, path))} is {_shape(a)} there but "
                       f"{_shape(b)} in the network the config builds; {fix}")
  return jax.tree.map(lambda x, f: np.asarray(x, f.dtype), loaded, fresh)


def put(fresh: Tree, parts: Mapping[Scope, Tree], field: str, source: str,
        fix: str = "the config's model must be the converted network") -> Tree:
  """`fresh` with the subtree at each scope replaced by the loaded one `parts[scope]`.

  Args:
    fresh: freshly initialised variables (arrays or ShapeDtypeStructs), nested dicts.
    parts: scope (the keys from the root, e.g. ('params', 'backbone', 'hrnet')) -> loaded
      subtree for it; every scope must exist in `fresh`.
    field, source: the config field and its value, for messages.
    fix: what to change when the leaves differ (the end of the message).

  Returns:
    A new tree: the loaded subtrees as NumPy arrays in fresh's dtypes; everything outside the
    scopes is `fresh`'s own (not copied).

  Raises:
    ValueError: a leaf of a scope absent on one side or of another shape: one line naming the
      flag, the leaf ('scope/.../name') and the two shapes.
  """
  out = dict(fresh)
  for scope, loaded in parts.items():
    node = out
    for key in scope[:-1]:
      node[key] = dict(node[key])
      node = node[key]
    node[scope[-1]] = _fitted(node[scope[-1]], loaded, scope, field, source, fix)
  return out


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
