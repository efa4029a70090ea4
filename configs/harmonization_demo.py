"""iDIH on the photos bundled with scikit-image: no dataset needed, CPU minutes.

Synthetic harmonisation problems on random-resized crops of the 7 training photos: each photo
recoloured as a whole by one T_color (the ground truth), then a random rotated rectangle or blob
outline whose colours are changed by T_color at a strength s ~ U(0, 1) (`config.synthetic`, see
`cpjax.tasks.harmonization`); evaluated the same way on the 2 held-out photos (chelsea, coffee)
x 32 seeded problems each, against the unharmonised composite. A check on other photos, real
object silhouettes and mild shifts: `python -m experiments.harmonization_heldout --workdir=W`.
The paper's loss (FN-MSE) and optimiser at 64 px with a narrow iDIH (64 px, depth 5, 16
channels). Variants: '' and 'tiny'.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

idih = defaults.load_sibling(__file__, "iharmony4_idih")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = idih.get_config()
  c.total_steps = 1000
  c.batch_size = 16
  c.data.source = "samples:train"
  c.data.image_size = 64
  c.data.resize = 0                        # crops of the full photos: all of their context
  c.data.scale = (0.25, 1.0)               # wider RandomResizedCrop: 7 photos need variety
  c.data.keep_foreground = ""              # the mask is drawn on device
  c.data.resample = "antialias"            # whole photos shrunk ~8x: antialiased resizing
  c.data.workers = 0
  c.model.depth = 5                        # 64 px: 32, 16, 8, 4, 1
  c.model.ch = 16
  c.model.max_channels = 128
  # Stronger T_color than the iHarmony4 configs' (visible in a 64 px demo): the composite's
  # foreground differs clearly from its surroundings.
  c.transform.update(dict(brightness=(-0.3, 0.3), contrast=(0.6, 1.4), hue=(-0.1, 0.1),
                          saturation=(0.4, 1.6)))
  # A range of shift strengths down to none (else the network learns to always change colours
  # a lot and worsens mild composites), object-like blob outlines beside the rectangles, and
  # each photo recoloured as a whole first (7 photos: else their colours are memorised).
  c.synthetic = dict(strength=(0.0, 1.0), blob_fraction=0.5, blob_radius=(0.12, 0.3),
                     recolor=True)
  c.loss.min_area = 100.0 * (64 / 256) ** 2   # A_min scaled with the image area
  c.optim.milestones = (800,)
  c.log_every_steps = 50
  c.sample_every_steps = 500
  c.checkpoint.every_steps = 500
  c.eval.source = "samples:eval"
  c.eval.mode = "resize"                   # each held-out photo whole, resized to 64x64
  c.eval.num_examples = 64
  c.eval.repeats = 32
  c.eval.batch_size = 16
  c.eval.every_steps = 500
  if arg == "tiny":
    idih.shrink_for_tests(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/harmonization_demo.py; use '' or "
                     "'tiny'.")
  return c
