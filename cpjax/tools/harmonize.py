r"""Harmonise a composite image with a trained DIH / iDIH / iDIH-HRNet model.

  python -m cpjax.tools.harmonize --workdir=DIR --image=COMPOSITE.png --mask=MASK.png \
      --out=OUT.png [--step=N] [--overwrite] [--verbose]

The white region of MASK.png (the size of the composite) is the pasted foreground whose
appearance is adjusted to the rest of the image; everything outside it is kept bit for bit (to
8-bit rounding).

Any resolution. The networks work at the training resolution S x S of the run
(config.data.image_size: iDIH's depth fixes it). The composite and the mask are resized to
S x S (antialiased bilinear), harmonised there, and the predicted CHANGE (prediction minus the
resized composite) is upsampled bilinearly to the full resolution and added inside the full-
resolution mask:
  out = clip(composite + mask * upsample(pred_S - composite_S), 0, 1).
Harmonisation is a smooth colour/tone adjustment, so its change survives upsampling while the
composite's own full-resolution detail is kept (upsampling the prediction itself would blur
the foreground), and the background is untouched. At S x S the output is the network's
prediction inside the mask.

The network is the one saved in DIR's checkpoint (its own config); --step picks a checkpoint,
the latest by default. An existing --out is replaced only with --overwrite; an input never is
(`cpjax.tools.common`, the outputs rule).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from cpjax.tasks import harmonization
from cpjax.tools import common
from cpjax.tools.common import ToolError
from data_pipelines import image_ops


def model_size(config: Any) -> tuple[int, int]:
  """(height, width) the run's network was trained at."""
  return image_ops.pair(config.data.image_size)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _harmonize_on_device(task: Any, size: tuple[int, int], state: Any, composite: jax.Array,
                         mask: jax.Array) -> jax.Array:
  """[H, W, 3] composite + [H, W, 1] binary mask -> [H, W, 3] result (module docstring)."""
  h, w = composite.shape[:2]
  small = jax.image.resize(composite, (*size, 3), "linear", antialias=True)
  small_mask = jax.image.resize(mask, (*size, 1), "linear", antialias=True)
  pred = task.harmonize(state, small[None], small_mask[None])[0]
  return harmonization.apply_change(composite, mask, pred - small, jnp.asarray((h, w)))


def harmonize(task: Any, state: Any, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Harmonises a composite of any size.

  Args:
    task: a `HarmonizationTask` (`common.load_system(...).task`).
    state: its train state.
    composite: [H, W, 3] in [0, 1].
    mask: [H, W, 1] (or [H, W]) in [0, 1]; >= 0.5 is the foreground.

  Returns:
    [H, W, 3] float32 in [0, 1]; equal to `composite` outside the mask.

  Raises:
    ToolError: shapes that do not match, an empty mask.
  """
  composite = np.asarray(composite, np.float32)
  mask = np.asarray(mask, np.float32)
  if mask.ndim == 2:
    mask = mask[..., None]
  if composite.ndim != 3 or composite.shape[-1] != 3:
    raise ToolError(f"the composite has shape {composite.shape}; give an RGB image [H, W, 3].")
  if mask.shape[:2] != composite.shape[:2]:
    raise ToolError(f"the mask is {mask.shape[0]}x{mask.shape[1]} but the composite is "
                    f"{composite.shape[0]}x{composite.shape[1]}; give a mask the size of the "
                    "composite.")
  mask = (mask[..., :1] >= 0.5).astype(np.float32)
  if not mask.any():
    raise ToolError("the mask is empty (no white pixels); paint the foreground white on black.")
  out = _harmonize_on_device(task, model_size(task.config), state, composite, mask)
  return np.asarray(jax.device_get(out), np.float32)


def run(workdir: str, image: str, mask: str, out: str, step: int | None = None,
        overwrite: bool = False) -> np.ndarray:
  """The command line without the flags: reads and checks every input, restores, harmonises,
  writes `out`; returns the [H, W, 3] result in [0, 1]."""
  composite = common.read_image(image)
  mask_image = common.read_mask(mask, like=image)
  common.check_output(out, overwrite)
  loaded = common.load_system(workdir, step, "harmonization")
  result = harmonize(loaded.task, loaded.state, composite, mask_image)
  common.write_image(out, result, overwrite)
  return result


def define_flags() -> None:
  """The command-line flags (defined only when run as a program, so importing is free)."""
  flags.DEFINE_string("workdir", None, "Training run whose checkpoint to use.")
  flags.DEFINE_string("image", None, "The composite image to harmonise.")
  flags.DEFINE_string("mask", None,
                      "Black/white mask the size of --image; white = the pasted foreground.")
  flags.DEFINE_string("out", None, "Output PNG: the harmonised composite.")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  common.define_overwrite_flag()
  flags.mark_flags_as_required(["workdir", "image", "mask", "out"])


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise ToolError(f"unexpected arguments: {' '.join(argv[1:])}; give every input as a flag "
                    "(--image=..., --mask=..., --out=...).")
  f = flags.FLAGS
  result = run(f.workdir, f.image, f.mask, f.out, f.step, f.overwrite)
  print(f"wrote {f.out} ({result.shape[0]}x{result.shape[1]})")
  return 0


if __name__ == "__main__":
  define_flags()
  common.run_tool(main, "cpjax.tools.harmonize")
