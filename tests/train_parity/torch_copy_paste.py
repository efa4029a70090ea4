"""Smart copy-paste's networks and training step in PyTorch, written from the paper and the
architecture cpjax documents (not a test module). No reference code exists for the paper.

Losses (paper sec. 3.3), with Y = (G(X) + T(I)) M + I (1 - M) and X = (I (1 - M) + T(I) M, M):
  eq. 5  L_WGAN-GP = E[D(Y)] - E[D(I)] + lambda E[(||grad_{I_u} D(I_u)||_2 - 1)^2],
         I_u = eps I + (1 - eps) Y, one eps ~ U(0, 1) per example (Gulrajani et al.), the
         norm over the example's image values;
  eq. 6  L_rec = mean |Y - I| over the image values;
  eq. 7  L = L_rec + alpha L_WGAN-GP + gamma E[D(I)^2], played as the usual two-player game:
         the critic minimises E[D(Y)] - E[D(I)] + lambda GP + gamma E[D(I)^2] (gamma being
         ProGAN's drift weight, the paper's [19], on the critic's unscaled loss), the generator
         minimises L_rec - alpha E[D(Y)] against the critic after its update.
Adam (beta1 0, beta2 0.9) for both networks; one critic step then one generator step.

Networks: the generator of `cpjax.models.copy_paste` (stem, stride-2 encoder levels, dilated
convs, decoder levels of a 4x4 stride-2 transposed conv + noise, U-Net concatenation, 3x3 conv,
each conv followed by leaky ReLU 0.2 and pixelwise feature normalisation (ProGAN's, eq. 4);
a linear 3x3 conv to RGB) and the global + local critic of `cpjax.models.critic` (Iizuka et al.:
5x5 stride-2 convs + leaky ReLU, flatten, dense + leaky ReLU per branch; the local branch on a
square patch around the mask, resampled bilinearly; a linear dense to one score). They are
functions of parameter trees in flax's layout (conv kernels [kh, kw, in, out], dense kernels
[in, out], flattening in H, W, C order), so both frameworks train the same tensors.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

Params = dict[str, Any]
SLOPE = 0.2   # leaky ReLU


def tensors(tree: Any, requires_grad: bool = True) -> Any:
  """A nested dict of arrays as float32 torch leaves."""
  if isinstance(tree, dict):
    return {k: tensors(v, requires_grad) for k, v in tree.items()}
  return torch.tensor(np.asarray(tree), dtype=torch.float32, requires_grad=requires_grad)


def leaves(tree: Params) -> list[torch.Tensor]:
  return [x for v in tree.values() for x in (leaves(v) if isinstance(v, dict) else [v])]


def arrays(tree: Params, grads: bool = False) -> Any:
  """The leaves' values (or their .grad) as NumPy, same nesting."""
  return {k: arrays(v, grads) if isinstance(v, dict) else
          (v.grad if grads else v).detach().numpy().copy() for k, v in tree.items()}


def conv(p: Params, x: torch.Tensor, stride: int = 1, padding: int = 0,
         dilation: int = 1) -> torch.Tensor:
  return F.conv2d(x, p["kernel"].permute(3, 2, 0, 1), p["bias"], stride, padding, dilation)


def up_conv(p: Params, x: torch.Tensor) -> torch.Tensor:
  """flax ConvTranspose(k4, s2, 'SAME'): the input dilated by 2 correlated with the kernel;
  PyTorch's ConvTranspose2d(4, 2, padding=1) is the adjoint of a correlation, so the kernel is
  flipped spatially (and laid out [in, out, kh, kw])."""
  weight = p["kernel"].flip(0, 1).permute(2, 3, 0, 1)
  return F.conv_transpose2d(x, weight, p["bias"], stride=2, padding=1)


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
  return x / torch.sqrt((x * x).mean(1, keepdim=True) + 1e-8)


def act(x: torch.Tensor) -> torch.Tensor:
  return pixel_norm(F.leaky_relu(x, SLOPE))


def generator(p: Params, x: torch.Tensor, noise: Callable[[str], torch.Tensor],
              dilations: tuple[int, ...]) -> torch.Tensor:
  """G(X): [B, 4, H, W] -> residuals [B, 3, H, W]. noise(name) gives decoder level `name`'s
  noise image [B, 1, 2h, 2w]."""
  levels = sum(1 for k in p if k.startswith("encoder_")) - 1
  h = act(conv(p["encoder_0"]["conv"], x, padding=1))
  skips = [h]
  for level in range(1, levels + 1):
    e = p[f"encoder_{level}"]
    h = act(conv(e["down"]["conv"], h, stride=2, padding=1))
    h = act(conv(e["conv"]["conv"], h, padding=1))
    skips.append(h)
  for i, rate in enumerate(dilations):
    h = act(conv(p[f"dilated_{i}"]["conv"], h, padding=rate, dilation=rate))
  for level in range(levels, 0, -1):
    d = p[f"decoder_{level}"]
    h = up_conv(d["upconv"]["conv"], h)
    h = act(h + d["upconv"]["noise"]["weight"].view(1, -1, 1, 1) * noise(f"decoder_{level}"))
    h = act(conv(d["conv"]["conv"], torch.cat([h, skips[level - 1]], 1), padding=1))
  return conv(p["to_rgb"], h, padding=1)


def branch(p: Params, x: torch.Tensor) -> torch.Tensor:
  """One critic branch: [B, C, H, W] -> [B, dense width]."""
  for i in range(sum(1 for k in p if k.startswith("conv_"))):
    x = F.leaky_relu(conv(p[f"conv_{i}"], x, stride=2, padding=2), SLOPE)
  x = x.permute(0, 2, 3, 1).flatten(1)
  return F.leaky_relu(x @ p["dense"]["kernel"] + p["dense"]["bias"], SLOPE)


def local_boxes(mask: np.ndarray, margin: float = 0.25, min_side: float = 8.0) -> np.ndarray:
  """[B, H, W, 1] masks -> [B, 4] boxes (y0, x0, y1, x1), edges in pixel units: a square around
  the mask's bounding box, its side the longer box side x (1 + margin), clipped to
  [min_side, the shorter image side], shifted inside the image."""
  b, height, width, _ = mask.shape
  boxes = np.zeros((b, 4))
  short = min(height, width)
  for i in range(b):
    rows, cols = np.nonzero(mask[i, :, :, 0] > 0.5)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = np.clip(max(y1 - y0, x1 - x0) * (1 + margin), min(min_side, short), short)
    top = np.clip((y0 + y1 - side) / 2, 0, height - side)
    left = np.clip((x0 + x1 - side) / 2, 0, width - side)
    boxes[i] = top, left, top + side, left + side
  return boxes


def resampling_matrix(start: float, end: float, size: int, length: int) -> np.ndarray:
  """[size, length] bilinear weights: output sample k sits at the centre of the k-th of `size`
  equal cells of [start, end] (pixel i's centre is at i + 0.5); positions beyond the first or
  last pixel centre take that pixel."""
  centres = start + (np.arange(size) + 0.5) * (end - start) / size - 0.5
  centres = np.clip(centres, 0, length - 1)
  low = np.floor(centres).astype(int)
  high = np.minimum(low + 1, length - 1)
  frac = centres - low
  m = np.zeros((size, length))
  m[np.arange(size), low] += 1 - frac
  m[np.arange(size), high] += frac
  return m


def critic(p: Params, image: torch.Tensor, condition: torch.Tensor, mask: np.ndarray,
           local_size: int) -> torch.Tensor:
  """D(image | condition, mask): [B, 3, H, W], [B, 4, H, W], NumPy [B, H, W, 1] -> [B]."""
  x = torch.cat([image, condition], 1)
  g = branch(p["global_branch"], x)
  patches = []
  for i, (y0, x0, y1, x1) in enumerate(local_boxes(mask)):
    rows = torch.tensor(resampling_matrix(y0, y1, local_size, x.shape[2]), dtype=x.dtype)
    cols = torch.tensor(resampling_matrix(x0, x1, local_size, x.shape[3]), dtype=x.dtype)
    patches.append(rows @ x[i] @ cols.T)
  loc = branch(p["local_branch"], torch.stack(patches))
  return (torch.cat([g, loc], 1) @ p["output"]["kernel"] + p["output"]["bias"])[:, 0]


def gradient_penalty(score: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
  """E[(||grad D(I_u)||_2 - 1)^2] at I_u = eps I + (1 - eps) Y; eps [B]."""
  e = eps.view(-1, 1, 1, 1)
  interpolates = (e * real + (1 - e) * fake).detach().requires_grad_(True)
  grads, = torch.autograd.grad(score(interpolates).sum(), interpolates, create_graph=True)
  return ((grads.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, gp: torch.Tensor, gp_lambda: float,
                gamma: float) -> torch.Tensor:
  """eq. 5 plus the drift term of eq. 7."""
  return d_fake.mean() - d_real.mean() + gp_lambda * gp + gamma * (d_real ** 2).mean()


def generator_loss(y: torch.Tensor, image: torch.Tensor, d_fake: torch.Tensor,
                   alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
  """(L_rec - alpha E[D(Y)], L_rec) with L_rec of eq. 6."""
  rec = (y - image).abs().mean()
  return rec - alpha * d_fake.mean(), rec
