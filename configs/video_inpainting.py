"""Copy-and-Paste Networks for video inpainting (Lee et al. 2019).

Variants: '' (paper), 'tiny', 'davis' (the paper's DAVIS evaluation, below).

Training sequences are synthesised on device from still images (paper sec. 4.2: Places crops
with successive random affine motions, moving object masks):
  --config.data.source=folder:/data/places365/train   (any image tree; tfds:NAME:SPLIT works too)
The holes take their shapes from object masks (paper: PASCAL VOC 2012 and MIT saliency masks);
without a mask folder they are random blobs:
  --config.data.mask_source=/data/VOCdevkit/VOC2012/SegmentationObject   (or any binary masks)
Optionally, real frame sequences instead of stills (clips of 5 consecutive frames, the holes
still synthetic; `data_pipelines.video_clips`):
  --config.data.source=video_clips:/data/DAVIS/JPEGImages/480p   (any folder of frame folders)
The perceptual and style losses need ImageNet VGG16 weights: torchvision's vgg16-397923af.pth,
converted once (converted directories are the one format read):
  python -m cpjax.tools.convert --from=vgg16-397923af.pth --model=vgg16_torchvision \
      --out=weights/vgg16_torchvision
  --config.loss.vgg_weights=weights/vgg16_torchvision
Numbers marked 'ours' are choices the paper leaves open.

'davis': the paper's video restoration evaluation (sec. 5.1, Table 1): DAVIS clips with the
object masks of another DAVIS video as holes (`data_pipelines.davis`), frames resized to the
released 240x424 without antialiasing, every clip of the list scored. With converted released
weights (no training):
  python -m cpjax.main --config=configs/video_inpainting.py:davis --mode=eval \
      --workdir=runs/cpn_davis --config.init_from=weights/cpn \
      --config.eval.source=davis:/data/DAVIS:2017/val
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults
from data_pipelines import pipeline

NO_DATA = ("configs/video_inpainting.py needs still images to synthesise sequences from: pass "
           "--config.data.source=folder:/path/to/places (and --config.eval.source=folder:/path/"
           "to/held_out_images), or real videos with --config.data.source=video_clips:/path/"
           "to/DAVIS/JPEGImages/480p. To try the system without any dataset, run "
           "configs/video_demo.py, which trains on photos bundled with scikit-image.")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = defaults.trainer_config()
  c.task = "video_inpainting"
  c.total_steps = 3_000_000              # paper: lr x0.1 every 1M iterations (7 days on 3 GPUs)
  c.batch_size = 40                      # paper: batch 40 (global)
  c.init_from = ""                       # released weights (cpjax.tools.convert --model=cpn_video)
  c.data = pipeline.default_data_config()
  c.data.source = ""
  c.data.missing_hint = NO_DATA
  c.data.image_size = 256                # ours: square training crops (inference: 240x424)
  c.data.resize = 320                    # ours: shorter side 320, then random 256 crops
  c.data.mask_source = ""                # folder of object masks for the holes; '' = random blobs
  c.data.mask_size = (0.2, 0.5)          # ours: mask's longer side / image's shorter side (paper:
                                         # "resized to be smaller than the frames"); = blob sizes
  c.sequence = dict(
      num_frames=5,                      # paper: five frames per training sample
      target=2,                          # ours: the middle frame is the target
      zoom=1.15,                         # ours: zoom in, so the camera motion stays in the image
      camera=dict(rotation=0.03, shear=0.02, scale=0.03, translation=0.03),  # ours, per frame
      static_fraction=0.0,               # sequences without camera motion (paper: none)
      object=dict(radius=(0.1, 0.25), center=(0.25, 0.75), rotation=0.1, shear=0.05,
                  scale=0.05, translation=0.06),      # ours; radius, center: blobs only
      dilate=4,                          # 3x3-cross dilations of holes that come with the data
                                         # (davis:), as the released test code dilates masks
  )
  c.model = dict(                        # the released network (CPNet_test.py's layers)
      align_widths=(64, 64, 128, 128, 256, 256, 256),
      align_size=224,
      regressor_width=512,
      reuse_conv5=True,                  # the released code's conv5a/conv5b reuse
      encoder_widths=(64, 64, 128, 128, 128),
      decoder_widths=(128, 128, 64, 64),
      dilations=(2, 4, 8, 16),
      dtype="float32",
  )
  # Weights: the paper gives none ("empirically determined"). Ours follow Liu et al. 2018 (whose
  # perceptual / style / TV losses the paper adopts): valid 1, hole 6, perceptual 0.05,
  # style 120, TV 0.1; both hole parts get the hole weight; alignment 1 (an L1 like L_valid).
  c.loss = dict(align=1.0, valid=1.0, hole_visible=6.0, hole_invisible=6.0, perceptual=0.05,
                style=120.0, tv=0.1, vgg_layers=("pool1", "pool2", "pool3"), vgg_weights="")
  c.optim = dict(lr=1e-4, b1=0.9, b2=0.999,   # Adam; lr ours (the paper's value is lost)
                 decay_steps=1_000_000, decay_rate=0.1,   # paper: x0.1 every 1M iterations
                 warmup_steps=0,        # linear lr warm-up (paper: none); 300 kept a batch-4
                                        # lr-1e-3 demo run from a dead decoder (README)
                 align_lr_mult=1.0)   # alignment network's lr / lr (paper: one rate for all)
  c.checkpoint.every_steps = 10_000
  c.sample_every_steps = 5_000
  c.eval.num_examples = 256
  c.eval.batch_size = 16
  c.eval.every_steps = 50_000
  if arg == "tiny":
    shrink_for_tests(c)
  elif arg == "davis":
    davis_evaluation(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/video_inpainting.py; use '', 'tiny' "
                     "or 'davis'.")
  return c


def davis_evaluation(c: ml_collections.ConfigDict) -> None:
  """The paper's DAVIS restoration protocol as the evaluation (module docstring)."""
  c.data.image_size = (240, 424)         # the released test's frame size
  c.data.resample = "linear"             # no antialiasing, as the released cv2.resize
  c.eval.mode = "resize"                 # whole frames resized, not cropped
  c.eval.num_examples = 0                # every clip of the list
  c.eval.repeats = 1                     # the holes are given: one problem per clip
  c.data.missing_hint = ("the 'davis' variant evaluates on DAVIS: pass --config.eval.source="
                         "davis:/path/to/DAVIS[:2017/val] (and --config.init_from=DIR of "
                         "converted weights, or a trained --workdir)")


def shrink_for_tests(c: ml_collections.ConfigDict) -> None:
  """The same code path with a tiny network, 32 px and a few steps (CPU seconds)."""
  c.total_steps, c.batch_size = 2, 8
  c.data.source, c.data.image_size, c.data.resize = "samples:train", 32, 64
  c.data.workers = 0
  c.model.align_widths = (8, 8, 8, 8, 16, 16, 16)
  c.model.align_size = 32
  c.model.regressor_width = 16
  c.model.encoder_widths = (8, 8, 8, 8, 8)
  c.model.decoder_widths = (8, 8, 8, 8)
  c.model.dilations = (2, 4)
  c.loss.perceptual = c.loss.style = 0.0
  c.log_every_steps = 1
  c.sample_every_steps = 0
  c.checkpoint.every_steps = 1
  c.eval.source = "samples:eval"
  c.eval.num_examples, c.eval.repeats, c.eval.batch_size = 8, 4, 8
