"""Smart copy-paste on Cityscapes (paper sections 3.1.3 and 3.3). Variants: '' (paper), 'tiny'.

Images are downsampled from 1024x2048 to 512x1024 and trained on random 512x512 crops with
sigma = 10 (the paper: "Cityscapes is harder to train"). Point it at the dataset root, which holds
leftImg8bit/{train,val}/<city>/*_leftImg8bit.png:
  --config.data.source=cityscapes:/data/cityscapes:train --config.eval.source=cityscapes:/data/cityscapes:val
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

faces = defaults.load_sibling(__file__, "faces")

NO_DATA = ("configs/cityscapes.py needs Cityscapes (leftImg8bit_trainvaltest.zip from the "
           "Cityscapes website, unpacked so that ROOT/leftImg8bit/train/<city>/*.png exist): pass "
           "--config.data.source=cityscapes:ROOT:train --config.eval.source=cityscapes:ROOT:val. "
           "configs/demo.py runs without any dataset.")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = faces.get_config()
  c.data.missing_hint = NO_DATA
  c.data.resize = (512, 1024)            # downsample 1024x2048 -> 512x1024, then crop
  c.data.image_size = 512                # random 512x512 crops
  c.transform.sigma = 10.0               # paper: sigma 10 on Cityscapes
  if arg == "tiny":
    faces.shrink_for_tests(c, image_size=32, source="samples:train")
    c.data.resize = (48, 96)             # the resize-then-crop path at toy size
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/cityscapes.py; use '' or 'tiny'.")
  return c
