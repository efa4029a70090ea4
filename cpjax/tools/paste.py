r"""Paste the masked region of one image into another with a trained copy-paste generator.

  python -m cpjax.tools.paste --workdir=DIR --source=S.png --target=T.png --mask=M.png \
      --out=OUT.png [--offset=DX,DY] [--step=N] [--seed=0] [--overwrite] [--verbose]

The smart copy-paste of the paper (section 3.3): with the source S placed in the target's frame
and the mask M moved with it,
  X = (T (1 - M) + S M, M),    Y = (G(X) + S) M + T (1 - M),
so outside the mask the output is the target, bit for bit (to 8-bit rounding), and inside it
the generator adapts the pasted pixels to their new surroundings.

- The mask is in SOURCE coordinates (the size of the source; white = the region to paste).
  --offset=DX,DY moves the region DX pixels right and DY down when it is placed in the target;
  source and target may have different sizes, but the moved region must lie inside the target.
- Any size works: the generator is fully convolutional. The canvas is padded at the bottom and
  right to a multiple of its down-sampling factor 2**(len(model.generator_widths) - 1) (reflect
  padding for the images, zeros for the mask), run, and cropped back.
- The network is the one saved in the checkpoint of DIR (its own config, not a config file);
  --step picks a checkpoint, the latest by default.
- Noise: the generator runs as in training (deterministic=False), its noise images drawn from
  jax.random.key(--seed): the same seed gives the same result; other seeds give other plausible
  variants.
- The result is written as an 8-bit PNG (clipped to [0, 1], rounded). An existing --out is
  replaced only with --overwrite; an input never is (`cpjax.tools.common`, the outputs rule).
"""
from __future__ import annotations

import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from cpjax.tools import common
from cpjax.tools.common import ToolError

_NAMES = ("source", "target", "mask")


def parse_offset(text: str) -> tuple[int, int]:
  """'DX,DY' -> (DX, DY) integers (pixels right, pixels down); ToolError otherwise."""
  match = re.fullmatch(r"\s*([+-]?\d+)\s*[,:]\s*([+-]?\d+)\s*", text or "")
  if match is None:
    raise ToolError(f"--offset={text!r} is not DX,DY; give two integers (pixels right, pixels "
                    "down) such as --offset=40,-12.")
  return int(match.group(1)), int(match.group(2))


def check_placement(source_shape: tuple[int, ...], target_shape: tuple[int, ...],
                    mask: np.ndarray, offset: tuple[int, int],
                    names: tuple[str, str, str] = _NAMES) -> None:
  """Checks the sizes and that the moved region lies inside the target.

  Args:
    source_shape: [Hs, Ws, ...].
    target_shape: [Ht, Wt, ...].
    mask: [Hs, Ws, 1] in {0, 1}, in source coordinates.
    offset: (DX, DY).
    names: how the messages call source, target and mask (their file names).

  Raises:
    ToolError: mask size != source size, empty mask, or the region falls outside the target
      (the message gives the offsets that would work).
  """
  source_name, target_name, mask_name = names
  if tuple(mask.shape[:2]) != tuple(source_shape[:2]):
    raise ToolError(f"{mask_name} is {mask.shape[0]}x{mask.shape[1]} but {source_name} is "
                    f"{source_shape[0]}x{source_shape[1]}; give a mask the size of the source.")
  rows = np.flatnonzero(np.any(mask[..., 0] >= 0.5, axis=1))
  cols = np.flatnonzero(np.any(mask[..., 0] >= 0.5, axis=0))
  if rows.size == 0:
    raise ToolError(f"{mask_name} is empty (no white pixels); paint the region to paste white "
                    "on black.")
  # Python ints: an offset of any size compares without overflow.
  (y0, y1), (x0, x1) = (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))
  ht, wt = target_shape[:2]
  region_h, region_w = y1 - y0 + 1, x1 - x0 + 1
  if region_h > ht or region_w > wt:
    raise ToolError(f"the region of {mask_name} is {region_h}x{region_w} but {target_name} is "
                    f"only {ht}x{wt}; give a smaller mask or a larger target.")
  dx, dy = offset
  if not (0 <= x0 + dx and x1 + dx < wt and 0 <= y0 + dy and y1 + dy < ht):
    raise ToolError(
        f"with --offset={dx},{dy} the region of {mask_name} (rows {y0}-{y1}, columns {x0}-{x1}) "
        f"falls outside {target_name} ({ht}x{wt}); use DX in [{-x0}, {wt - 1 - x1}] and DY in "
        f"[{-y0}, {ht - 1 - y1}].")


def place(image: np.ndarray, shape: tuple[int, int], offset: tuple[int, int],
          fill: np.ndarray | float = 0.0) -> np.ndarray:
  """Moves `image` [Hs, Ws, C] by (DX, DY) onto a [H, W, C] canvas of `fill` (cropping)."""
  h, w = shape
  dx, dy = offset
  canvas = np.empty((h, w, image.shape[-1]), np.float32)
  canvas[...] = fill
  ys, xs = max(dy, 0), max(dx, 0)                                  # canvas start
  ye, xe = min(dy + image.shape[0], h), min(dx + image.shape[1], w)  # canvas end
  if ye > ys and xe > xs:
    canvas[ys:ye, xs:xe] = image[ys - dy:ye - dy, xs - dx:xe - dx]
  return canvas


def downsampling_factor(config: Any) -> int:
  """2**(number of stride-2 levels) of the copy-paste generator."""
  return 2**(len(config.model.generator_widths) - 1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _paste_on_device(task: Any, factor: int, params: Any, source: Any, target: Any, mask: Any,
                     key: Any) -> Any:
  """Y = clip((G(X) + S) M + T (1 - M)) for [H, W, C] canvases in the target frame.

  Pads to a multiple of `factor` (reflect for images, zeros for the mask), runs, crops back.
  Traced once per (task, canvas shape).
  """
  h, w = target.shape[:2]
  pad = ((0, -h % factor), (0, -w % factor), (0, 0))
  source_p = jnp.pad(source, pad, mode="reflect")
  target_p = jnp.pad(target, pad, mode="reflect")
  mask_p = jnp.pad(mask, pad)
  composite = target_p * (1.0 - mask_p) + source_p * mask_p
  ex = {"input": jnp.concatenate([composite, mask_p], axis=-1)[None],
        "source": source_p[None], "mask": mask_p[None], "image": target_p[None]}
  y = task.generate(params, ex, key, deterministic=False)[0]
  return jnp.clip(y[:h, :w], 0.0, 1.0)


def paste(task: Any, state: Any, source: np.ndarray, target: np.ndarray, mask: np.ndarray,
          offset: tuple[int, int] = (0, 0), seed: int = 0, *,
          names: tuple[str, str, str] = _NAMES) -> np.ndarray:
  """Pastes the masked region of `source` into `target` with the task's generator.

  Args:
    task: a `CopyPasteTask` (`common.load_system(...).task`).
    state: its train state (the generator's parameters: `task.inference_generator(state)`).
    source: [Hs, Ws, 3] in [0, 1].
    target: [Ht, Wt, 3] in [0, 1]; any size (no multiple of anything needed).
    mask: [Hs, Ws, 1] in {0, 1}, in source coordinates; 1 = region to paste.
    offset: (DX, DY): the region moves DX pixels right and DY pixels down in the target.
    seed: seed of the generator's noise (`jax.random.key(seed)`; deterministic=False).
    names: the names messages give source, target and mask (the CLI passes file names).

  Returns:
    [Ht, Wt, 3] float32 in [0, 1]: the target outside the moved mask (exactly), the
    generator's result clip(G(X) + S) inside it.

  Raises:
    ToolError: mask size != source size, empty mask, region outside the target.
  """
  source = np.asarray(source, np.float32)
  target = np.asarray(target, np.float32)
  mask = np.asarray(mask, np.float32)
  if mask.ndim == 2:
    mask = mask[..., None]
  mask = (mask >= 0.5).astype(np.float32)   # as read_mask: the output is the target outside
  for name, array, channels in zip(names, (source, target, mask), (3, 3, 1)):
    if array.ndim != 3 or array.shape[-1] != channels:
      raise ValueError(f"paste: {name} has shape {array.shape}; give [H, W, {channels}].")
  offset = (int(offset[0]), int(offset[1]))
  check_placement(source.shape, target.shape, mask, offset, names)
  shape = target.shape[:2]
  placed_source = place(source, shape, offset, fill=target)
  placed_mask = place(mask, shape, offset)
  y = _paste_on_device(task, downsampling_factor(task.config), task.inference_generator(state),
                       placed_source, target, placed_mask, jax.random.key(seed))
  return np.asarray(jax.device_get(y), np.float32)


def run(workdir: str, source: str, target: str, mask: str, out: str, offset: str = "0,0",
        step: int | None = None, seed: int = 0, overwrite: bool = False) -> np.ndarray:
  """The command line without the flags: reads, checks, pastes, writes `out`.

  Every input is checked before the checkpoint is restored, so mistakes are reported at once.

  Returns:
    [Ht, Wt, 3] float32 in [0, 1], the image written to `out`.

  Raises:
    ToolError: with one line naming the file and the fix.
  """
  dx_dy = parse_offset(offset)
  source_image = common.read_image(source)
  target_image = common.read_image(target)
  mask_image = common.read_mask(mask, like=source)
  names = (source, target, mask)
  check_placement(source_image.shape, target_image.shape, mask_image, dx_dy, names)
  common.check_output(out, overwrite)
  loaded = common.load_system(workdir, step, "copy_paste")
  result = paste(loaded.task, loaded.state, source_image, target_image, mask_image, dx_dy, seed,
                 names=names)
  common.write_image(out, result, overwrite)
  return result


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so importing is free)."""
  flags.DEFINE_string("workdir", None, "Training run whose checkpoint to use.")
  flags.DEFINE_string("source", None, "Image to copy from.")
  flags.DEFINE_string("target", None, "Image to paste into.")
  flags.DEFINE_string("mask", None,
                      "Black/white mask the size of --source; white = the region to paste.")
  flags.DEFINE_string("out", None, "Output PNG: the target with the region pasted.")
  flags.DEFINE_string("offset", "0,0",
                      "DX,DY: move the region DX px right and DY px down in the target.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_integer("seed", 0, "Seed of the generator's noise (same seed, same result).")
  common.define_overwrite_flag()
  flags.mark_flags_as_required(["workdir", "source", "target", "mask", "out"])


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}; give every input as a flag "
                    "(--source=..., --target=..., --mask=...).")
  f = flags.FLAGS
  result = run(f.workdir, f.source, f.target, f.mask, f.out, f.offset, f.step, f.seed,
               f.overwrite)
  print(f"wrote {f.out} ({result.shape[0]}x{result.shape[1]})")
  return 0


if __name__ == "__main__":
  define_flags()
  common.run_tool(main, "cpjax.tools.paste")
