"""iDIH-HRNet on iHarmony4 at 256 px (foreground-aware harmonisation paper, Fig. 3; reference
fixed256 hrnet18s_idih / hrnet18_idih / hrnet32_idih). Variants: 'w18s' (default), 'w18',
'w32', 'w18s_v2p', 'w18_v2p', 'w18s_no_mask', 'tiny'.

The HRNetV2 + OCR backbone (`cpjax.models.hrnet`) sees the same normalised image and mask; its
128-channel OCR features join the iDIH encoder after block 1. The HRNet trunk trains at 0.1x the
learning rate, the OCR head and the mask-fusion conv at 1x. HRNet variants: 180 epochs, x0.1 at
160 and 175.

The trunk starts from ImageNet weights (HRNet/HRNet-Image-Classification), converted once and
named by --config.model.backbone_init; a run without them stops at once with the file and the
command, e.g. for w18s:
  python -m cpjax.tools.convert --from=hrnet_w18_small_model_v2.pth --model=hrnet_w18s \
      --out=weights/hrnet_w18s
  python -m cpjax.main --config=configs/iharmony4_idih_hrnet.py:w18s ... \
      --config.model.backbone_init=weights/hrnet_w18s
(w18: hrnetv2_w18_imagenet_pretrained.pth, --model=hrnet_w18; w32: hrnetv2_w32_...,
--model=hrnet_w32). --config.init_from=DIR (a converted hrnet*_idih256: the whole network) also
does; --config.model.backbone_init=random trains the trunk from random weights ('tiny' does).

'w18s_v2p' / 'w18_v2p' (reference hrnet18s_v2p_idih / hrnet18_v2p_idih; the paper's "pass features
using feature pyramid" ablation, Table 2): the OCR features become a feature pyramid of 256-channel
maps joined after encoder blocks 1-4 (`cpjax.models.dih.FeaturePyramid`) instead of one map.

'w18s_no_mask' (reference hrnet18s_no_mask_idih, mask_fusion=''; the paper's "non
foreground-aware HRNet" ablation, Table 3): the HRNet trunk gets no mask-fusion conv and sees
the image alone (model.mask_fusion=False); the iDIH still takes the mask, and so does the OCR
head's soft object regions, as in the reference.
"""
from __future__ import annotations

import ml_collections

from cpjax.train import defaults

idih = defaults.load_sibling(__file__, "iharmony4_idih")

# variant -> (HRNetV2 width, pyramid_channels: 256 in the reference's V2p models, 0 = one map,
# mask_fusion)
VARIANTS = {"w18s": ("w18s", 0, True), "w18": ("w18", 0, True), "w32": ("w32", 0, True),
            "w18s_v2p": ("w18s", 256, True), "w18_v2p": ("w18", 256, True),
            "w18s_no_mask": ("w18s", 0, False)}


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = idih.get_config()
  width, pyramid_channels, mask_fusion = VARIANTS.get(arg, VARIANTS["w18s"])
  c.model = dict(name="idih_hrnet", hrnet_width=width,
                 depth=7, ch=64, max_channels=512, batchnorm_from=2,
                 downsize_backbone_input=False,     # True for the reference's 512-px models
                 pyramid_channels=pyramid_channels,  # feature pyramid after blocks 1-4; 0: off
                 mask_fusion=mask_fusion,   # the trunk's mask-fusion conv (foreground-aware)
                 backbone_init="",    # converted hrnet_w18s / _w18 / _w32 (required), 'random'
                 input_space="imagenet",
                 dtype="float32")
  c.total_steps = 180 * idih.STEPS_PER_EPOCH
  c.optim.milestones = (160 * idih.STEPS_PER_EPOCH, 175 * idih.STEPS_PER_EPOCH)
  c.optim.backbone_lr_mult = 0.1   # whole HRNet trunk x0.1; OCR, mask fusion, pyramid x1
  if arg == "tiny":
    idih.shrink_for_tests(c)                 # 32 px: HRNet branches at 8, 4, 2, 1 px
    c.model.backbone_init = "random"
  elif arg and arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of configs/iharmony4_idih_hrnet.py; use '', "
                     "'w18s', 'w18', 'w32', 'w18s_v2p', 'w18_v2p', 'w18s_no_mask' or 'tiny'.")
  return c
