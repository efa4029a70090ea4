"""What the command-line tools share: image and mask files, error reporting.

Images are float32 NHWC without the batch axis: `read_image` gives [H, W, 3] in [0, 1],
`read_mask` [H, W, 1] in {0, 1}, and `write_image` writes [H, W, 3] as an 8-bit PNG. Sizes in
messages are HEIGHTxWIDTH, as everywhere in cpjax.

Outputs, one rule for every tool: an output that exists already is refused unless the tool's
--overwrite is given (a folder output may exist if it is empty), and an input is never
overwritten, --overwrite or not. Every file a tool reads with `read_image` / `read_mask` (or names
with `note_inputs`) is remembered, and `check_output` refuses an output path that is that file:
the same path, a symlink to it or a hard link (the same inode).

A mask with a varying alpha channel (a cut-out exported by an image editor: the region opaque,
the rest transparent) is read from its alpha channel, whatever its colour channels hold
(`data_pipelines.image_ops.alpha_matte`).

A tool's `main` raises `ToolError` (or `ValueError`) with one line naming the file and the fix;
`run_tool` prints it as `cpjax.tools.<name>: message` and exits with status 1 (the traceback
only with --verbose).
"""
from __future__ import annotations

import logging as logging_lib
import os
import pathlib
import sys
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image, ImageOps

from data_pipelines.image_ops import alpha_matte

PathLike = str | os.PathLike

# Resolved path -> (height, width) of every image or mask read by this process (None: a file
# named by `note_inputs`, size unknown).
_INPUTS: dict[pathlib.Path, tuple[int, int] | None] = {}

# A mask may have anti-aliased edges, but at most this fraction of its pixels strictly between
# _GRAY_LOW and _GRAY_HIGH.
_MAX_GRAY_FRACTION = 0.05
_GRAY_LOW, _GRAY_HIGH = 0.1, 0.9


class ToolError(Exception):
  """A problem the user can fix; the message is one line naming the file and the fix."""


def _resolved(path: PathLike) -> pathlib.Path:
  return pathlib.Path(path).expanduser().resolve()


def _hw(shape: tuple[int, ...]) -> str:
  return f"{shape[0]}x{shape[1]}"


def _load(path: PathLike) -> tuple[Image.Image, np.ndarray]:
  """Decodes an image file, EXIF rotation applied.

  Returns:
    The PIL image and its pixels as float32 [H, W] or [H, W, C] scaled to [0, 1] (8- and 16-bit
    files alike).

  Raises:
    ToolError: missing, unreadable or corrupt file.
  """
  name = str(path)
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    raise ToolError(f"{name}: no such file; check the path.")
  if p.is_dir():
    raise ToolError(f"{name} is a directory; give an image file (PNG or JPEG).")
  try:
    with Image.open(p) as image:
      image.load()
      image = ImageOps.exif_transpose(image)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ToolError(f"{name} cannot be read as an image ({reason}); give a PNG or JPEG "
                    "file.") from e
  if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    pixels = np.asarray(image, np.float32) / 65535.0   # 16-bit grayscale
  elif image.mode == "F":
    pixels = np.asarray(image, np.float32)
  else:
    if image.mode not in ("L", "RGB"):
      image = image.convert("RGBA" if "A" in image.getbands() or image.mode == "P" else "RGB")
    pixels = np.asarray(image, np.float32) / 255.0
  if pixels.size == 0:
    raise ToolError(f"{name} has no pixels ({image.width}x{image.height}); give a real image.")
  _INPUTS[_resolved(path)] = pixels.shape[:2]
  return image, np.clip(pixels, 0.0, 1.0)


def read_image(path: PathLike) -> np.ndarray:
  """Reads an RGB image; grayscale is repeated over 3 channels, alpha is dropped.

  Returns:
    [H, W, 3] float32 in [0, 1].

  Raises:
    ToolError: missing, unreadable or corrupt file (the message names it).
  """
  _, pixels = _load(path)
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.shape[-1] in (2, 4):    # LA, RGBA: drop alpha
    pixels = pixels[..., :-1]
  if pixels.shape[-1] == 1:
    pixels = np.repeat(pixels, 3, axis=-1)
  return np.ascontiguousarray(pixels[..., :3], np.float32)


def _size_of(path: PathLike) -> tuple[int, int]:
  size = _INPUTS.get(_resolved(path))
  return size if size is not None else read_image(path).shape[:2]


def read_mask(path: PathLike, like: PathLike | None = None) -> np.ndarray:
  """Reads a black/white mask: white (>= 0.5 on the first channel, or the luminance) is 1; of
  an image with a varying alpha channel, the alpha channel (opaque is 1).

  Args:
    path: the mask file; anti-aliased edges are fine, but at most 5% of the pixels may lie
      strictly between 10% and 90% gray.
    like: the image the mask belongs to; the mask must have its height and width.

  Returns:
    [H, W, 1] float32 in {0, 1}, with at least one 1.

  Raises:
    ToolError: unreadable file, a size other than `like`'s, a gray (non-binary) or empty mask.
  """
  name = str(path)
  image, pixels = _load(path)
  matte = alpha_matte(image)
  if matte is not None:
    pixels = np.asarray(matte, np.float32) / 255.0
  if pixels.ndim == 3:
    if image.mode in ("RGB", "RGBA"):
      rgb = pixels[..., :3]
      pixels = rgb @ np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luminance
    else:
      pixels = pixels[..., 0]
  if like is not None:
    size = _size_of(like)
    if pixels.shape[:2] != tuple(size):
      raise ToolError(f"{name} is {_hw(pixels.shape)} but {like} is {_hw(size)}; give a mask "
                      f"the size of {pathlib.Path(like).name}.")
  gray = float(np.mean((pixels > _GRAY_LOW) & (pixels < _GRAY_HIGH)))
  if gray > _MAX_GRAY_FRACTION:
    raise ToolError(f"{name} is not a binary mask ({100 * gray:.1f}% of pixels are gray); "
                    "save it as black/white.")
  mask = (pixels >= 0.5).astype(np.float32)[..., None]
  if not mask.any():
    raise ToolError(f"{name} is empty (no white pixels); paint the region to use white on "
                    "black.")
  return mask


def note_inputs(paths: Iterable[PathLike]) -> None:
  """Remembers files a tool reads by other means than `read_image` / `read_mask` (video frames),
  so that `check_output` refuses to overwrite them too."""
  for path in paths:
    _INPUTS.setdefault(_resolved(path), None)


def same_path(a: PathLike, b: PathLike) -> bool:
  """Whether two paths name one file: alike once resolved (symlinks followed), or hard links
  to one file (the same inode)."""
  if _resolved(a) == _resolved(b):
    return True
  try:
    return os.path.samefile(_resolved(a), _resolved(b))
  except OSError:   # either does not exist
    return False


def _input_at(path: PathLike) -> pathlib.Path | None:
  """The remembered input that `path` is (`same_path`), or None."""
  return next((p for p in _INPUTS if same_path(p, path)), None)


def check_output(path: PathLike, overwrite: bool = False, png: bool = True) -> None:
  """Checks that the tool may write the file `path` (module docstring: the outputs rule).

  Args:
    path: the output file.
    overwrite: whether an existing file may be replaced (the tool's --overwrite).
    png: whether the path must end in .png (an image tool's result).

  Raises:
    ToolError: `path` is an input, a folder, exists already without `overwrite`, or (with
      `png`) does not end in .png.
  """
  name = str(path)
  p = pathlib.Path(path).expanduser()
  if png and p.suffix.lower() != ".png":
    raise ToolError(f"{name}: results are written as PNG; give an output path ending in .png.")
  same = _input_at(path)
  if same is not None:
    link = "" if same == p.absolute() else f" (the same file as {same})"
    raise ToolError(f"{name} is one of the input files{link} and would be overwritten; give "
                    "another output path.")
  if p.is_dir():
    raise ToolError(f"{name} is a directory; give an output file path"
                    f"{' ending in .png' if png else ''}.")
  if p.exists() and not overwrite:
    raise ToolError(f"{name} exists already; give a new output path, or --overwrite to replace "
                    "it.")


def check_output_dir(path: PathLike, overwrite: bool = False,
                     with_overwrite: str = "to write into it") -> pathlib.Path:
  """Checks that the tool may write into the folder `path`: new, empty, or with `overwrite`.

  Args:
    path: the --out folder.
    overwrite: the tool's --overwrite.
    with_overwrite: what --overwrite does to a used folder, for the message.

  Returns:
    The folder's path (user home expanded); it is not created.

  Raises:
    ToolError: `path` is a file, or a folder that is not empty (without `overwrite`).
  """
  p = pathlib.Path(path).expanduser()
  if p.exists() and not p.is_dir():
    raise ToolError(f"--out={path} exists already and is not a folder; give a new output "
                    "folder.")
  if p.is_dir() and any(p.iterdir()) and not overwrite:
    raise ToolError(f"--out={path} exists already and is not an empty folder; give a new "
                    f"output folder, or --overwrite {with_overwrite}.")
  return p


def define_overwrite_flag() -> None:
  """Defines --overwrite (once per process)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if "overwrite" not in flags.FLAGS:
    flags.DEFINE_bool("overwrite", False,
                      "Replace an existing output (an input is never overwritten).")


def write_image(path: PathLike, image: Any, overwrite: bool = False) -> None:
  """Writes [H, W, 3] (or [H, W, 1]) values in [0, 1] as an 8-bit PNG (clipped, rounded).

  Creates the parent directories; refuses to overwrite any file read by `read_image` or
  `read_mask` in this process, and an existing file unless `overwrite`.

  Raises:
    ToolError: `check_output` refuses `path`, or it cannot be written.
  """
  check_output(path, overwrite)
  pixels = np.asarray(image, np.float32)
  if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
    raise ValueError(f"write_image: image has shape {pixels.shape}; give [H, W, 3] or "
                     "[H, W, 1].")
  pixels = np.round(np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0).astype(np.uint8)
  pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
  p = pathlib.Path(path).expanduser()
  try:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(p, format="PNG")
  except OSError as e:
    raise ToolError(f"{path} cannot be written ({e.strerror or e}); give a writable output "
                    "path.") from e


def load_system(workdir: PathLike, step: int | None, task: str, flag: str = "--workdir",
                step_flag: str | None = "--step") -> Any:
  """`cpjax.system.load` for a tool: a missing or damaged checkpoint or a run of another task
  is a ToolError that names the flag (and, for a damaged one, the intact checkpoints and
  `step_flag`, the tool's flag that picks one, None if it has none).

  Returns:
    The `cpjax.system.Loaded` system (.config, .task, .state, .step).
  """
  from cpjax import system  # pylint: disable=g-import-not-at-top  (imports JAX)
  from cpjax.train import checkpointing  # pylint: disable=g-import-not-at-top
  try:
    return system.load(workdir, step, task=task)
  except checkpointing.DamagedCheckpointError as e:
    raise ToolError(f"{flag}: {e.advice(step_flag)}") from e
  except (ValueError, FileNotFoundError) as e:
    raise ToolError(f"{flag}: {e}") from None


class _LibraryErrorsOnly(logging_lib.Filter):
  """Keeps cpjax's own lines and libraries' errors: orbax alone warns three times per read-only
  restore, which would bury the one line a tool prints. --verbose shows everything."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return record.levelno >= logging_lib.ERROR or "/cpjax/" in record.pathname


def _tool_name(main_fn: Callable[..., Any]) -> str:
  module = main_fn.__module__
  if module == "__main__":
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec is not None else pathlib.Path(sys.argv[0]).stem
  return module


def run_tool(main_fn: Callable[[list[str]], int | None], name: str | None = None) -> None:
  """Runs `main_fn(argv)` under `absl.app`, reporting ToolError / ValueError / OSError as one
  line `cpjax.tools.<name>: message` on stderr and exit status 1 (the traceback with --verbose).

  Defines the --verbose flag if no other module has.
  """
  from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

  from cpjax import compilation  # pylint: disable=g-import-not-at-top

  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Show the full traceback and library logs on errors.")
  compilation.define_flag()
  name = name or _tool_name(main_fn)

  def wrapped(argv: list[str]) -> int | None:
    verbose = flags.FLAGS.verbose
    if not verbose:
      logging.set_verbosity(logging.WARNING)
      logging.get_absl_handler().addFilter(_LibraryErrorsOnly())
    compilation.setup()
    try:
      return main_fn(argv)
    except (ToolError, ValueError, OSError) as e:
      if verbose:
        raise
      message = " ".join(str(e).split()) or type(e).__name__
      print(f"{name}: {message}", file=sys.stderr)
      return 1

  app.run(wrapped)
