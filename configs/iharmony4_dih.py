"""DIH (Tsai et al. 2017) with the joint scene-parsing decoder, 512 px. Variants: '' (stage 2:
harmonisation fine-tuning on iHarmony4), 'joint' (stage 1: ADE20K, joint loss), 'tiny'.

The paper trains in two stages (sec. 3.3): (1) on ADE20K with lambda1 L_rec + lambda2 CE
(lambda1 = 1, lambda2 = 100); (2) the scene-parsing decoder fixed, lambda2 = 0, on the
harmonisation pairs. Run both in one work directory; the step decides the stage:
  python -m cpjax.main --config=configs/iharmony4_dih.py:joint --workdir=DIR \
      --config.data.source=ade20k:/data/ADEChallengeData2016:train
  python -m cpjax.main --config=configs/iharmony4_dih.py --workdir=DIR \
      --config.data.source=iharmony4:/data/iHarmony4:train \
      --config.eval.source=iharmony4:/data/iHarmony4:test
On ADE20K the harmonisation problems are synthesised on device (T_color inside a random
rectangle; the paper used colour transfer between same-class objects).

Network and input space: the released Caffe net (deploy_512.prototxt): conv0-6, fc7, a
scene-parsing decoder with a deconv + 1x1 head, a harmonisation decoder that concatenates the
parsing features at every level but the last (`cpjax.models.dih.DIH`), fed as the deploy net
is: BGR on 0..255 minus the ImageNet mean and mask * 255 - 128 (model.input_space='caffe_bgr').
The reconstruction MSE is computed in that space (0..255 scale), as the Caffe training did, which
is also the scale at which the paper's lambda2 = 100 balances the cross-entropy. The model
fields equal those of the converted release, so `python -m cpjax.tools.convert
--model=dih512` weights run with this config (`--config.init_from=DIR`, or DIR as a tool's
--workdir).

Optimiser: the paper uses Caffe SGD at lr 1e-8 on summed losses; like the foreground-aware
paper's DIH baseline (saic-vul's dih256) we use Adam with the mean loss. stage1_steps (the
joint stage's length) is not given by the paper: ours is about 40 ADE20K epochs.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

idih = defaults.load_sibling(__file__, "iharmony4_idih")

ADE20K_TRAIN = 20210
STAGE1_STEPS = 40 * -(-ADE20K_TRAIN // idih.BATCH)   # 50_560

NO_ADE20K = ("configs/iharmony4_dih.py:joint needs ADE20K: pass "
             "--config.data.source=ade20k:/path/to/ADEChallengeData2016:train (download "
             "ADEChallengeData2016.zip from http://sceneparsing.csail.mit.edu/).")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = idih.get_config()
  c.data.image_size = 512                    # paper: 512 x 512 input
  c.model = dict(name="dih", depth=7, ch=64, max_channels=512,
                 fc_features=1024,           # fc7 bottleneck of the deploy net
                 parsing_classes=26,         # top-25 ADE20K labels + other
                 input_space="caffe_bgr",    # the deploy net's BGR - mean, mask * 255 - 128
                 dtype="float32")
  c.loss = dict(name="mse",                  # the paper's L2 over the whole image
                min_area=1000.0, lambda1=1.0, lambda2=100.0, stage1_steps=STAGE1_STEPS)
  c.total_steps = STAGE1_STEPS + 120 * idih.STEPS_PER_EPOCH
  c.optim.milestones = tuple(STAGE1_STEPS + e * idih.STEPS_PER_EPOCH for e in (105, 115))
  if arg == "joint":
    c.total_steps = STAGE1_STEPS
    c.data.missing_hint = NO_ADE20K
    c.data.keep_foreground = ""              # ADE20K items have no mask field
  elif arg == "tiny":
    idih.shrink_for_tests(c)
    c.model.depth = 3                        # 32 px -> 4x4 before fc7 (side 2**(depth + 2))
    c.model.fc_features = 16
    c.loss.stage1_steps = 2
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of configs/iharmony4_dih.py; use '', 'joint' or "
                     "'tiny'.")
  return c
