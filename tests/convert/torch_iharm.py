"""PyTorch reference networks for the harmonisation parity tests (not a test module).

Written for these tests from the reference code's layer specs and the foreground-aware
harmonisation paper, with the
state-dict layout of the released files: saic-vul/image_harmonization's `HRNetIHModel` /
`DeepImageHarmonization` (keys 'mask_conv.*', 'backbone.hrnet.*', 'model.encoder.*',
'model.decoder.*') and HRNet-Image-Classification's ImageNet networks (trunk keys plus the
classification head incre_modules / downsamp_modules / final_layer / classifier). Forward
semantics of the reference: PyTorch convs with padding k // 2, BatchNorm in eval mode (eps 1e-5,
running statistics), fusion upsampling bilinear with align_corners=True, OCR over the soft
regions cat(mask, 1 - mask), iDIH skips added, blending a = sigmoid(3 conv1x1(x)).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SPECS = {"w18s": (18, 2, (1, 3, 2)), "w18": (18, 4, (1, 4, 3)), "w32": (32, 4, (1, 4, 3))}
# Forward parity runs every width: HRNet compiles its eval-mode stages once each (scanned), so
# W18 / W32 take seconds on XLA:CPU, not the minutes of their unrolled modules.
WIDTHS = tuple(SPECS)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, relu: bool = False,
            bias: bool = False) -> nn.Sequential:
  layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias), nn.BatchNorm2d(cout)]
  return nn.Sequential(*layers, *([nn.ReLU()] if relu else []))


def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
  return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class Bottleneck(nn.Module):
  def __init__(self, cin: int, planes: int):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
    self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
    self.downsample = conv_bn(cin, 4 * planes, 1) if cin != 4 * planes else None

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class BasicBlock(nn.Module):
  def __init__(self, c: int):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
    self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)

  def forward(self, x):
    return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class HRModule(nn.Module):
  """Branches of basic blocks, then every branch fused into every other."""

  def __init__(self, ch: list[int], blocks: int):
    super().__init__()
    self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c) for _ in range(blocks)])
                                  for c in ch)
    rows = []
    for i in range(len(ch)):
      row = []
      for j in range(len(ch)):
        if j > i:
          row.append(conv_bn(ch[j], ch[i], 1))
        elif j == i:
          row.append(None)
        else:
          steps = i - j
          row.append(nn.Sequential(*[conv_bn(ch[j], ch[i] if k == steps - 1 else ch[j], 3, 2,
                                             relu=k < steps - 1) for k in range(steps)]))
      rows.append(nn.ModuleList(row))
    self.fuse_layers = nn.ModuleList(rows)

  def forward(self, xs):
    xs = [branch(x) for branch, x in zip(self.branches, xs)]
    out = []
    for i, row in enumerate(self.fuse_layers):
      y = xs[0] if i == 0 else row[0](xs[0])
      for j in range(1, len(xs)):
        y = y + (xs[j] if j == i else up(row[j](xs[j]), xs[i]) if j > i else row[j](xs[j]))
      out.append(F.relu(y))
    return out


class ObjectAttention(nn.Module):
  def __init__(self, c: int, key: int):
    super().__init__()
    proj = lambda cin, cout: [nn.Conv2d(cin, cout, 1, bias=False),  # noqa: E731
                              nn.Sequential(nn.BatchNorm2d(cout), nn.ReLU())]
    self.key = key
    self.f_pixel = nn.Sequential(*proj(c, key), *proj(key, key))
    self.f_object = nn.Sequential(*proj(c, key), *proj(key, key))
    self.f_down = nn.Sequential(*proj(c, key))
    self.f_up = nn.Sequential(*proj(key, c))

  def forward(self, x, proxy):
    b, _, h, w = x.shape
    query = self.f_pixel(x).view(b, self.key, -1).permute(0, 2, 1)
    key = self.f_object(proxy).view(b, self.key, -1)
    value = self.f_down(proxy).view(b, self.key, -1).permute(0, 2, 1)
    attention = F.softmax(self.key ** -0.5 * query @ key, dim=-1)
    return self.f_up((attention @ value).permute(0, 2, 1).reshape(b, self.key, h, w))


class SpatialOCR(nn.Module):
  def __init__(self, c: int = 128, key: int = 64):
    super().__init__()
    self.object_context_block = ObjectAttention(c, key)
    self.conv_bn_dropout = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False),
                                         nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()),
                                         nn.Dropout2d(0.05))

  def forward(self, feats, proxy):
    return self.conv_bn_dropout(torch.cat([self.object_context_block(feats, proxy), feats], 1))


class HRNet(nn.Module):
  """HRNetV2 trunk (+ the ImageNet classification head's parameters, + the OCR head)."""

  def __init__(self, width: str, classification_head: bool = False, ocr: bool = False):
    super().__init__()
    w, blocks, modules = SPECS[width]
    self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
    self.conv2, self.bn2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64)
    self.layer1 = nn.Sequential(Bottleneck(64, 64),
                                *[Bottleneck(256, 64) for _ in range(blocks - 1)])
    prev = [256]
    for s, n in zip((2, 3, 4), modules):
      ch = [w * 2**i for i in range(s)]
      setattr(self, f"transition{s - 1}", nn.ModuleList(
          (conv_bn(prev[i], c, 3, relu=True) if prev[i] != c else None) if i < len(prev)
          else nn.Sequential(conv_bn(prev[-1], c, 3, 2, relu=True)) for i, c in enumerate(ch)))
      setattr(self, f"stage{s}", nn.Sequential(*[HRModule(ch, blocks) for _ in range(n)]))
      prev = ch
    if classification_head:   # parameters only: the tests drop them
      head = [32, 64, 128, 256]
      self.incre_modules = nn.ModuleList(nn.Sequential(Bottleneck(c, h))
                                         for c, h in zip(prev, head))
      self.downsamp_modules = nn.ModuleList(
          nn.Sequential(nn.Conv2d(4 * a, 4 * b, 3, 2, 1), nn.BatchNorm2d(4 * b), nn.ReLU())
          for a, b in zip(head, head[1:]))
      self.final_layer = nn.Sequential(nn.Conv2d(1024, 2048, 1), nn.BatchNorm2d(2048), nn.ReLU())
      self.classifier = nn.Linear(2048, 1000)
    if ocr:
      self.conv3x3_ocr = conv_bn(sum(prev), 128, 3, relu=True, bias=True)
      self.ocr_distri_head = SpatialOCR()

  def features(self, x, additional=None):
    """[B, 3, H, W] -> [B, 15 w, H / 4, W / 4]: the four branches upsampled and concatenated."""
    x = F.relu(self.bn1(self.conv1(x)))
    if additional is not None:
      x = x + additional
    xs = [self.layer1(F.relu(self.bn2(self.conv2(x))))]
    for s in (2, 3, 4):
      transition = getattr(self, f"transition{s - 1}")
      xs = [(t(xs[i]) if t is not None else xs[i]) if i < len(xs) else t(xs[-1])
            for i, t in enumerate(transition)]
      xs = getattr(self, f"stage{s}")(xs)
    return torch.cat([xs[0]] + [up(x, xs[0]) for x in xs[1:]], 1)

  def forward(self, x, regions, additional):
    """OCR features [B, 128, H / 4, W / 4] of the image and soft regions [B, 2, H, W]."""
    feats = self.conv3x3_ocr(self.features(x, additional))
    probs = F.softmax(up(regions, feats).flatten(2), dim=2)                 # [B, K, HW]
    proxy = (probs @ feats.flatten(2).permute(0, 2, 1)).permute(0, 2, 1).unsqueeze(3)
    return self.ocr_distri_head(feats, proxy)


class Scale(nn.Module):
  def __init__(self, value: float = 0.1):
    super().__init__()
    self.scale = nn.Parameter(torch.full((1,), value))

  def forward(self, x):
    return x * self.scale.abs()


class Block(nn.Module):
  """conv or transposed conv -> BatchNorm (or none: nn.Identity) -> ELU, as 'block.{0,1,2}'."""

  def __init__(self, conv: nn.Module, cout: int, norm: bool):
    super().__init__()
    self.block = nn.Sequential(conv, nn.BatchNorm2d(cout) if norm else nn.Identity(), nn.ELU())

  def forward(self, x):
    return self.block(x)


class IDIH(nn.Module):
  """iDIH (improved_dih256): encoder conv k4 s2, decoder transposed conv k4 s2, blending head."""

  def __init__(self, depth: int = 7, batchnorm_from: int = 2, backbone_channels: int = 0):
    super().__init__()
    self.encoder, self.decoder = nn.Module(), nn.Module()
    ch = [64, 64]
    self.encoder.block0 = Block(nn.Conv2d(4, 64, 4, 2, 1), 64, batchnorm_from == 0)
    self.encoder.block1 = Block(nn.Conv2d(64, 64, 4, 2, 1), 64, batchnorm_from <= 1)
    self.encoder.blocks_connected = nn.ModuleDict()
    for i in range(2, depth):
      cin = ch[-1] + (backbone_channels if i == 2 else 0)
      ch.append(min(2 * ch[-1], 512) if i % 2 == 0 else ch[-1])
      self.encoder.blocks_connected[f"block{i}"] = Block(
          nn.Conv2d(cin, ch[-1], 4, 2, int(i < depth - 1)), ch[-1], batchnorm_from <= i)
    outs = ch[-2::-1] + [ch[0] // 2]
    self.decoder.deconv_blocks = nn.ModuleList(
        Block(nn.ConvTranspose2d(cin, cout, 4, 2, 0 if d == 0 else 1), cout, True)
        for d, (cin, cout) in enumerate(zip(ch[-1:] + outs, outs)))
    self.decoder.conv_attention = nn.Conv2d(outs[-1], 1, 1)
    self.decoder.to_rgb = nn.Conv2d(outs[-1], 3, 1)
    self.depth = depth

  def forward(self, image, mask, backbone_features=None):
    e = self.encoder
    outs = [e.block0(torch.cat([image, mask], 1))]
    outs.append(e.block1(outs[-1]))
    for i in range(2, self.depth):
      x = outs[-1] if i != 2 or backbone_features is None else torch.cat(
          [outs[-1], backbone_features], 1)
      outs.append(e.blocks_connected[f"block{i}"](x))
    x = outs[-1]
    blocks = self.decoder.deconv_blocks
    for d, block in enumerate(blocks[:-1]):
      x = block(x) + outs[-2 - d]
    x = blocks[-1](x)
    a = torch.sigmoid(3.0 * self.decoder.conv_attention(x))
    return a * image + (1.0 - a) * self.decoder.to_rgb(x)


class HRNetIDIH(nn.Module):
  """HRNetIHModel: mask fusion + HRNetV2 + OCR features joined after iDIH encoder block 1."""

  def __init__(self, width: str):
    super().__init__()
    self.mask_conv = nn.Sequential(nn.Conv2d(1, 64, 3, 2, 1), Scale(0.1))
    self.backbone = nn.Module()
    self.backbone.hrnet = HRNet(width, ocr=True)
    self.model = IDIH(backbone_channels=128)

  def forward(self, image, mask):
    feats = self.backbone.hrnet(image, torch.cat([mask, 1.0 - mask], 1), self.mask_conv(mask))
    return self.model(image, mask, feats)


def build(cls, *args, seed: int = 0, **kwargs) -> nn.Module:
  """cls(*args, **kwargs) with seeded random weights (`randomize`), in eval mode."""
  torch.manual_seed(seed)
  with one_thread():
    return randomize(cls(*args, **kwargs), seed + 1)


def randomize(module: nn.Module, seed: int) -> nn.Module:
  """Random BatchNorm affine parameters and running statistics, a negative Scale (|scale| is
  used), and eval mode; conv weights keep PyTorch's (seeded) random initialisation."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for m in module.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.3, 0.3)
        m.running_mean.uniform_(-0.3, 0.3)
        m.running_var.uniform_(0.5, 2.0)
      elif isinstance(m, Scale):
        m.scale.fill_(-0.7)
  return module.eval()


def state_dict(module: nn.Module) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def nchw(x: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def nhwc(t: torch.Tensor) -> np.ndarray:
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@contextlib.contextmanager
def one_thread():
  """PyTorch on one thread: its intra-op threads spin, and on a busy 2-core machine a forward
  pass takes ten times longer with two of them."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(threads)


def run(module, *inputs: np.ndarray, method: str = "forward") -> np.ndarray:
  """module.<method>(*NHWC inputs as NCHW) -> NHWC NumPy, without gradients, on one thread."""
  with one_thread(), torch.no_grad():
    return nhwc(getattr(module, method)(*[nchw(x) for x in inputs]))


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
  """max |ours - reference| / max |reference|."""
  return float(np.max(np.abs(np.asarray(ours) - reference)) / np.max(np.abs(reference)))


def flax_apply(module, variables, *inputs) -> np.ndarray:
  """module.apply in eval mode, jitted with XLA's backend optimisations off: these networks have
  hundreds of convs, which XLA:CPU otherwise takes minutes to compile for one forward pass."""
  from conftest import jit_unoptimized  # pylint: disable=import-outside-toplevel
  fn = jit_unoptimized(lambda v, *x: module.apply(v, *x, train=False))
  return np.asarray(fn(variables, *inputs))
