"""Caffe `.caffemodel` files read without Caffe: the layer graph and its weights as NumPy.

A .caffemodel is a binary `caffe.NetParameter` protobuf as Caffe's `Net::ToProto` writes it:
every layer of the trained net (data, split and loss layers included) with its name, type,
bottom / top blob names, type-specific parameters and learned blobs. It is parsed with the
protobuf package against a schema built here for the fields that the converters read, with
caffe.proto's (BVLC) field numbers:

  NetParameter          layers = 2 (V1LayerParameter, pre-2015 files: refused), layer = 100
  LayerParameter        name = 1, type = 2, bottom = 3, top = 4, blobs = 7,
                        concat_param = 104, convolution_param = 106, eltwise_param = 110,
                        inner_product_param = 117, batch_norm_param = 139, elu_param = 140
  BlobProto             num, channels, height, width = 1-4 (legacy 4-D shape), data = 5,
                        shape = 7 (BlobShape: dim = 1, packed int64), double_data = 8
  ConvolutionParameter  num_output = 1, bias_term = 2, pad = 3, kernel_size = 4, group = 5,
                        stride = 6, pad_h / pad_w = 9 / 10, kernel_h / kernel_w = 11 / 12,
                        stride_h / stride_w = 13 / 14, dilation = 18
  ConcatParameter       concat_dim = 1, axis = 2
  EltwiseParameter      operation = 1 (PROD 0, SUM 1, MAX 2), coeff = 2
  InnerProductParameter num_output = 1, bias_term = 2, axis = 5, transpose = 6
  BatchNormParameter    eps = 3
  ELUParameter          alpha = 1

`data` and `double_data` are packed repeated floats / doubles in caffe.proto; a packed field has
the wire format of a length-delimited bytes field, so the schema declares them `repeated bytes`
and the payloads are read with `np.frombuffer` (a 170 MB model parses in well under a second).
A writer that emitted them unpacked (not Caffe) gives blobs without values, which the size
checks of the converters report.

`Net.trace` follows the graph backwards through Split layers (which Caffe inserts where a blob
feeds several layers) and through the in-place BatchNorm / Scale / ELU layers that follow a
convolution, so converters can find layers by the structure and the blob names of the deploy
prototxt whatever the layer names of the training net were.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import numpy as np

from cpjax.convert.state_dict import ConversionError

# Layer types applied to a blob in place after the layer that made it: `Net.trace` collects them.
UNARY_TYPES = ("BatchNorm", "Scale", "ELU")

# The subset of caffe.proto read here: message -> (field, number, label, type); '.caffe.X' is
# a message type, 'enum' an enum read as its number.
_MESSAGES = {
    "BlobShape": [("dim", 1, "repeated", "int64")],
    "BlobProto": [("num", 1, "optional", "int64"), ("channels", 2, "optional", "int64"),
                  ("height", 3, "optional", "int64"), ("width", 4, "optional", "int64"),
                  ("data", 5, "repeated", "bytes"), ("shape", 7, "optional", ".caffe.BlobShape"),
                  ("double_data", 8, "repeated", "bytes")],
    "ConvolutionParameter": [
        ("num_output", 1, "optional", "uint64"), ("bias_term", 2, "optional", "bool"),
        ("pad", 3, "repeated", "uint64"), ("kernel_size", 4, "repeated", "uint64"),
        ("group", 5, "optional", "uint64"), ("stride", 6, "repeated", "uint64"),
        ("pad_h", 9, "optional", "uint64"), ("pad_w", 10, "optional", "uint64"),
        ("kernel_h", 11, "optional", "uint64"), ("kernel_w", 12, "optional", "uint64"),
        ("stride_h", 13, "optional", "uint64"), ("stride_w", 14, "optional", "uint64"),
        ("dilation", 18, "repeated", "uint64")],
    "ConcatParameter": [("concat_dim", 1, "optional", "uint64"), ("axis", 2, "optional", "int64")],
    "EltwiseParameter": [("operation", 1, "optional", "enum"), ("coeff", 2, "repeated", "float")],
    "InnerProductParameter": [("num_output", 1, "optional", "uint64"),
                              ("bias_term", 2, "optional", "bool"),
                              ("axis", 5, "optional", "int64"),
                              ("transpose", 6, "optional", "bool")],
    "BatchNormParameter": [("eps", 3, "optional", "float")],
    "ELUParameter": [("alpha", 1, "optional", "float")],
    "LayerParameter": [
        ("name", 1, "optional", "string"), ("type", 2, "optional", "string"),
        ("bottom", 3, "repeated", "string"), ("top", 4, "repeated", "string"),
        ("blobs", 7, "repeated", ".caffe.BlobProto"),
        ("concat_param", 104, "optional", ".caffe.ConcatParameter"),
        ("convolution_param", 106, "optional", ".caffe.ConvolutionParameter"),
        ("eltwise_param", 110, "optional", ".caffe.EltwiseParameter"),
        ("inner_product_param", 117, "optional", ".caffe.InnerProductParameter"),
        ("batch_norm_param", 139, "optional", ".caffe.BatchNormParameter"),
        ("elu_param", 140, "optional", ".caffe.ELUParameter")],
    "NetParameter": [("name", 1, "optional", "string"), ("layers", 2, "repeated", "bytes"),
                     ("layer", 100, "repeated", ".caffe.LayerParameter")],
}


@functools.lru_cache(maxsize=None)
def _net_message_class() -> Any:
  """The NetParameter message class of `_MESSAGES` (protobuf imported only when a file is
  read). Repeated numbers parse from the packed and the unpacked encoding alike."""
  from google.protobuf import descriptor_pb2  # pylint: disable=g-import-not-at-top
  from google.protobuf import descriptor_pool  # pylint: disable=g-import-not-at-top
  from google.protobuf import message_factory  # pylint: disable=g-import-not-at-top
  f = descriptor_pb2.FieldDescriptorProto
  kinds = {"string": f.TYPE_STRING, "bytes": f.TYPE_BYTES, "int64": f.TYPE_INT64,
           "uint64": f.TYPE_UINT64, "bool": f.TYPE_BOOL, "float": f.TYPE_FLOAT,
           "enum": f.TYPE_INT32}
  file = descriptor_pb2.FileDescriptorProto(name="cpjax_caffe_subset.proto", package="caffe",
                                            syntax="proto2")
  for message_name, fields in _MESSAGES.items():
    message = file.message_type.add(name=message_name)
    for name, number, label, kind in fields:
      field = message.field.add(name=name, number=number, label=(
          f.LABEL_REPEATED if label == "repeated" else f.LABEL_OPTIONAL))
      if kind.startswith("."):
        field.type, field.type_name = f.TYPE_MESSAGE, kind
      else:
        field.type = kinds[kind]
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file)
  return message_factory.GetMessageClass(pool.FindMessageTypeByName("caffe.NetParameter"))


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of a Caffe net.

  Attributes:
    name, type: as in the prototxt ('Convolution', 'Deconvolution', 'BatchNorm', ...).
    bottoms, tops: blob names.
    blobs: learned blobs, float32, in Caffe's shape (the legacy 4-D num/channels/height/width
      shape when the file gives no `shape`).
    params: the type's parameters with caffe.proto's defaults filled in: 'num_output',
      'bias_term', 'kernel', 'stride', 'pad' ((h, w) pairs), 'group', 'dilation' for
      (De)Convolution; 'num_output', 'bias_term', 'axis', 'transpose' for InnerProduct; 'eps'
      for BatchNorm; 'alpha' for ELU; 'operation' ('PROD' / 'SUM' / 'MAX') and 'coeff' for
      Eltwise; 'axis' for Concat; {} otherwise.
  """
  name: str
  type: str
  bottoms: tuple[str, ...]
  tops: tuple[str, ...]
  blobs: tuple[np.ndarray, ...]
  params: dict[str, Any]


def _pair(values: list[int], h: int, w: int, default: int, set_hw: bool) -> tuple[int, int]:
  """Caffe's (h, w) of a kernel / stride / pad: *_h/*_w if given, else the repeated value."""
  if set_hw:
    return int(h), int(w)
  if not values:
    return default, default
  return (int(values[0]), int(values[-1]))


def _conv_params(p: Any) -> dict[str, Any]:
  return {"num_output": int(p.num_output),
          "bias_term": p.bias_term if p.HasField("bias_term") else True,
          "kernel": _pair(list(p.kernel_size), p.kernel_h, p.kernel_w, 0, p.HasField("kernel_h")),
          "stride": _pair(list(p.stride), p.stride_h, p.stride_w, 1, p.HasField("stride_h")),
          "pad": _pair(list(p.pad), p.pad_h, p.pad_w, 0,
                       p.HasField("pad_h") or p.HasField("pad_w")),
          "group": int(p.group) if p.HasField("group") else 1,
          "dilation": tuple(int(d) for d in p.dilation) or (1,)}


def _params(layer: Any) -> dict[str, Any]:
  """The parameters of a LayerParameter's type, caffe.proto's defaults filled in."""
  if layer.type in ("Convolution", "Deconvolution"):
    return _conv_params(layer.convolution_param)
  if layer.type == "InnerProduct":
    p = layer.inner_product_param
    return {"num_output": int(p.num_output),
            "bias_term": p.bias_term if p.HasField("bias_term") else True,
            "axis": int(p.axis) if p.HasField("axis") else 1, "transpose": bool(p.transpose)}
  if layer.type == "BatchNorm":
    p = layer.batch_norm_param
    return {"eps": float(p.eps) if p.HasField("eps") else 1e-5}
  if layer.type == "ELU":
    return {"alpha": float(layer.elu_param.alpha) if layer.elu_param.HasField("alpha") else 1.0}
  if layer.type == "Eltwise":
    p = layer.eltwise_param
    operation = int(p.operation) if p.HasField("operation") else 1
    return {"operation": {0: "PROD", 1: "SUM", 2: "MAX"}.get(operation, str(operation)),
            "coeff": tuple(float(c) for c in p.coeff)}
  if layer.type == "Concat":
    p = layer.concat_param
    return {"axis": int(p.axis) if p.HasField("axis") else
            int(p.concat_dim) if p.HasField("concat_dim") else 1}
  return {}


def _blob(blob: Any) -> np.ndarray:
  """A BlobProto's values, float32, in its shape (or the legacy 4-D one)."""
  if blob.double_data:
    values = np.frombuffer(b"".join(blob.double_data), "<f8").astype(np.float32)
  else:
    values = np.frombuffer(b"".join(blob.data), "<f4").astype(np.float32)
  if blob.HasField("shape"):
    shape = tuple(int(d) for d in blob.shape.dim)
  else:
    shape = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
  if int(np.prod(shape)) != values.size:
    return values   # the converter's size check names the layer
  return values.reshape(shape)


def parse_net(data: bytes, path: str = "<bytes>") -> list[Layer]:
  """The layers of a serialised NetParameter.

  Raises:
    ConversionError: not a NetParameter, no layers, or the legacy V1 layer format.
  """
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  net = _net_message_class()()
  try:
    net.ParseFromString(data)
  except message.DecodeError as e:
    raise ConversionError(f"{path} is not a Caffe model (protobuf: {e}); give the "
                          ".caffemodel file") from e
  if not net.layer:
    if net.layers:
      raise ConversionError(f"{path} uses Caffe's legacy V1 layer format; upgrade it with "
                            "Caffe's upgrade_net_proto_binary tool and convert the result")
    raise ConversionError(f"{path} holds no Caffe layers; give the .caffemodel file")
  return [Layer(name=l.name, type=l.type, bottoms=tuple(l.bottom), tops=tuple(l.top),
                blobs=tuple(_blob(b) for b in l.blobs), params=_params(l)) for l in net.layer]


def read_caffemodel(path: str | pathlib.Path) -> "Net":
  """Reads a .caffemodel file into a `Net`.

  Raises:
    ConversionError: see `parse_net`.
    OSError: an unreadable file.
  """
  p = pathlib.Path(path).expanduser()
  return Net(parse_net(p.read_bytes(), str(p)))


@dataclasses.dataclass(frozen=True)
class Node:
  """A blob's value at some point of the net: the layer that made it (`base`, an index into
  `Net.layers`) and the unary layers applied to it since (`ops`, indices in forward order)."""
  base: int
  ops: tuple[int, ...]


class Net:
  """A Caffe net's layers in file (= execution) order, with graph queries.

  Attributes:
    layers: the layers.
  """

  def __init__(self, layers: list[Layer]):
    self.layers = list(layers)
    names = [l.name for l in self.layers if l.blobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ConversionError(f"layers with weights share the names {', '.join(duplicates)}; "
                            "Caffe nets name each layer once")

  def arrays(self) -> dict[str, np.ndarray]:
    """Every learned blob as '{layer name}.{blob index}' -> array (a state dict)."""
    return {f"{l.name}.{i}": b for l in self.layers for i, b in enumerate(l.blobs)}

  def producer(self, blob: str, before: int | None = None) -> int | None:
    """Index of the last layer before `before` (default: the end) whose tops include `blob`;
    None for a net input or an unknown blob."""
    stop = len(self.layers) if before is None else before
    for i in range(stop - 1, -1, -1):
      if blob in self.layers[i].tops:
        return i
    return None

  def find_top(self, blob: str) -> int:
    """The layer that makes `blob` (its last writer).

    Raises:
      ConversionError: no layer makes it (naming some blobs that exist).
    """
    index = self.producer(blob)
    if index is None:
      tops = sorted({t for l in self.layers for t in l.tops})
      raise ConversionError(f"the net has no blob {blob!r} (blobs: {', '.join(tops[:40])}"
                            f"{', ...' if len(tops) > 40 else ''}); is it the right model?")
    return index

  def trace(self, blob: str, before: int) -> Node:
    """The value that the layer at index `before` reads as `blob`.

    Goes back through Split layers (to their bottom) and collects the unary layers
    (`UNARY_TYPES`, in place or not) down to the layer that made the value.

    Raises:
      ConversionError: the blob is a net input (no layer makes it).
    """
    ops: list[int] = []
    while True:
      index = self.producer(blob, before)
      if index is None:
        raise ConversionError(f"blob {blob!r} (read by layer {self.layers[before].name!r}) is "
                              "not made by any layer")
      layer = self.layers[index]
      if layer.type == "Split":
        blob, before = layer.bottoms[0], index
      elif layer.type in UNARY_TYPES:
        ops.insert(0, index)
        blob, before = layer.bottoms[0], index
      else:
        return Node(index, tuple(ops))

  def inputs(self, index: int) -> list[Node]:
    """The values that layer `index` reads, one per bottom."""
    return [self.trace(b, index) for b in self.layers[index].bottoms]

  def readers(self, base: int, layer_type: str) -> list[int]:
    """Layers of `layer_type` that read a value made by layer `base`."""
    return [i for i, l in enumerate(self.layers) if l.type == layer_type and i > base
            and any(self._made_by(b, i) == base for b in l.bottoms)]

  def _made_by(self, blob: str, before: int) -> int | None:
    try:
      return self.trace(blob, before).base
    except ConversionError:
      return None

  def input_name(self, blob: str, before: int) -> str:
    """The name a blob read at `before` has before any Split renamed it."""
    while True:
      index = self.producer(blob, before)
      if index is None or self.layers[index].type != "Split":
        return blob
      blob, before = self.layers[index].bottoms[0], index
