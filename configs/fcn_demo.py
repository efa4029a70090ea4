"""FCN on synthetic segmentation made from the photos bundled with scikit-image: no dataset,
CPU minutes. Variants: '' and 'tiny'.

`seg_samples` (data_pipelines/synthetic_segmentation.py): four objects cut from bundled photos
with known-shape masks (cat, cup, person, rocket) pasted onto other bundled photos; eval on
held-out backgrounds. FCN-8s with the reference geometry (conv1 padding 100, ceil pooling,
crops, frozen bilinear upsampling, zero-initialised score layers) and a narrow VGG trunk, trained
from scratch with Adam on the pixel-averaged loss at 64 px; eval prints pixel accuracy, mean
accuracy, mean IU and frequency-weighted IU.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults
from data_pipelines import synthetic_segmentation

fcn_voc = defaults.load_sibling(__file__, "fcn_voc")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = fcn_voc.get_config("8s")
  c.total_steps = 400
  c.batch_size = 8
  c.data.source = "seg_samples:train"
  c.data.image_size = 64
  c.data.resize = 64                     # the 128 px canvas to 64 px, then the whole of it
  c.data.augment = "crop"
  c.data.flip = True
  c.model.classes = synthetic_segmentation.CLASSES
  c.model.widths = (8, 16, 32, 32, 32)   # VGG16's 5 blocks, 1/16 to 1/8 of its widths
  c.model.fc_width = 64
  c.model.vgg_init = "random"            # a narrow trunk: no pretrained weights fit it
  c.loss.reduction = "mean"
  c.optim.name, c.optim.lr = "adam", 1e-3
  c.log_every_steps = 25
  c.sample_every_steps = 200
  c.checkpoint.every_steps = 200
  c.eval.source = "seg_samples:eval"
  c.eval.mode = "center"
  c.eval.num_examples = 64
  c.eval.batch_size = 8
  c.eval.every_steps = 200
  if arg == "tiny":
    fcn_voc.shrink_for_tests(c, source="seg_samples:train", eval_source="seg_samples:eval",
                             classes=synthetic_segmentation.CLASSES)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/fcn_demo.py; use '' or 'tiny'.")
  return c
