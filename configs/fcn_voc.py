"""FCN semantic segmentation on PASCAL VOC 2012 (the seamless-cloning report, section IV).

Variants: '32s' (= ''), '16s', '8s', '4s' (the report's extra skip from pool2): the reference's
schedule; '224' (= '32s_224'), '16s_224', '8s_224', '4s_224': a quick variant at 224 px; 'tiny'.

Data (VOCtrainval_11-May-2012.tar, layout in data_pipelines/voc.py):
  --config.data.source=voc:/data/VOCdevkit/VOC2012:train \
  --config.eval.source=voc:/data/VOCdevkit/VOC2012:val
The reference (pytorch-fcn, following the FCN authors' Caffe solver) trains on SBD
(`voc:ROOT:sbd_train@SBD_ROOT`, or `:train_aug@SBD_ROOT`) and validates on VOC 2011 seg11valid.

Default schedule: the reference's. Whole images at their own resolution, batch 1, 100,000 steps:
every image is padded bottom/right to 500x500 (VOC and SBD images are at most 500 px a side)
with the ignore label 255 (no loss, no score) and, in the image, the Caffe mean colour: zero at
the network's input, as conv1's own 100 px padding around the reference's unpadded image (whose
feature maps end 100 px past the image where the padded canvas's go on, so scores near the
bottom and right edges may differ slightly). SGD, momentum 0.99, weight decay 5e-4,
lr 1e-10 / 1e-12 / 1e-14 (32s / 16s / 8s; 4s continues the pattern at 1e-14) on the pixel-summed
loss, biases at 2x lr without decay, upscore layers frozen; evaluation and checkpoints every
4,000 steps. Batch 1 runs on one device (the batch is split over the devices of the mesh).

'224' variants: the report's geometry (every image resized to 224x224 "to fully take advantage of
the pre-trained network", 30 epochs of VOC 2012 train) at batch 8, with the reference's SGD and
its lr multiplied by the batch size (the summed loss is averaged over the batch, so each image
moves the weights as in a batch-1 step). A quick variant, not the paper's schedule nor the
reference's: 43,920 images seen against 100,000, each with ~1/4 of the pixels of a VOC image,
so roughly 8x less parameter movement in all. The report's own optimiser settings (lr 1e-5,
pixel-averaged loss; it does not name the optimiser) are `--config.optim.name=adam
--config.optim.lr=1e-5 --config.loss.reduction=mean`.

Staged training (the reference, and the report's "training in sequence", Table II): train 32s,
then 16s with --config.init_from=<32s workdir>, then 8s from the 16s run (and 4s from 8s).
Without init_from each stage starts from VGG16 (the report's "training separately").

Pretrained VGG16 (required, checked before anything is built): the Caffe VGG16 that FCN starts
from, as pytorch-fcn's vgg16_from_caffe.pth (torchfcn.models.VGG16(pretrained=True) downloads
it), converted once:
  python -m cpjax.tools.convert --from=vgg16_from_caffe.pth --model=vgg16_caffe \
      --out=weights/vgg16_caffe
and passed as --config.model.vgg_init=weights/vgg16_caffe (converted directories are the one
format read; see cpjax/tasks/fcn.py). --config.init_from=DIR
(an earlier stage's workdir, or a converted pytorch-fcn checkpoint: --model=fcn32s|fcn16s|fcn8s)
also does; --config.model.vgg_init=random trains from random weights, if asked for explicitly.
"""
from __future__ import annotations

import ml_collections

from cpjax.models import vgg
from cpjax.train import defaults
from data_pipelines import pipeline, synthetic_segmentation, voc

NO_DATA = ("configs/fcn_voc.py needs PASCAL VOC 2012: pass --config.data.source=voc:/path/to/"
           "VOCdevkit/VOC2012:train and --config.eval.source=voc:/path/to/VOCdevkit/VOC2012:val "
           "(download VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/"
           "voc2012/). To try FCN without a dataset, run configs/fcn_demo.py.")
VARIANTS = ("32s", "16s", "8s", "4s")
QUICK_VARIANTS = ("224",) + tuple(f"{v}_224" for v in VARIANTS)
# Reference learning rates per stage (pixel-summed loss, batch 1).
SGD_LR = {"32s": 1e-10, "16s": 1e-12, "8s": 1e-14, "4s": 1e-14}
REFERENCE_STEPS = 100_000         # pytorch-fcn max_iteration
REFERENCE_EVERY = 4_000           # pytorch-fcn interval_validate
FULL_SIZE = 500                   # the largest side of a VOC / SBD image
VOC_TRAIN_IMAGES = 1464           # ImageSets/Segmentation/train.txt
# The Caffe VGG16 mean as an 8-bit RGB colour: padding that the network sees as zeros.
MEAN_RGB = tuple(round(v) for v in reversed(vgg.CAFFE_MEAN_BGR))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  if arg and arg not in VARIANTS + QUICK_VARIANTS + ("tiny",):
    raise ValueError(f"unknown variant {arg!r} of configs/fcn_voc.py; use one of "
                     f"{', '.join(VARIANTS + QUICK_VARIANTS)}, tiny.")
  stage = arg.removesuffix("_224") if arg not in ("", "224", "tiny") else "32s"
  c = defaults.trainer_config()
  c.task = "fcn"
  c.batch_size = 1
  c.total_steps = REFERENCE_STEPS
  c.init_from = ""                       # workdir of the previous stage (staged training)
  c.data = pipeline.default_data_config()
  c.data.source = ""
  c.data.missing_hint = NO_DATA
  c.data.image_size = FULL_SIZE          # whole images, padded to one shape
  c.data.resize = 0
  c.data.augment = "pad"
  c.data.pad_color = MEAN_RGB
  c.data.flip = False                    # no augmentation (report, reference)
  c.model = dict(
      variant="8s" if arg == "tiny" else stage,
      classes=voc.CLASSES,               # 21: background + 20 object classes
      widths=(64, 128, 256, 512, 512),   # VGG16
      fc_width=4096,                     # fc6 (7x7), fc7 (1x1)
      dropout=0.5,
      dtype="float32",
      vgg_init="",                       # converted vgg16_caffe (required), or 'random'
  )
  c.loss = dict(reduction="sum")         # reference: summed over pixels
  c.optim = dict(name="sgd", lr=SGD_LR[stage], momentum=0.99, b1=0.9, b2=0.999,
                 weight_decay=5e-4, bias_lr_mult=2.0)
  c.log_every_steps = 100
  c.sample_every_steps = REFERENCE_EVERY
  c.checkpoint.every_steps = REFERENCE_EVERY
  c.eval.mode = "pad"                    # whole images, as in training
  c.eval.num_examples = 1449             # VOC 2012 val
  c.eval.batch_size = 8
  c.eval.every_steps = REFERENCE_EVERY
  if arg in QUICK_VARIANTS:
    at_224(c)
  if arg == "tiny":
    shrink_for_tests(c, source="seg_samples:train", eval_source="seg_samples:eval",
                     classes=synthetic_segmentation.CLASSES)
  return c


def at_224(c: ml_collections.ConfigDict, batch_size: int = 8) -> None:
  """The quick 224 px variant (module docstring): 30 epochs of VOC train at batch 8, lr x 8."""
  c.batch_size = batch_size
  c.total_steps = 30 * VOC_TRAIN_IMAGES // batch_size   # report: 30 epochs
  c.data.image_size, c.data.resize = 224, (224, 224)    # report: every image 224 x 224
  c.data.augment = "crop"                # the whole resized image
  c.optim.lr *= batch_size               # the batch-averaged loss: x batch, per image as batch 1
  c.log_every_steps = 50
  c.sample_every_steps = c.checkpoint.every_steps = c.eval.every_steps = 1000
  c.eval.mode = "resize"                 # report: evaluated at 224 x 224 too


def shrink_for_tests(c: ml_collections.ConfigDict, *, source: str, eval_source: str,
                     classes: tuple[str, ...]) -> None:
  """The same code path with a narrow FCN-8s from random weights, a few steps and the synthetic
  data (CPU seconds)."""
  c.total_steps, c.batch_size = 4, 8
  c.data.source, c.data.image_size, c.data.resize = source, 32, 0
  c.data.augment, c.data.flip, c.data.workers = "crop", True, 0
  c.model.classes = classes
  c.model.widths, c.model.fc_width = (4, 4, 8, 8, 8), 16
  c.model.vgg_init = "random"
  c.loss.reduction = "mean"
  c.optim.name, c.optim.lr = "adam", 1e-3
  c.log_every_steps = 2
  c.sample_every_steps = 0
  c.checkpoint.every_steps = 2
  c.eval.source, c.eval.mode = eval_source, "center"
  c.eval.num_examples, c.eval.batch_size = 8, 8
  c.eval.every_steps = 0
