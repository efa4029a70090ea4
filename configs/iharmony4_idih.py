"""iDIH on iHarmony4 at 256 px (foreground-aware harmonisation paper; reference fixed256
improved_dih256). Variants: '' (paper), 'idih512' (depth 8 at 512 px, A_min 1000), 'dih256'
(the reference's DIH baseline: BatchNorm everywhere, no blending head), 'tiny'.

Data: the iHarmony4 folder (four subsets with their txt lists), e.g.
  --config.data.source=iharmony4:/data/iHarmony4:train \
  --config.eval.source=iharmony4:/data/iHarmony4:test
Scores at each image's own resolution too (beside the reference's 256 px ones):
  --config.eval.mode=full --config.eval.full_size=N   (N >= the largest test image's side)
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults
from data_pipelines import pipeline

TRAIN_COMPOSITES = 38545 + 19437 + 7449 + 311    # HCOCO, HAdobe5k, HFlickr, Hday2night
TEST_COMPOSITES = 4283 + 2160 + 828 + 133        # 7404: 'All' of the paper's tables
BATCH = 16
STEPS_PER_EPOCH = -(-TRAIN_COMPOSITES // BATCH)  # 4109

NO_DATA = ("this config needs iHarmony4: pass "
           "--config.data.source=iharmony4:/path/to/iHarmony4:train and "
           "--config.eval.source=iharmony4:/path/to/iHarmony4:test (download it from "
           "https://github.com/bcmi/Image-Harmonization-Dataset-iHarmony4). To try the system "
           "without any dataset, run configs/harmonization_demo.py.")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.trainer_config()
  c.task = "harmonization"
  c.batch_size = BATCH                       # reference: batch 16
  c.total_steps = 120 * STEPS_PER_EPOCH      # iDIH: 120 epochs
  c.data = pipeline.default_data_config()
  c.data.source = ""
  c.data.missing_hint = NO_DATA
  c.data.image_size = 256                    # fixed256
  c.data.augment = "random_resized_crop"     # RandomResizedCrop(256, scale 0.5-1) + flip
  c.data.scale = (0.5, 1.0)
  c.data.flip = True
  c.data.keep_foreground = "mask"            # redraw crops with mask sum <= 1 (kept w.p. 0.05)
  c.data.resample = "linear"                 # albumentations' resizes: OpenCV INTER_LINEAR
  c.data.workers = 8
  c.model = dict(name="idih", depth=7, ch=64, max_channels=512, batchnorm_from=2,
                 image_fusion=True,
                 input_space="imagenet",    # ImageNet-normalised RGB, the mask as 0..1
                 dtype="float32")
  c.loss = dict(name="fn_mse", min_area=100.0, lambda1=1.0)   # FN-MSE, A_min = 100
  c.optim = dict(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, decay=0.1,
                 milestones=(105 * STEPS_PER_EPOCH, 115 * STEPS_PER_EPOCH), backbone_lr_mult=0.1)
  # Synthetic composites for image-only sources (demo, tiny): T_color inside a random
  # rotated rectangle (cpjax.ops.transform keys; the homography is always off).
  c.transform = dict(shading="global",
                     color=dict(brightness=(-0.2, 0.2), contrast=(0.7, 1.3), hue=(-0.05, 0.05),
                                saturation=(0.6, 1.4)),
                     mask=dict(size=(0.2, 0.6)))
  c.checkpoint.every_steps = 5 * STEPS_PER_EPOCH
  c.log_every_steps = 100
  c.sample_every_steps = STEPS_PER_EPOCH
  c.eval.source = ""
  c.eval.mode = "resize"                     # the reference evaluates at 256x256
  c.eval.num_examples = TEST_COMPOSITES
  c.eval.batch_size = BATCH
  c.eval.every_steps = 10 * STEPS_PER_EPOCH
  c.init_from = ""      # a converted idih256 / hrnet*_idih256 (cpjax.tools.convert): whole network
  if arg == "idih512":
    c.data.image_size = 512
    c.model.depth = 8
    c.loss.min_area = 1000.0
  elif arg == "dih256":
    c.model.batchnorm_from, c.model.image_fusion = 0, False
  elif arg == "tiny":
    shrink_for_tests(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/iharmony4_idih.py; use '', 'idih512', "
                     "'dih256' or 'tiny'.")
  return c


def shrink_for_tests(c: ml_collections.ConfigDict, image_size: int = 32) -> None:
  """The same code path with a tiny network, a few steps and synthetic problems on the bundled
  photos (pass an iHarmony4 tree as data.source to run the real-pair path)."""
  c.total_steps, c.batch_size = 4, 8
  c.data.source, c.data.image_size, c.data.workers = "samples:train", image_size, 0
  c.data.keep_foreground = ""            # image-only source: masks are drawn on device
  c.data.resample = "antialias"          # photos downscaled a lot: antialiased resizing
  c.model.depth = image_size.bit_length() - 2          # side 2**(depth + 1)
  c.model.ch, c.model.max_channels = 8, 16
  c.loss.min_area = 100.0 * (image_size / 256) ** 2
  c.optim.milestones = (2, 3)
  c.log_every_steps = 2
  c.sample_every_steps = 0
  c.checkpoint.every_steps = 2
  c.eval.source = "samples:eval"
  c.eval.mode = "center"
  c.eval.num_examples, c.eval.repeats, c.eval.batch_size = 8, 4, 8
