"""Copy-and-Paste Networks' training losses in PyTorch (not a test module), from the paper
(Lee et al. 2019, sec. 3.1 and 4.1) and the works it takes them from; no reference training
code exists. NCHW tensors; frames in [0, 1].

  L_align  the L1 distance between the target frame X_t and each aligned reference X_{r->t}
           over the pixels valid in both (V_t V_{r->t}), as a mean over those pixels and the
           3 channels, then over references and examples;
  L_valid, L_hole^vis, L_hole^invis   the L1 distance between the decoder output Y and the
           ground truth on the non-hole pixels, on the hole pixels some reference sees and on
           those none sees (C, the context-matching mask resized to the frame, used as a mask),
           each summed over its pixels and divided by the number of values of Y (Liu et al.'s
           normalisation, so the three add up to the plain L1 mean);
  L_prc    sum over VGG16 pooling layers p of the mean |psi_p(Y_comp) - psi_p(Y_gt)|, Y_comp =
           Y in the hole, the input elsewhere (Johnson et al.; L1 as Liu et al.);
  L_style  sum over p of the mean |K_p(Y_comp) - K_p(Y_gt)|, K_p = psi_p^T psi_p / (C_p H_p W_p)
           the Gram matrix (Johnson et al.), the mean over its C_p^2 entries (Liu et al.);
  L_tv     the anisotropic total variation of Y_comp: mean |vertical differences| + mean
           |horizontal differences| (Johnson et al.'s smoothing term, L1).
VGG16 (torchvision's convolutional trunk: 3x3 convs padded by 1, ReLU, 2x2 max-pools) sees
ImageNet-normalised RGB.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cpjax.models.vgg import CONVS_PER_BLOCK
from cpjax.ops.color import IMAGENET_MEAN, IMAGENET_STD


def align_loss(target: torch.Tensor, aligned: torch.Tensor, visible: torch.Tensor,
               hole: torch.Tensor) -> torch.Tensor:
  """target [B, 3, H, W], aligned [B, T, 3, H, W], visible [B, T, 1, H, W] (aligned
  references' visibility), hole [B, 1, H, W] (target's)."""
  joint = (1.0 - hole)[:, None] * visible
  err = (joint * (target[:, None] - aligned).abs()).sum((2, 3, 4))
  return (err / torch.clamp_min(3.0 * joint.sum((2, 3, 4)), 1.0)).mean()


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
  return (weight * (pred - target).abs()).sum() / pred.numel()


def vgg_features(params: dict[str, Any], image: torch.Tensor,
                 layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
  """Pooling outputs of VGG16 with flax-layout parameters {'conv1_1': {'kernel', 'bias'}, ...}."""
  mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
  x, out = (image - mean) / std, {}
  for block, convs in enumerate(CONVS_PER_BLOCK, 1):
    for i in range(1, convs + 1):
      p = params[f"conv{block}_{i}"]
      x = F.relu(F.conv2d(x, p["kernel"].permute(3, 2, 0, 1), p["bias"], padding=1))
    x = F.max_pool2d(x, 2)
    out[f"pool{block}"] = x
    if all(name in out for name in layers):
      return out
  return out


def gram(x: torch.Tensor) -> torch.Tensor:
  b, c, h, w = x.shape
  flat = x.reshape(b, c, h * w)
  return flat @ flat.transpose(1, 2) / (c * h * w)


def terms(pred: torch.Tensor, aligned: torch.Tensor, visible: torch.Tensor,
          c_mask: torch.Tensor, ex: dict[str, torch.Tensor], vgg: dict[str, Any] | None,
          layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
  """Every loss of the module docstring. ex: 'gt', 'hole', 'target_in' (the target frame with
  its hole filled) [B, C, H, W]; c_mask [B, 1, H/4, W/4] (1 = seen by no reference)."""
  gt, hole = ex["gt"], ex["hole"]
  unseen = F.interpolate(c_mask, size=gt.shape[-2:], mode="bilinear", align_corners=False)
  comp = pred * hole + gt * (1.0 - hole)
  out = {"align": align_loss(ex["target_in"], aligned, visible, hole),
         "valid": masked_l1(pred, gt, 1.0 - hole),
         "hole_visible": masked_l1(pred, gt, hole * (1.0 - unseen)),
         "hole_invisible": masked_l1(pred, gt, hole * unseen),
         "tv": ((comp[:, :, 1:] - comp[:, :, :-1]).abs().mean()
                + (comp[..., 1:] - comp[..., :-1]).abs().mean())}
  if vgg is not None:
    f_comp, f_gt = vgg_features(vgg, comp, layers), vgg_features(vgg, gt, layers)
    out["perceptual"] = sum((f_comp[p] - f_gt[p]).abs().mean() for p in layers)
    out["style"] = sum((gram(f_comp[p]) - gram(f_gt[p])).abs().mean() for p in layers)
  return out
