"""Convert a released PyTorch checkpoint (or Caffe model) into a cpjax converted-weights directory.

  python -m cpjax.tools.convert --from=FILE.pth --model=NAME --out=DIR [--overwrite]
  python -m cpjax.tools.convert --from=harmonize_iter_200000.caffemodel --model=dih512 --out=DIR

NAME is one of `cpjax.convert.CONVERTERS` (the README lists where each file is published). DIR
(new or empty) receives the flax variables and a `converted.json`; --overwrite replaces the
converted weights of a DIR this tool wrote before (a folder that holds anything else is refused,
and so is a --from inside DIR: `cpjax.tools.common`, the outputs rule). Training starts from it with
`--config.init_from=DIR`. Reading .pth files needs PyTorch (`pip install -e ".[torch]"`); only
this step does. The models of `cpjax.convert.CAFFE_MODELS` are .caffemodel files, read with the
protobuf package (`cpjax.convert.caffe`; no Caffe install).
"""
from __future__ import annotations

import codecs
import hashlib
import pathlib
import re
import shutil
from typing import Any, Mapping

import numpy as np
from absl import flags
from PIL import Image

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


def _not_a_checkpoint(path: pathlib.Path) -> str | None:
  """What the file is when it cannot be a PyTorch checkpoint (torch.save writes a zip archive,
  or before PyTorch 1.6 a pickle), e.g. 'it is a PNG image'; None when it can be one."""
  with path.open("rb") as f:
    head = f.read(512)
  if head.startswith(b"PK") or head.startswith(b"\x80"):   # a zip archive; a pickle (protocol 2+)
    return None
  if not head:
    return "it is empty"
  try:
    with Image.open(path) as image:
      return f"it is a {image.format} image"
  except (OSError, ValueError, SyntaxError):
    pass
  try:
    codecs.getincrementaldecoder("utf-8")().decode(head)
    return "it starts with text"
  except UnicodeDecodeError:
    return f"it starts with the bytes {head[:4].hex(' ')}"


def _objects_refused(error: Exception) -> str | None:
  """The object torch's weights-only reading refused ('Unsupported global: ...'), or None if
  `error` is not such a refusal."""
  text = " ".join(str(error).split())
  if "Weights only load failed" not in text:
    return None
  match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
  return f"such as {match.group(1)}" if match else "other than tensors and containers"


def read_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Reads a .pth/.pt file on the CPU (weights only: no code from the file runs).

  Raises:
    ToolError: no such file, a file of another kind (an image, text), a damaged checkpoint, or
      one that holds pickled objects besides tensors (which are never loaded).
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ToolError('reading PyTorch checkpoints needs torch: pip install -e ".[torch]" (or '
                    "pip install torch)") from e
  p = pathlib.Path(path).expanduser()
  if not p.is_file():
    raise ToolError(f"--from={path}: no such file")
  kind = _not_a_checkpoint(p)
  if kind is not None:
    raise ToolError(f"{p} is not a PyTorch checkpoint ({kind}); --from takes a .pth or .pt file "
                    "written by torch.save (a model's state_dict), the file the README lists for "
                    "the --model.")
  try:
    obj = torch.load(p, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for corrupt or foreign files
    objects = _objects_refused(e)
    if objects is not None:
      raise ToolError(f"{p} holds Python objects {objects}, which are not loaded (that would run "
                      "code from the file); save the model's state_dict() (tensors only) and "
                      "convert that.") from e
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ToolError(f"{p} is not a readable PyTorch checkpoint ({reason}); download it "
                    "again") from e
  return tensors_to_numpy(obj, str(p))


def read_caffemodel(path: str | pathlib.Path) -> caffe.Net:
  """Reads a .caffemodel file (`cpjax.convert.caffe`)."""
  p = pathlib.Path(path).expanduser()
  if not p.is_file():
    raise ToolError(f"--from={path}: no such file")
  return caffe.read_caffemodel(p)


def _check_replaceable(out_dir: pathlib.Path, from_path: str, out: str) -> None:
  """With --overwrite, a used --out folder must hold converted weights only, and not --from.

  Raises:
    ToolError: naming the folder.
  """
  source = pathlib.Path(from_path).expanduser().resolve()
  if out_dir.resolve() in source.parents:
    raise ToolError(f"--from={from_path} lies inside --out={out}, which --overwrite would "
                    "replace; give another --out folder.")
  if not checkpoint.is_converted(out_dir) or {p.name for p in out_dir.iterdir()} - {
      checkpoint.METADATA, checkpoint.VARIABLES}:
    raise ToolError(f"--out={out} holds files other than converted weights; --overwrite replaces "
                    "only a folder this tool wrote: give a new folder.")


def run(from_path: str, model: str, out: str, overwrite: bool = False) -> convert.Converted:
  """Reads, converts and writes; returns what was written.

  overwrite: replace the converted weights in a used --out folder (module docstring).
  """
  if model not in convert.CONVERTERS:
    raise ToolError(f"--model={model} is unknown; use one of "
                    f"{', '.join(sorted(convert.CONVERTERS))}")
  out_dir = common.check_output_dir(out, overwrite, "to replace the converted weights in it")
  used = out_dir.is_dir() and any(out_dir.iterdir())
  if used:
    _check_replaceable(out_dir, from_path, out)
  source = (read_caffemodel(from_path) if model in convert.CAFFE_MODELS
            else read_state_dict(from_path))
  converted = convert.convert(model, source)
  source = {"path": str(pathlib.Path(from_path).expanduser().absolute()),
            "sha256": _sha256(pathlib.Path(from_path).expanduser())}
  if used:   # removed, not rewritten in place: a hard link elsewhere keeps its contents
    if (out_dir / checkpoint.VARIABLES).exists():
      shutil.rmtree(out_dir / checkpoint.VARIABLES)
    (out_dir / checkpoint.METADATA).unlink()
  checkpoint.save(converted, out_dir, source)
  return converted


def define_flags() -> None:
  flags.DEFINE_string("from", None, "The PyTorch checkpoint (.pth) or Caffe model (.caffemodel) "
                      "to convert.")
  flags.DEFINE_string("model", None, "What it holds: " + ", ".join(sorted(convert.CONVERTERS)))
  flags.DEFINE_string("out", None, "New (or empty) directory for the converted weights.")
  common.define_overwrite_flag()
  flags.mark_flags_as_required(["from", "model", "out"])


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  converted = run(f["from"].value, f.model, f.out, f.overwrite)
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
