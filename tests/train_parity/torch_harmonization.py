"""saic-vul/image_harmonization's training step rebuilt in PyTorch, and shared pieces of the
iDIH / iDIH-HRNet training-parity tests (not a test module).

The reference trainer (`SimpleHTrainer` with the fixed256 configs), as facts:
  - input: the composite ToTensor'd (uint8 / 255) and ImageNet-normalised, concatenated with the
    mask in [0, 1]; the target normalised the same way; the whole network in train() mode
    (BatchNorm: batch statistics, running averages updated with momentum 0.1 and PyTorch's
    unbiased batch variance; the OCR head's Dropout2d on);
  - loss `MaskWeightedMSE(min_area)`: per sample sum_{C,H,W} (pred - target)^2 /
    (C * max(sum_{H,W} mask, min_area)), then the batch mean (`fn_mse` below, written from that
    formula);
  - Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8, one parameter group per tensor: lr x lr_mult,
    where HRNet's `LRMult(0.1)` marks every weight and bias of the HRNet (`backbone.hrnet`)
    and `LRMult(1.0)` then re-marks its OCR modules (`conv3x3_ocr`, `ocr_distri_head`; the
    gather head has no parameters); the mask-fusion conv and the iDIH are outside it (x1).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

from conftest import jit_unoptimized
from cpjax.convert.hrnet import module_variables
from cpjax.convert.state_dict import StateDict
from cpjax.ops.color import IMAGENET_MEAN, IMAGENET_STD
from cpjax.tasks import harmonization
from convert import torch_iharm as ti
from train_parity import torch_train as tt

HRNET_OCR = ("backbone.hrnet.conv3x3_ocr.", "backbone.hrnet.ocr_distri_head.")


def real_pairs(steps: int, batch: int, size: int, seed: int) -> list[dict[str, np.ndarray]]:
  """iHarmony4-like batches: 'real' = bundled photos (`torch_train.photos`), 'mask' = a
  rectangle per image (uint8 0 / 255; the last image's is 2 x 3 pixels, below any min_area),
  'image' = the real photo with a random per-channel gain and offset inside the mask."""
  r = np.random.default_rng(seed)
  out = []
  for step in range(steps):
    real = tt.photos(batch, size, step * batch).astype(np.float32) / 255.0
    mask = np.zeros((batch, size, size, 1), np.float32)
    for i in range(batch):
      h, w = r.integers(size // 16, size // 2, 2) if i < batch - 1 else (2, 3)
      y, x = r.integers(0, size - h), r.integers(0, size - w)
      mask[i, y:y + h, x:x + w] = 1.0
    gain = r.uniform(0.6, 1.4, (batch, 1, 1, 3))
    offset = r.uniform(-0.2, 0.2, (batch, 1, 1, 3))
    comp = np.clip(real * (1 - mask) + mask * (real * gain + offset), 0.0, 1.0)
    out.append({"image": np.round(comp * 255).astype(np.uint8),
                "real": np.round(real * 255).astype(np.uint8),
                "mask": (mask * 255).astype(np.uint8)})
  return out


def fn_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
           min_area: float) -> torch.Tensor:
  """The foreground-normalised MSE of the paper (eq. 2), NCHW, batch mean."""
  err = ((pred - target) ** 2).sum((1, 2, 3))
  return (err / (pred.shape[1] * torch.clamp_min(mask.sum((1, 2, 3)), min_area))).mean()


def _normalize(image_uint8: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
  mean = torch.tensor(IMAGENET_MEAN, dtype=dtype).view(1, 3, 1, 1)
  std = torch.tensor(IMAGENET_STD, dtype=dtype).view(1, 3, 1, 1)
  return (tt.nchw(image_uint8.astype(np.float32) / 255.0).to(dtype) - mean) / std


def lr_groups(model: torch.nn.Module, lr: float, hrnet_mult: float) -> list[dict[str, Any]]:
  """Adam parameter groups of the reference: HRNet (but its OCR head) at lr x hrnet_mult."""
  def in_trunk(name: str) -> bool:
    return name.startswith("backbone.hrnet.") and not name.startswith(HRNET_OCR)
  named = list(model.named_parameters())
  return [{"params": [p for n, p in named if not in_trunk(n)], "lr": lr},
          {"params": [p for n, p in named if in_trunk(n)], "lr": lr * hrnet_mult}]


def reference_training(model: torch.nn.Module, groups: list[dict[str, Any]],
                       batches: Sequence[dict[str, np.ndarray]], min_area: float,
                       dtype: torch.dtype = torch.float32
                       ) -> tuple[list[float], list[dict[str, np.ndarray]]]:
  """The reference's training steps (module docstring) on `batches`: the loss of each step and
  the state dict after it. `dtype` float64 gives the exact training the float32 ones
  approximate (the model is cast)."""
  model.to(dtype).train()
  optimizer = torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8)
  losses, states = [], []
  with tt.one_thread():
    for batch in batches:
      mask = tt.nchw(batch["mask"].astype(np.float32) / 255.0).to(dtype)
      loss = fn_mse(model(_normalize(batch["image"], dtype), mask),
                    _normalize(batch["real"], dtype), mask, min_area)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
      losses.append(loss.item())
      states.append({k: v.copy() for k, v in ti.state_dict(model).items()})
  return losses, states


def converted(arrays: dict[str, np.ndarray], expected: Any, torch_name) -> dict[str, Any]:
  """A state dict in cpjax's layout, by the released-checkpoint rules of
  `cpjax.convert.harmonization` (`torch_name`: its flax-path -> state-dict-prefix rule)."""
  return module_variables(StateDict(arrays), expected, torch_name,
                          lambda path: path[-1] == "deconv")


def cpjax_training(task: harmonization.HarmonizationTask, variables: dict[str, Any],
                   batches: Sequence[dict[str, np.ndarray]]
                   ) -> tuple[list[harmonization.HarmonizationState], list[float]]:
  """cpjax's `train_step` (jitted, one compilation) from `variables` on `batches`: the state
  after each step and the loss of each step."""
  params = jax.tree.map(jnp.asarray, variables["params"])
  state = harmonization.HarmonizationState.create(
      apply_fn=task.model.apply, params=params, tx=task.tx,
      batch_stats=jax.tree.map(jnp.asarray, variables["batch_stats"]))
  step = jit_unoptimized(task.train_step).lower(state, batches[0], jax.random.key(0)).compile()
  states, losses = [], []
  for batch in batches:
    state, metrics = step(state, batch, jax.random.key(0))
    states.append(state)
    losses.append(float(metrics["loss"]))
  return states, losses


def biases_before_batchnorm(params: Any, batch_stats: Any) -> set[str]:
  """'/'-joined paths of the conv biases that a BatchNorm follows directly (iDIH blocks:
  conv|deconv -> bn; HRNet's ConvBN: '0' -> '1'). In training mode BatchNorm subtracts the
  batch mean, so their gradient is zero in exact arithmetic: both frameworks compute rounding
  noise of ~1e-9, which Adam (eps 1e-8) turns into moves of any size up to lr. Their values are
  therefore not compared."""
  candidates = set()
  for path in tt.flat(batch_stats):
    *parent, norm, _ = path.split("/")
    for conv in {"bn": ("conv", "deconv"), "1": ("0",)}.get(norm, ()):
      candidates.add("/".join(parent + [conv, "bias"]))
  return candidates & set(tt.flat(params))
