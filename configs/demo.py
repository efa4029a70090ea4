"""Smart copy-paste on the photos bundled with scikit-image: no dataset needed, CPU minutes.

The paper's system and losses (configs/faces.py) at 64 px with a narrow network, trained on
random crops of the bundled photos and evaluated on held-out ones. Variants: '' and 'tiny'.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

faces = defaults.load_sibling(__file__, "faces")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = faces.get_config()
  c.total_steps = 800
  c.batch_size = 8
  c.data.source = "samples:train"
  c.data.image_size = 64
  c.data.resize = 128                    # shorter side to 128 px, then random 64 px crops
  c.data.flip = True
  c.transform.sigma = 15.0 * 64 / 512    # the faces offset, scaled to the crop size
  c.model.generator_widths = (16, 32, 64, 64)
  c.model.dilations = (2, 4, 8, 8)
  c.model.critic_global_widths = (16, 32, 64, 64)
  c.model.critic_local_widths = (16, 32, 64)
  c.model.critic_local_size = 32
  c.model.critic_dense = 128
  c.log_every_steps = 25
  c.sample_every_steps = 200
  c.checkpoint.every_steps = 200
  c.eval.source = "samples:eval"
  c.eval.num_examples = 64
  c.eval.repeats = 32                    # 2 held-out photos x 32 seeded problems each
  c.eval.batch_size = 8
  c.eval.every_steps = 200
  if arg == "tiny":
    faces.shrink_for_tests(c, image_size=32, source="samples:train")
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/demo.py; use '' or 'tiny'.")
  return c
