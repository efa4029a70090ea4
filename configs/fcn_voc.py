"""FCN semantic segmentation on PASCAL VOC 2012 (the seamless-cloning report, section IV).

Variants: '32s' (= ''), '16s', '8s', '4s' (the report's extra skip from pool2), 'tiny'.

Data (VOCtrainval_11-May-2012.tar, layout in data_pipelines/voc.py):
  --config.data.source=voc:/data/VOCdevkit/VOC2012:train \
  --config.eval.source=voc:/data/VOCdevkit/VOC2012:val
The report trains on VOC 2012 train and tests on val, every image resized to 224x224 ("to fully
take advantage of the pre-trained network"); the reference trains on SBD
(`voc:ROOT:sbd_train@SBD_ROOT` or `:train_aug@SBD_ROOT`) at full size with batch 1.

Staged training (the reference, and the report's "training in sequence", Table II): train 32s,
then 16s with --config.init_from=<32s workdir>, then 8s from the 16s run (and 4s from 8s).
Without init_from each stage starts from VGG16 ("training separately", the report's better row).
VGG16 weights: --config.model.vgg_init=DIR, a directory written by `python -m cpjax.tools.convert
--model=vgg16_caffe` from pytorch-fcn's vgg16_from_caffe.pth (or an .npz in flax layout, keys
'vgg/conv1_1/kernel' ... 'fc7/bias'; see cpjax/tasks/segmentation.py). init_from also takes a
converted pytorch-fcn checkpoint (--model=fcn32s|fcn16s|fcn8s).

Optimiser: the reference's SGD, momentum 0.99, weight decay 5e-4, lr 1e-10 / 1e-12 / 1e-14
(32s / 16s / 8s; 4s continues the pattern at 1e-14) on the pixel-summed loss, biases at 2x lr
without decay, upscore layers frozen. The report's lr 1e-5 (32s, and 16s/8s trained separately)
with a pixel-averaged loss is `--config.optim.name=adam --config.optim.lr=1e-5
--config.loss.reduction=mean` (the report does not name its optimiser).
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults
from data_pipelines import pipeline, synthetic_segmentation, voc

NO_DATA = ("configs/fcn_voc.py needs PASCAL VOC 2012: pass --config.data.source=voc:/path/to/"
           "VOCdevkit/VOC2012:train and --config.eval.source=voc:/path/to/VOCdevkit/VOC2012:val "
           "(download VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/"
           "voc2012/). To try FCN without a dataset, run configs/fcn_demo.py.")
VARIANTS = ("32s", "16s", "8s", "4s")
# Reference learning rates per stage (pixel-summed loss).
SGD_LR = {"32s": 1e-10, "16s": 1e-12, "8s": 1e-14, "4s": 1e-14}
VOC_TRAIN_IMAGES = 1464           # ImageSets/Segmentation/train.txt


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  variant = arg or "32s"
  if variant not in VARIANTS + ("tiny",):
    raise ValueError(f"unknown variant {arg!r} of configs/fcn_voc.py; use one of "
                     f"{', '.join(VARIANTS)}, tiny.")
  c = defaults.trainer_config()
  c.task = "fcn"
  c.batch_size = 8                       # report: not given; reference: 1 (needs full-size images)
  c.total_steps = 30 * VOC_TRAIN_IMAGES // c.batch_size   # report: 30 epochs
  c.init_from = ""                       # workdir of the previous stage (staged training)
  c.data = pipeline.default_data_config()
  c.data.source = ""
  c.data.missing_hint = NO_DATA
  c.data.image_size = 224                # report: every image resized to 224 x 224
  c.data.resize = (224, 224)
  c.data.flip = False                    # no augmentation (report, reference)
  c.model = dict(
      variant="8s" if variant == "tiny" else variant,
      classes=voc.CLASSES,               # 21: background + 20 object classes
      widths=(64, 128, 256, 512, 512),   # VGG16
      fc_width=4096,                     # fc6 (7x7), fc7 (1x1)
      dropout=0.5,
      dtype="float32",
      vgg_init="",
  )
  c.loss = dict(reduction="sum")         # reference: summed over pixels
  c.optim = dict(name="sgd", lr=SGD_LR.get(variant, 1e-10), momentum=0.99, b1=0.9, b2=0.999,
                 weight_decay=5e-4, bias_lr_mult=2.0)
  c.log_every_steps = 50
  c.sample_every_steps = 1000
  c.checkpoint.every_steps = 1000
  c.eval.mode = "resize"                 # report: evaluated at 224 x 224 too
  c.eval.num_examples = 1449             # VOC 2012 val
  c.eval.batch_size = 8
  c.eval.every_steps = 1000
  if variant == "tiny":
    shrink_for_tests(c, source="seg_samples:train", eval_source="seg_samples:eval",
                     classes=synthetic_segmentation.CLASSES)
  return c


def shrink_for_tests(c: ml_collections.ConfigDict, *, source: str, eval_source: str,
                     classes: tuple[str, ...]) -> None:
  """The same code path with a narrow FCN-8s, a few steps and the synthetic data (CPU seconds)."""
  c.total_steps, c.batch_size = 4, 8
  c.data.source, c.data.image_size, c.data.resize = source, 32, 0
  c.data.flip, c.data.workers = True, 0
  c.model.classes = classes
  c.model.widths, c.model.fc_width = (4, 4, 8, 8, 8), 16
  c.loss.reduction = "mean"
  c.optim.name, c.optim.lr = "adam", 1e-3
  c.log_every_steps = 2
  c.sample_every_steps = 0
  c.checkpoint.every_steps = 2
  c.eval.source, c.eval.mode = eval_source, "center"
  c.eval.num_examples, c.eval.batch_size = 8, 8
  c.eval.every_steps = 0
