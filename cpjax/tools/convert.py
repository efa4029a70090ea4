"""Convert a released PyTorch checkpoint (or Caffe model) into a cpjax converted-weights directory.

  python -m cpjax.tools.convert --from=FILE.pth --model=NAME --out=DIR
  python -m cpjax.tools.convert --from=harmonize_iter_200000.caffemodel --model=dih512 --out=DIR

NAME is one of `cpjax.convert.CONVERTERS` (the README lists where each file is published). DIR
(new) receives the flax variables and a `converted.json`; training starts from it with
`--config.init_from=DIR`. Reading .pth files needs PyTorch (`pip install -e ".[torch]"`); only
this step does. The models of `cpjax.convert.CAFFE_MODELS` are .caffemodel files, read with the
protobuf package (`cpjax.convert.caffe`; no Caffe install).
"""
from __future__ import annotations

import hashlib
import pathlib
from typing import Any, Mapping

import numpy as np
from absl import flags

from cpjax import convert
from cpjax.convert import caffe, checkpoint
from cpjax.convert.state_dict import strip_prefix
from cpjax.tools import common
from cpjax.tools.common import ToolError

# Keys under which training scripts commonly nest the weights in a checkpoint dict.
_NESTED = ("state_dict", "model_state_dict", "model", "net", "generator")


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with path.open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def tensors_to_numpy(obj: Mapping[str, Any], path: str) -> dict[str, np.ndarray]:
  """A loaded checkpoint object -> {name: float32/int NumPy array}, unwrapping nesting and
  DataParallel's 'module.' prefix."""
  import torch  # pylint: disable=g-import-not-at-top
  if not isinstance(obj, Mapping):
    raise ToolError(f"{path} holds a {type(obj).__name__}, not a state dict; save the model's "
                    "state_dict() (not the whole model) and convert that.")
  for key in _NESTED:
    if key in obj and isinstance(obj[key], Mapping) and any(
        isinstance(v, torch.Tensor) for v in obj[key].values()):
      obj = obj[key]
      break
  arrays = {k: v.detach().cpu().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
  if not arrays:
    raise ToolError(f"{path} holds no tensors (keys: {', '.join(list(obj)[:8])}); is it a "
                    "PyTorch state dict?")
  return strip_prefix(arrays, "module.")


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Reads a .pth/.pt file on the CPU (weights only: no code from the file runs)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ToolError('reading PyTorch checkpoints needs torch: pip install -e ".[torch]" (or '
                    "pip install torch)") from e
  p = pathlib.Path(path).expanduser()
  if not p.is_file():
    raise ToolError(f"--from={path}: no such file")
  try:
    obj = torch.load(p, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or foreign files
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ToolError(f"{p} is not a readable PyTorch checkpoint ({reason}); download it again") from e
  return tensors_to_numpy(obj, str(p))


def read_caffemodel(path: str | pathlib.Path) -> caffe.Net:
  """Reads a .caffemodel file (`cpjax.convert.caffe`)."""
  p = pathlib.Path(path).expanduser()
  if not p.is_file():
    raise ToolError(f"--from={path}: no such file")
  return caffe.read_caffemodel(p)


def run(from_path: str, model: str, out: str) -> convert.Converted:
  """Reads, converts and writes; returns what was written."""
  if model not in convert.CONVERTERS:
    raise ToolError(f"--model={model} is unknown; use one of {', '.join(sorted(convert.CONVERTERS))}")
  out_dir = pathlib.Path(out).expanduser()
  if out_dir.exists() and any(out_dir.iterdir()):
    raise ToolError(f"--out={out} exists and is not empty; choose a new directory (nothing was "
                    "overwritten)")
  source = (read_caffemodel(from_path) if model in convert.CAFFE_MODELS
            else read_state_dict(from_path))
  converted = convert.convert(model, source)
  source = {"path": str(pathlib.Path(from_path).expanduser().absolute()),
            "sha256": _sha256(pathlib.Path(from_path).expanduser())}
  checkpoint.save(converted, out_dir, source)
  return converted


def define_flags() -> None:
  flags.DEFINE_string("from", None, "The PyTorch checkpoint (.pth) or Caffe model (.caffemodel) "
                      "to convert.")
  flags.DEFINE_string("model", None, "What it holds: " + ", ".join(sorted(convert.CONVERTERS)))
  flags.DEFINE_string("out", None, "New directory for the converted weights.")
  flags.mark_flags_as_required(["from", "model", "out"])


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  converted = run(f["from"].value, f.model, f.out)
  count = sum(int(np.prod(np.shape(v))) for v in _leaves(converted.variables))
  print(f"wrote {f.out}: {converted.model}, {count:,} values"
        + (f"; dropped unused reference keys: {summarize_keys(converted.dropped)}"
           if converted.dropped else ""))
  return 0


def summarize_keys(keys: list[str], limit: int = 4) -> str:
  """Key names grouped by their module, e.g. 'classifier.* (2 keys), incre_modules.* (60 keys)';
  a module with at most `limit` keys is listed key by key."""
  groups: dict[str, list[str]] = {}
  for key in keys:
    groups.setdefault(key.split(".")[0], []).append(key)
  parts = []
  for prefix, members in sorted(groups.items()):
    parts.extend(members if len(members) <= limit else [f"{prefix}.* ({len(members)} keys)"])
  return ", ".join(parts)


def _leaves(tree):
  if isinstance(tree, Mapping):
    for value in tree.values():
      yield from _leaves(value)
  else:
    yield tree


if __name__ == "__main__":
  define_flags()
  common.run_tool(main, "cpjax.tools.convert")
