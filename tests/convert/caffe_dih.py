"""The DIH Caffe model for the conversion tests (not a test module).

- `dih_train_net`: the layer list of wasidennis/DeepHarmonization's deploy_512.prototxt as a
  training net would save it (a data layer, the two losses, and the Split layers Caffe inserts
  where a blob feeds several layers), with random weights: conv0-6 + BatchNorm + Scale + ELU,
  fc7, Reshape; the scene-parsing decoder deconv6-0 with Eltwise skips 'skip{k}-seg' and its
  head (deconv to 64 + BatchNorm + Scale + ELU, 1x1 conv to 26, 'output-seg'); the
  harmonisation decoder with 'skip{k}-h', Concat 'concat-res{k}' = [skip{k}-h, skip{k}-seg]
  feeding deconv{k-1}, and 'output-h' on skip0-h.
- `encode_net`: a protobuf wire-format writer of caffe.NetParameter written from caffe.proto's
  field numbers (independent of the reader under test).
- `caffe_forward`: a PyTorch interpreter of such a layer list with Caffe's layer semantics
  (float64), the reference the converted flax network is compared with.
"""
from __future__ import annotations

import dataclasses
import struct

import numpy as np
import torch
import torch.nn.functional as F

ENCODER = (64, 64, 128, 128, 256, 256, 512)
FC = 1024
CLASSES = 26
SIZE = 512
MEAN_BGR = (104.00699, 116.66877, 122.67892)   # the DeepHarmonization demo's mean


@dataclasses.dataclass
class Layer:
  name: str
  type: str
  bottoms: list[str]
  tops: list[str]
  params: dict = dataclasses.field(default_factory=dict)
  blobs: list[np.ndarray] = dataclasses.field(default_factory=list)


# --- caffe.proto wire format ------------------------------------------------------------------


def varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def field_key(number: int, wire: int) -> bytes:
  return varint(number << 3 | wire)


def uint_field(number: int, value: int) -> bytes:
  return field_key(number, 0) + varint(value)


def float_field(number: int, value: float) -> bytes:
  return field_key(number, 5) + struct.pack("<f", value)


def bytes_field(number: int, payload: bytes) -> bytes:
  return field_key(number, 2) + varint(len(payload)) + payload


def blob_proto(array: np.ndarray) -> bytes:
  """BlobProto: shape = 7 (BlobShape.dim = 1, packed), data = 5 (packed float)."""
  shape = bytes_field(1, b"".join(varint(d) for d in array.shape))
  return bytes_field(7, shape) + bytes_field(5, np.asarray(array, "<f4").tobytes())


def layer_proto(layer: Layer) -> bytes:
  """LayerParameter: name 1, type 2, bottom 3, top 4, blobs 7, and the type's parameters."""
  out = bytes_field(1, layer.name.encode()) + bytes_field(2, layer.type.encode())
  out += b"".join(bytes_field(3, b.encode()) for b in layer.bottoms)
  out += b"".join(bytes_field(4, t.encode()) for t in layer.tops)
  out += b"".join(bytes_field(7, blob_proto(b)) for b in layer.blobs)
  p = layer.params
  if layer.type in ("Convolution", "Deconvolution"):   # convolution_param = 106
    body = (uint_field(1, p["num_output"]) + uint_field(4, p["kernel"])
            + uint_field(6, p.get("stride", 1)))
    body += uint_field(3, p["pad"]) if p.get("pad") else b""
    out += bytes_field(106, body)
  elif layer.type == "BatchNorm":                          # batch_norm_param = 139
    out += bytes_field(139, uint_field(1, 1) + (float_field(3, p["eps"]) if "eps" in p else b""))
  elif layer.type == "Scale":                              # scale_param = 142, bias_term = 4
    out += bytes_field(142, uint_field(4, 1))
  elif layer.type == "Eltwise":                            # eltwise_param = 110, SUM = 1
    out += bytes_field(110, uint_field(1, 1))
  elif layer.type == "Concat":                             # concat_param = 104, axis = 2
    out += bytes_field(104, uint_field(2, 1))
  elif layer.type == "InnerProduct":                       # inner_product_param = 117
    out += bytes_field(117, uint_field(1, p["num_output"]))
  elif layer.type == "Reshape":                            # reshape_param = 133
    shape = bytes_field(1, b"".join(uint_field(1, d) for d in p["dims"]))   # BlobShape.dim
    out += bytes_field(133, shape + uint_field(2, 1))                        # shape, axis
  return out


def encode_net(layers: list[Layer], name: str = "Context-Encoder") -> bytes:
  """NetParameter: name = 1, layer = 100."""
  return bytes_field(1, name.encode()) + b"".join(bytes_field(100, layer_proto(l)) for l in layers)


# --- the net ------------------------------------------------------------------------------------


class _Builder:
  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)
    self.layers: list[Layer] = []

  def add(self, *args, **kwargs) -> None:
    self.layers.append(Layer(*args, **kwargs))

  def conv(self, kind: str, name: str, bottom: str, top: str, cin: int, cout: int, kernel: int,
           stride: int, pad: int, gain: float = 1.0) -> None:
    taps = cin * kernel * kernel if kind == "Convolution" else cin * (kernel // stride) ** 2
    shape = (cout, cin, kernel, kernel) if kind == "Convolution" else (cin, cout, kernel, kernel)
    weight = self.rng.normal(size=shape) * gain / np.sqrt(taps)
    self.add(name, kind, [bottom], [top],
             dict(num_output=cout, kernel=kernel, stride=stride, pad=pad),
             [weight, 0.1 * self.rng.normal(size=cout)])

  def bn_scale_elu(self, names: tuple[str, str, str], blob: str, c: int) -> None:
    """In-place BatchNorm (use_global_stats), Scale (with bias) and ELU on `blob`."""
    factor = float(self.rng.uniform(0.5, 1000.0))   # Caffe's moving-average normaliser
    mean, var = 0.3 * self.rng.normal(size=c), self.rng.uniform(0.5, 2.0, c)
    self.add(names[0], "BatchNorm", [blob], [blob], dict(eps=1e-5),
             [mean * factor, var * factor, np.array([factor])])
    self.add(names[1], "Scale", [blob], [blob], {},
             [self.rng.uniform(0.5, 1.5, c), 0.2 * self.rng.normal(size=c)])
    self.add(names[2], "ELU", [blob], [blob])


def _suffixed(name: str) -> tuple[str, str, str]:
  return (f"{name}-bn", f"{name}-scale", f"{name}-elu")


def _decoder(b: _Builder, d: str) -> None:
  """deconv6-{d} ... deconv0-{d}, each + conv{k} = skip{k}-{d}; the harmonisation decoder reads
  concat-res{k+1} (below k = 6)."""
  for k in range(len(ENCODER) - 1, -1, -1):
    top = k == len(ENCODER) - 1
    source = "reshape1" if top else (f"skip{k + 1}-seg" if d == "seg" else f"concat-res{k + 1}")
    cin = FC if top else ENCODER[k + 1] * (2 if d == "h" else 1)
    b.conv("Deconvolution", f"deconv{k}-{d}", source, f"deconv{k}-{d}", cin, ENCODER[k], 4, 2,
           0 if top else 1)
    b.bn_scale_elu(_suffixed(f"deconv{k}-{d}"), f"deconv{k}-{d}", ENCODER[k])
    b.add(f"eltwise-sum{k}-{d}", "Eltwise", [f"deconv{k}-{d}", f"conv{k}"], [f"skip{k}-{d}"])
    if d == "h" and k > 0:
      b.add(f"concat-res{k}", "Concat", [f"skip{k}-h", f"skip{k}-seg"], [f"concat-res{k}"])


def _insert_splits(layers: list[Layer]) -> list[Layer]:
  """Caffe's InsertSplits: a blob read by several layers gets a Split layer after its last
  writer, and each reader its own top '{blob}_{writer}_{i}_split_{j}'."""
  out: list[Layer] = []
  for index, layer in enumerate(layers):
    out.append(layer)
    for t, blob in enumerate(layer.tops):
      later = layers[index + 1:]
      if any(blob in l.tops for l in later):
        continue   # an in-place layer writes it again later
      readers = [l for l in later if blob in l.bottoms]
      if len(readers) < 2:
        continue
      prefix = f"{blob}_{layer.name}_{t}_split"
      tops = [f"{prefix}_{j}" for j in range(len(readers))]
      out.append(Layer(prefix, "Split", [blob], tops))
      for reader, top in zip(readers, tops):
        reader.bottoms = [top if b == blob else b for b in reader.bottoms]
  return out


def dih_train_net(seed: int = 0) -> list[Layer]:
  """The deploy_512 net with a data layer, losses and Split layers, random weights."""
  b = _Builder(seed)
  b.add("data", "Python", [], ["data", "mask", "target", "label"])
  b.add("concat", "Concat", ["data", "mask"], ["data_all"])
  bottom, cin = "data_all", 4
  for k, c in enumerate(ENCODER):
    # conv0 sees inputs on the 0..255 scale: a smaller gain keeps the activations O(1)
    b.conv("Convolution", f"conv{k}", bottom, f"conv{k}", cin, c, 4, 2, 1,
           gain=0.01 if k == 0 else 1.0)
    b.bn_scale_elu((f"bn{k}", f"scale{k}", f"elu{k}"), f"conv{k}", c)
    bottom, cin = f"conv{k}", c
  b.add("fc7", "InnerProduct", ["conv6"], ["fc7"], dict(num_output=FC),
        [b.rng.normal(size=(FC, ENCODER[-1] * 16)) / np.sqrt(ENCODER[-1] * 16),
         0.1 * b.rng.normal(size=FC)])
  b.add("reshape1", "Reshape", ["fc7"], ["reshape1"], dict(dims=(FC, 1, 1)))
  _decoder(b, "seg")
  b.conv("Deconvolution", "deconv-seg", "skip0-seg", "deconv-seg", ENCODER[0], ENCODER[0], 4, 2,
         1)
  b.bn_scale_elu(_suffixed("deconv-seg"), "deconv-seg", ENCODER[0])
  b.conv("Convolution", "output-seg", "deconv-seg", "output-seg", ENCODER[0], CLASSES, 1, 1, 0)
  _decoder(b, "h")
  b.conv("Deconvolution", "output-h", "skip0-h", "output-h", ENCODER[0], 3, 4, 2, 1, gain=30.0)
  b.add("loss-h", "EuclideanLoss", ["output-h", "target"], ["loss-h"])
  b.add("loss-seg", "SoftmaxWithLoss", ["output-seg", "label"], ["loss-seg"])
  return _insert_splits(b.layers)


def caffe_forward(layers: list[Layer], inputs: dict[str, np.ndarray],
                  dtype: type = np.float64) -> dict[str, np.ndarray]:
  """Runs the layers in order as Caffe does (in `dtype`, NCHW); data and loss layers are skipped
  (`inputs` gives the data layer's blobs). Returns every blob."""
  blobs = {k: torch.from_numpy(np.asarray(v, dtype)) for k, v in inputs.items()}
  t = lambda a: torch.from_numpy(np.asarray(a, dtype))  # noqa: E731
  for l in layers:
    if l.type in ("Python", "EuclideanLoss", "SoftmaxWithLoss"):   # data layer, losses
      continue
    x = [blobs[name] for name in l.bottoms]
    p = l.params
    if l.type == "Split":
      y = [x[0]] * len(l.tops)
    elif l.type == "Concat":
      y = [torch.cat(x, dim=1)]
    elif l.type == "Convolution":
      y = [F.conv2d(x[0], t(l.blobs[0]), t(l.blobs[1]), p.get("stride", 1), p.get("pad", 0))]
    elif l.type == "Deconvolution":   # weight [in, out, kh, kw]: the gradient of a conv
      y = [F.conv_transpose2d(x[0], t(l.blobs[0]), t(l.blobs[1]), p["stride"], p["pad"])]
    elif l.type == "BatchNorm":       # use_global_stats: stored sums / the normaliser
      factor = float(l.blobs[2][0])
      s = 0.0 if factor == 0 else 1.0 / factor
      mean, var = t(l.blobs[0]) * s, t(l.blobs[1]) * s
      y = [(x[0] - mean[:, None, None]) / torch.sqrt(var[:, None, None] + p["eps"])]
    elif l.type == "Scale":
      y = [x[0] * t(l.blobs[0])[:, None, None] + t(l.blobs[1])[:, None, None]]
    elif l.type == "ELU":
      y = [F.elu(x[0], alpha=p.get("alpha", 1.0))]
    elif l.type == "InnerProduct":
      y = [x[0].flatten(1) @ t(l.blobs[0]).T + t(l.blobs[1])]
    elif l.type == "Reshape":
      y = [x[0].reshape(x[0].shape[0], *p["dims"])]
    else:
      assert l.type == "Eltwise", l.type
      y = [sum(x)]
    blobs.update(zip(l.tops, y))
  return {k: v.numpy() for k, v in blobs.items()}


def caffe_inputs(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
  """RGB [H, W, 3] and mask [H, W] in [0, 1] -> the demo's 'data' and 'mask' blobs (NCHW): BGR
  on 0..255 minus the mean, mask on 0..255 minus 128."""
  bgr = image[..., ::-1] * 255.0 - np.asarray(MEAN_BGR)
  return {"data": np.transpose(bgr, (2, 0, 1))[None], "mask": (mask * 255.0 - 128.0)[None, None]}
