"""iDIH-HRNet on iHarmony4 at 256 px (foreground-aware harmonisation paper, Fig. 3; reference
fixed256 hrnet18s_idih / hrnet18_idih / hrnet32_idih). Variants: 'w18s' (default), 'w18',
'w32', 'tiny'.

The HRNetV2 + OCR backbone (`cpjax.models.hrnet`) sees the same normalised image and mask; its
128-channel OCR features join the iDIH encoder after block 1. The HRNet trunk trains at 0.1x the
learning rate, the OCR head and the mask-fusion conv at 1x. HRNet variants: 180 epochs, x0.1 at
160 and 175. ImageNet-pretrained HRNet weights (HRNet-Image-Classification) are loaded by the
checkpoint-conversion tools, not by this config: from scratch the trunk is randomly initialised.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

idih = defaults.load_sibling(__file__, "iharmony4_idih")

WIDTHS = ("w18s", "w18", "w32")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = idih.get_config()
  c.model = dict(name="idih_hrnet", hrnet_width=arg if arg in WIDTHS else "w18s",
                 depth=7, ch=64, max_channels=512, batchnorm_from=2,
                 downsize_backbone_input=False,     # True for the reference's 512-px models
                 backbone_init="",    # a converted hrnet_w18s / _w18 / _w32: ImageNet trunk
                 dtype="float32")
  c.total_steps = 180 * idih.STEPS_PER_EPOCH
  c.optim.milestones = (160 * idih.STEPS_PER_EPOCH, 175 * idih.STEPS_PER_EPOCH)
  c.optim.backbone_lr_mult = 0.1             # whole HRNet trunk x0.1; OCR and mask fusion x1
  if arg == "tiny":
    idih.shrink_for_tests(c)                 # 32 px: HRNet branches at 8, 4, 2, 1 px
  elif arg and arg not in WIDTHS:
    raise ValueError(f"unknown variant {arg!r} of configs/iharmony4_idih_hrnet.py; use '', "
                     "'w18s', 'w18', 'w32' or 'tiny'.")
  return c
