"""pytorch-fcn's FCN-8s at any trunk width, and its state dict in cpjax's FCN layout (not a test
module).

The network is pytorch-fcn's `FCN8s` (layer names, conv1_1 padded by 100, 2x2 max-pools in ceil
mode, fc6 a 7x7 valid conv, Dropout2d after fc6 and fc7, score layers, transposed convs without
bias, crops at 5, 9 and 31) with the VGG16 widths and the fc width as arguments, so a training
parity test can run it narrow. `flax_params` lays a state dict out as cpjax's `FCN` parameters
with the rules of `cpjax.convert.fcn` (which checks them against the full-size network only).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cpjax.convert.state_dict import StateDict, conv_kernel
from cpjax.convert.vgg import trunk
from cpjax.models.vgg import CONV_NAMES, CONVS_PER_BLOCK

SKIPS = (("score_pool4", 4, 5), ("score_pool3", 3, 9))   # (layer, pool it reads, crop offset)
UPSCORES = (("upscore2", 2), ("upscore_pool4", 2), ("upscore8", 8))   # (layer, stride)
FINAL_CROP = 31


class FCN8s(nn.Module):
  """pytorch-fcn FCN8s with VGG16 block widths `widths` and fc6 / fc7 width `fc_width`."""

  def __init__(self, n_class: int, widths: tuple[int, ...], fc_width: int):
    super().__init__()
    channels = 3
    block_widths = [w for n, w in zip(CONVS_PER_BLOCK, widths) for _ in range(n)]
    for name, width in zip(CONV_NAMES, block_widths):
      setattr(self, name, nn.Conv2d(channels, width, 3, padding=100 if name == "conv1_1" else 1))
      channels = width
    self.fc6 = nn.Conv2d(widths[-1], fc_width, 7)
    self.drop6 = nn.Dropout2d()
    self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
    self.drop7 = nn.Dropout2d()
    self.score_fr = nn.Conv2d(fc_width, n_class, 1)
    self.score_pool4 = nn.Conv2d(widths[3], n_class, 1)
    self.score_pool3 = nn.Conv2d(widths[2], n_class, 1)
    for name, stride in UPSCORES:
      setattr(self, name, nn.ConvTranspose2d(n_class, n_class, 2 * stride, stride=stride,
                                             bias=False))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] Caffe-preprocessed BGR -> [B, K, H, W] scores."""
    pools, h = {}, x
    for block in range(1, 6):
      for i in range(1, CONVS_PER_BLOCK[block - 1] + 1):
        h = torch.relu(getattr(self, f"conv{block}_{i}")(h))
      h = nn.functional.max_pool2d(h, 2, stride=2, ceil_mode=True)
      pools[block] = h
    h = self.drop6(torch.relu(self.fc6(h)))
    h = self.drop7(torch.relu(self.fc7(h)))
    h = self.score_fr(h)
    for (skip, pool, offset), (up, _) in zip(SKIPS, UPSCORES):
      h = getattr(self, up)(h)
      s = getattr(self, skip)(pools[pool])
      h = h + s[:, :, offset:offset + h.shape[2], offset:offset + h.shape[3]]
    h = self.upscore8(h)
    return h[:, :, FINAL_CROP:FINAL_CROP + x.shape[2], FINAL_CROP:FINAL_CROP + x.shape[3]]


def flax_params(state: dict[str, np.ndarray]) -> dict[str, Any]:
  """An FCN8s state dict as cpjax `FCN(variant='8s')` parameters (every key used)."""
  sd = StateDict(state)
  params = {"vgg": trunk(sd, {name: name for name in CONV_NAMES})}
  for name in ("fc6", "fc7", "score_fr", "score_pool4", "score_pool3"):
    params[name] = sd.conv(name)
  for name, _ in UPSCORES:   # transposed convs with transpose_kernel=True: a conv's layout
    params[name] = {"kernel": conv_kernel(sd.take(f"{name}.weight"))}
  sd.check_all_used()
  return params
