r"""Seamless cloning: cut an object from one photo and blend it into another (the report's system).

  python -m cpjax.tools.clone --source=S.png --target=T.png \
      (--mask=M.png | --segment=WORKDIR --class=NAME [--dilation=3] [--save_mask=M.png]) \
      [--offset=DX,DY] [--mode=normal|mixed|monochrome] [--domain=box|mask|opencv] \
      [--harmonize=WORKDIR] --out=OUT.png [--overwrite] [--verbose]

1. The region: the white pixels of --mask (the size of the source), or, with --segment, the
   pixels the FCN of WORKDIR's latest checkpoint (a `configs/fcn_*.py` run) labels --class,
   cleaned up: only the largest connected component (8-neighbourhood) is kept, then dilated by
   a disk of radius --dilation pixels (default 3), so that the Poisson boundary lies just
   outside the object, on background, rather than on its outline. --save_mask writes it.
2. Poisson image editing (`cpjax.ops.poisson.seamless_clone`): the region moves DX pixels
   right and DY down (--offset) into the target; inside it the result keeps the source's
   gradients (--mode=normal), the larger of source and target gradients (mixed) or the source's
   luminance gradients (monochrome), and meets the target at the region's border. --domain
   picks the problem: 'mask' is Perez et al.'s (the region's pixels unknown, all others the
   target's); 'opencv' is cv2.seamlessClone's, reproduced within 1/255 (the region eroded by
   3 px, its bounding box solved, OpenCV's own mixed-gradient test); 'box' (default) is Perez's
   guidance with the whole bounding box unknown, the fastest, neither reference exactly.
3. --harmonize=WORKDIR (optional): a trained harmonisation model (`configs/harmonization_*.py`,
   `cpjax.tools.harmonize`) then adjusts the cloned region's colours to the target.

The result is written as an 8-bit PNG. Bad input gets one line naming the file and the fix:
sizes that do not match, a region that falls outside the target (or onto its 1-px border, which
the Poisson problem needs as boundary), an empty mask or an FCN that finds no such object, a
region under 3x3 px with --domain=opencv, an unknown class (the valid ones are listed), an output
(--out, --save_mask) that is an input, or that exists already without --overwrite.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from absl import flags
from scipy import ndimage

from cpjax.ops import poisson
from cpjax.tools import common
from cpjax.tools.common import ToolError
from cpjax.tools.paste import check_placement, parse_offset, place

_NAMES = ("source", "target", "mask")


def clean_mask(mask: np.ndarray, dilation: int) -> np.ndarray:
  """Largest 8-connected component of a binary mask, dilated by a disk of `dilation` px.

  Args:
    mask: [H, W] or [H, W, 1], nonzero = region (must not be empty).
    dilation: disk radius in pixels (0: no dilation).

  Returns:
    float32 [H, W, 1] in {0, 1}.
  """
  region = np.asarray(mask).reshape(mask.shape[:2]) > 0
  components, count = ndimage.label(region, structure=np.ones((3, 3)))
  if count > 1:
    sizes = np.bincount(components.ravel())[1:]
    region = components == 1 + int(np.argmax(sizes))
  if dilation > 0:
    y, x = np.mgrid[-dilation:dilation + 1, -dilation:dilation + 1]
    region = ndimage.binary_dilation(region, structure=x**2 + y**2 <= dilation**2)
  return region[..., None].astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _predict(task: Any, params: Any, image: jax.Array) -> jax.Array:
  return task.predict(params, image[None])[0]


def segment(task: Any, state: Any, source: np.ndarray, class_name: str, dilation: int = 3, *,
            workdir: str = "the checkpoint", source_name: str = "the source") -> np.ndarray:
  """The cleaned mask of `class_name` predicted by an FCN task on `source`.

  Args:
    task: an `FCNTask` (`common.load_system(...).task`), state its train state.
    source: [H, W, 3] in [0, 1].
    class_name: one of `task.classes`.
    dilation: see `clean_mask`.

  Returns:
    float32 [H, W, 1] in {0, 1}.

  Raises:
    ToolError: an unknown class (lists the valid ones), or no pixel of that class.
  """
  if class_name not in task.classes:
    raise ToolError(f"--class={class_name!r} is not a class of the FCN in {workdir}; use one of: "
                    f"{', '.join(task.classes)}.")
  labels = np.asarray(jax.device_get(_predict(task, state.params, np.asarray(source, np.float32))))
  found = labels == task.classes.index(class_name)
  if not found.any():
    raise ToolError(f"the FCN in {workdir} finds no {class_name} in {source_name}; give the "
                    "region with --mask=M.png or choose another --class.")
  return clean_mask(found, dilation)


def check_interior(mask: np.ndarray, target_shape: tuple[int, ...], offset: tuple[int, int],
                   names: tuple[str, str, str] = _NAMES) -> None:
  """The moved region must leave the target's 1-px border free (the Poisson boundary).

  Raises:
    ToolError: naming the offsets that work.
  """
  rows = np.flatnonzero(mask[..., 0].any(1))
  cols = np.flatnonzero(mask[..., 0].any(0))
  (y0, y1), (x0, x1) = (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))
  ht, wt = target_shape[:2]
  dx, dy = offset
  if not (1 <= x0 + dx and x1 + dx <= wt - 2 and 1 <= y0 + dy and y1 + dy <= ht - 2):
    raise ToolError(
        f"with --offset={dx},{dy} the region of {names[2]} (rows {y0}-{y1}, columns {x0}-{x1}) "
        f"touches the border of {names[1]} ({ht}x{wt}), which Poisson cloning keeps as its "
        f"boundary; use DX in [{1 - x0}, {wt - 2 - x1}] and DY in [{1 - y0}, {ht - 2 - y1}], "
        "or a smaller region.")


def _check_mode(mode: str, domain: str) -> None:
  if mode not in poisson.MODES:
    raise ToolError(f"--mode={mode!r}; use one of {', '.join(poisson.MODES)}.")
  if domain not in poisson.DOMAINS:
    raise ToolError(f"--domain={domain!r}; use one of {', '.join(poisson.DOMAINS)}.")


def clone(source: np.ndarray, target: np.ndarray, mask: np.ndarray,
          offset: tuple[int, int] = (0, 0), mode: str = "normal", domain: str = "box", *,
          names: tuple[str, str, str] = _NAMES) -> np.ndarray:
  """Poisson-blends the masked region of `source` into `target` at `offset`.

  Args:
    source: [Hs, Ws, 3] in [0, 1].
    target: [Ht, Wt, 3] in [0, 1].
    mask: [Hs, Ws, 1] in {0, 1}, in source coordinates.
    offset: (DX, DY): source pixel (y, x) lands on target pixel (y + DY, x + DX).
    mode: 'normal', 'mixed' or 'monochrome' (`cpjax.ops.poisson`).
    domain: 'box', 'mask' (Perez et al.'s) or 'opencv' (cv2.seamlessClone's); see
      `cpjax.ops.poisson`.
    names: what messages call source, target and mask.

  Returns:
    [Ht, Wt, 3] float32 in [0, 1] (clipped).

  Raises:
    ToolError: bad mode/domain, size mismatch, empty mask, region outside the target or on its
      border, a region under 3x3 px with --domain=opencv.
  """
  _check_mode(mode, domain)
  mask = (np.asarray(mask, np.float32).reshape(*np.shape(mask)[:2], 1) >= 0.5).astype(np.float32)
  check_placement(source.shape, target.shape, mask, offset, names)
  check_interior(mask, target.shape, offset, names)
  try:
    out = poisson.seamless_clone(np.asarray(source, np.float32),
                                 np.asarray(target, np.float32), mask, offset=offset, mode=mode,
                                 domain=domain)
  except ValueError as e:  # e.g. --domain=opencv with a region under 3x3 px
    raise ToolError(str(e)) from None
  return np.clip(np.asarray(jax.device_get(out), np.float32), 0.0, 1.0)


def run(source: str, target: str, out: str, mask: str | None = None,
        segment_workdir: str | None = None, class_name: str | None = None,
        offset: str = "0,0", mode: str = "normal", domain: str = "box", dilation: int = 3,
        save_mask: str | None = None, harmonize_workdir: str | None = None,
        overwrite: bool = False) -> np.ndarray:
  """The command line without the flags: checks every input first, then segments (optional),
  clones, harmonises (optional) and writes `out`.

  Returns:
    [Ht, Wt, 3] float32 in [0, 1], the image written to `out`.

  Raises:
    ToolError: one line naming the file and the fix.
  """
  if (mask is None) == (segment_workdir is None):
    raise ToolError("give the region either as --mask=M.png or as --segment=WORKDIR "
                    "--class=NAME (an FCN run), not both or neither.")
  if segment_workdir is not None and not class_name:
    raise ToolError(f"--segment={segment_workdir} needs --class=NAME, the object to cut out.")
  if class_name and segment_workdir is None:
    raise ToolError("--class is used with --segment=WORKDIR; with --mask it has no effect.")
  _check_mode(mode, domain)
  if dilation < 0:
    raise ToolError(f"--dilation={dilation}; give a radius in pixels >= 0.")
  dx_dy = parse_offset(offset)
  source_image = common.read_image(source)
  target_image = common.read_image(target)
  names = (source, target, mask or f"the {class_name} mask")
  for path in (out, save_mask):
    if path is not None:
      common.check_output(path, overwrite)
  if save_mask is not None and common.same_path(save_mask, out):
    raise ToolError(f"--save_mask and --out name the same file ({out}); give two paths.")
  if mask is not None:
    region = common.read_mask(mask, like=source)
  else:
    segmenter = common.load_system(segment_workdir, None, "fcn", "--segment", step_flag=None)
    task, state = segmenter.task, segmenter.state
    region = segment(task, state, source_image, class_name, dilation, workdir=segment_workdir,
                     source_name=source)
  result = clone(source_image, target_image, region, dx_dy, mode, domain, names=names)
  if harmonize_workdir is not None:
    from cpjax.tools import harmonize  # pylint: disable=import-outside-toplevel

    harmonizer = common.load_system(harmonize_workdir, None, "harmonization", "--harmonize",
                                    step_flag=None)
    task, state = harmonizer.task, harmonizer.state
    placed = place(region, target_image.shape[:2], dx_dy)
    result = harmonize.harmonize(task, state, result, placed)
  if save_mask is not None:
    common.write_image(save_mask, region, overwrite)
  common.write_image(out, result, overwrite)
  return result


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so importing is free)."""
  flags.DEFINE_string("source", None, "Image to cut the object from.")
  flags.DEFINE_string("target", None, "Image to blend it into.")
  flags.DEFINE_string("out", None, "Output PNG.")
  flags.DEFINE_string("mask", None, "Black/white mask the size of --source; white = the object.")
  flags.DEFINE_string("segment", None, "FCN training run (workdir) that finds the object.")
  flags.DEFINE_string("class", None, "With --segment: the class name of the object.")
  flags.DEFINE_integer("dilation", 3, "With --segment: dilate the mask by this radius (px).")
  flags.DEFINE_string("save_mask", None, "Also write the mask used (PNG).")
  flags.DEFINE_string("offset", "0,0",
                      "DX,DY: move the region DX px right and DY px down in the target.")
  flags.DEFINE_enum("mode", "normal", list(poisson.MODES),
                    "Gradients kept inside the region: the source's (normal), the larger of "
                    "source's and target's (mixed), the source's luminance (monochrome); the "
                    "names of cv2's NORMAL_CLONE, MIXED_CLONE, MONOCHROME_TRANSFER.")
  flags.DEFINE_enum("domain", "box", list(poisson.DOMAINS),
                    "mask: Perez et al.'s problem on the region itself; opencv: "
                    "cv2.seamlessClone's (within 1/255); box: Perez's guidance with the region's "
                    "bounding box unknown (fastest, matches neither exactly).")
  flags.DEFINE_string("harmonize", None, "Harmonisation run (workdir) applied to the result.")
  common.define_overwrite_flag()
  flags.mark_flags_as_required(["source", "target", "out"])


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}; give every input as a flag "
                    "(--source=..., --target=..., --mask=...).")
  f = flags.FLAGS
  result = run(f.source, f.target, f.out, mask=f.mask, segment_workdir=f.segment,
               class_name=f["class"].value, offset=f.offset, mode=f.mode, domain=f.domain,
               dilation=f.dilation, save_mask=f.save_mask, harmonize_workdir=f.harmonize,
               overwrite=f.overwrite)
  print(f"wrote {f.out} ({result.shape[0]}x{result.shape[1]})")
  return 0


if __name__ == "__main__":
  define_flags()
  common.run_tool(main, "cpjax.tools.clone")
