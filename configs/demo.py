"""Smart copy-paste on the photos bundled with scikit-image: no dataset needed, CPU minutes.

The paper's system and losses (configs/faces.py) at 128 px with a narrow network, trained on
random crops of the bundled photos and evaluated on held-out ones. Variants: '' and 'tiny'.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

faces = defaults.load_sibling(__file__, "faces")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = faces.get_config()
  c.total_steps = 1500
  c.batch_size = 8
  c.data.source = "samples:train"
  c.data.image_size = 128
  c.data.resize = 256                    # shorter side to 256 px, then random 128 px crops
  c.data.flip = True
  c.transform.sigma = 15.0 * 128 / 512   # the faces offset, scaled to the crop size
  c.model.generator_widths = (32, 64, 96, 128)
  c.model.dilations = (2, 4, 8, 16)
  c.model.critic_global_widths = (32, 64, 96, 128, 128)
  c.model.critic_local_widths = (32, 64, 96, 128)
  c.model.critic_local_size = 64
  c.model.critic_dense = 256
  c.log_every_steps = 25
  c.sample_every_steps = 250
  c.checkpoint.every_steps = 250
  c.eval.source = "samples:eval"
  c.eval.num_examples = 64
  c.eval.batch_size = 8
  c.eval.every_steps = 500
  if arg == "tiny":
    faces.shrink_for_tests(c, image_size=32, source="samples:train")
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/demo.py; use '' or 'tiny'.")
  return c
