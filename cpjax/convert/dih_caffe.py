"""The released DIH Caffe model -> `cpjax.models.dih.DIH` with the scene-parsing decoder.

Model (`--model` of `python -m cpjax.tools.convert`):
  dih512   harmonize_iter_200000.caffemodel of wasidennis/DeepHarmonization (the net of its
           model/deploy_512.prototxt; 512 x 512 input), read with `cpjax.convert.caffe`.

The deploy net and where each Caffe layer goes (k = 0 ... 6):
  Concat(data, mask)                                   the input: BGR image, then the mask
  conv{k} -> BatchNorm -> Scale -> ELU                 encoder/block{k}/{conv, bn}
  fc7 (InnerProduct 8192 -> 1024) -> Reshape 1x1       fc7
  scene parsing:  Deconvolution -> BatchNorm -> Scale -> ELU, + conv{k} = blob 'skip{k}-seg'
                                                       parsing_decoder/deconv{k}/{deconv, bn}
                  Deconvolution k4 s2 p1 -> 64, BatchNorm, Scale, ELU on skip0-seg
                                                       parsing_decoder/head/{deconv, bn}
                  1x1 Convolution -> 26 ('output-seg')  parsing_decoder/classifier
  harmonisation:  Deconvolution -> BatchNorm -> Scale -> ELU, + conv{k} = blob 'skip{k}-h',
                  reading fc7 (k = 6) or Concat(skip{k+1}-h, skip{k+1}-seg) ('concat-res{k+1}')
                                                       harmonization_decoder/deconv{k}/{deconv, bn}
                  Deconvolution k4 s2 p1 -> 3 on skip0-h ('output-h')
                                                       harmonization_decoder/output
The converter finds these layers by the graph (`cpjax.convert.caffe.Net.trace`) from the blobs
'skip{k}-h', 'skip{k}-seg' and 'output-h' of the deploy prototxt, so the layer names of the
training net (and the Split layers Caffe inserts) do not matter; every structural fact above
(layer types, order of the in-place layers, kernel / stride / padding, which blobs join) is
checked, and every learned blob of the file must find a place.

Layouts: Convolution weight [O, I, kh, kw] and Deconvolution weight [I, O, kh, kw] as PyTorch's
Conv2d / ConvTranspose2d (`cpjax.convert.state_dict`); InnerProduct weight [1024, 8192] over
conv6 flattened in (C, H, W) order -> Dense kernel [8192, 1024] over the NHWC map flattened in
(H, W, C) order; BatchNorm blobs (mean * f, var * f, f) -> batch_stats mean, var (f = 0 reads
as zero statistics, as Caffe does), its eps folded into var for flax's epsilon 1e-5; Scale blobs
(gamma, beta) -> the BatchNorm's scale, bias.

Input and output: the converted module_config has input_space 'caffe_bgr', so the
harmonisation task feeds BGR on 0..255 minus the ImageNet mean and mask * 255 - 128, and
de-normalises the output as the demo does (`cpjax.models.dih.caffe_inputs` / `caffe_to_rgb`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cpjax.convert import Converted
from cpjax.convert import harmonization
from cpjax.convert.caffe import Layer, Net, Node
from cpjax.convert.state_dict import (ConversionError, StateDict, Tree, check_tree,
                                      conv_kernel, conv_transpose_kernel)
from cpjax.models import dih

LEVELS = 7   # conv0-6, deconv6-0
_BN_ELU = ("BatchNorm", "Scale", "ELU")
# (blob suffix of the deploy prototxt, flax scope) of the two decoders
_DECODERS = (("h", "harmonization_decoder"), ("seg", "parsing_decoder"))


@dataclasses.dataclass(frozen=True)
class _Block:
  """A Caffe (de)convolution or InnerProduct (at `index` in the net) and, for BatchNorm blocks,
  its BatchNorm and Scale layers."""
  index: int
  conv: Layer
  bn: Layer | None = None
  scale: Layer | None = None


def _fail(what: str, found: str) -> ConversionError:
  return ConversionError(f"dih512: {what}, but the file has {found}; is it "
                         "harmonize_iter_200000.caffemodel?")


def _describe(net: Net, node: Node) -> str:
  layers = [net.layers[i] for i in (node.base, *node.ops)]
  return " -> ".join(f"{l.name!r} ({l.type})" for l in layers)


def _block(net: Net, node: Node, conv_type: str, what: str, norm: bool = True) -> _Block:
  """The layers of `node`: `conv_type` followed by BatchNorm, Scale, ELU (norm) or by nothing."""
  ops = [net.layers[i] for i in node.ops]
  base = net.layers[node.base]
  if base.type != conv_type or tuple(l.type for l in ops) != (_BN_ELU if norm else ()):
    want = " -> ".join((conv_type,) + (_BN_ELU if norm else ()))
    raise _fail(f"{what} should be {want}", _describe(net, node))
  if norm and ops[2].params["alpha"] != 1.0:
    raise _fail(f"{what}'s ELU should have alpha 1", f"alpha {ops[2].params['alpha']}")
  return _Block(node.base, base, *ops[:2]) if norm else _Block(node.base, base)


def _check_conv(block: _Block, kernel: int, pad: int, stride: int = 2) -> None:
  """The (de)convolution's geometry is the deploy net's (group 1, no dilation, a bias)."""
  p = block.conv.params
  got = (p["kernel"], p["stride"], p["pad"], p["group"], set(p["dilation"]), p["bias_term"])
  if got != ((kernel, kernel), (stride, stride), (pad, pad), 1, {1}, True):
    raise _fail(f"layer {block.conv.name!r} should have kernel {kernel}, stride {stride}, pad "
                f"{pad}, group 1, dilation 1 and a bias",
                f"kernel {p['kernel']}, stride {p['stride']}, pad {p['pad']}, group {p['group']}, "
                f"dilation {p['dilation']}, bias {p['bias_term']}")


def _single_input(net: Net, index: int) -> Node:
  inputs = net.inputs(index)
  if len(inputs) != 1:
    raise _fail(f"layer {net.layers[index].name!r} should read one blob",
                f"{len(inputs)} bottoms")
  return inputs[0]


def _skip(net: Net, decoder: str, k: int) -> tuple[int, Node, Node]:
  """(index of the Eltwise making 'skip{k}-{decoder}', its encoder operand, its decoder operand)."""
  index = net.find_top(f"skip{k}-{decoder}")
  layer = net.layers[index]
  p = layer.params
  if (layer.type != "Eltwise" or p["operation"] != "SUM" or any(c != 1.0 for c in p["coeff"])
      or len(layer.bottoms) != 2):
    raise _fail(f"blob 'skip{k}-{decoder}' should be the sum of two blobs (Eltwise SUM)",
                f"{layer.name!r} ({layer.type}, {p})")
  inputs = net.inputs(index)
  operands = {net.layers[n.base].type: n for n in inputs}
  if set(operands) != {"Convolution", "Deconvolution"}:
    raise _fail(f"'skip{k}-{decoder}' should add an encoder conv and a decoder deconv",
                " and ".join(_describe(net, n) for n in inputs))
  return index, operands["Convolution"], operands["Deconvolution"]


def _check_input(net: Net, conv0: int) -> None:
  """conv0 reads Concat(image, mask) along the channels, the mask last."""
  node = _single_input(net, conv0)
  layer = net.layers[node.base]
  names = [net.input_name(b, node.base) for b in layer.bottoms]
  if (layer.type != "Concat" or node.ops or layer.params["axis"] != 1 or len(names) != 2
      or names[1] != "mask"):
    raise _fail("conv0 should read Concat(data, mask) along the channels",
                f"{layer.name!r} ({layer.type}, {layer.params}) of {names}")


def _fc7(net: Net, deconv6: list[_Block], conv6: Node) -> _Block:
  """fc7: the InnerProduct on conv6 (after its ELU) that both deconv6 layers read reshaped."""
  reads = {_single_input(net, block.index) for block in deconv6}
  reshape = reads.pop()
  if reads or net.layers[reshape.base].type != "Reshape" or reshape.ops:
    raise _fail("both deconv6 should read fc7 reshaped to 1024 x 1 x 1",
                _describe(net, reshape))
  fc = _single_input(net, reshape.base)
  block = _block(net, fc, "InnerProduct", "fc7", norm=False)
  p = block.conv.params
  if p["axis"] != 1 or p["transpose"] or not p["bias_term"]:
    raise _fail("fc7 should be an InnerProduct over axis 1 with a bias, not transposed", str(p))
  if _single_input(net, fc.base) != conv6:
    raise _fail("fc7 should read conv6 after its ELU",
                _describe(net, _single_input(net, fc.base)))
  return block


def _check_decoder_input(net: Net, block: _Block, decoder: str, k: int,
                         skips: dict[tuple[str, int], int]) -> None:
  """deconv{k}-seg reads skip{k+1}-seg; deconv{k}-h reads Concat(skip{k+1}-h, skip{k+1}-seg)."""
  node = _single_input(net, block.index)
  if decoder == "seg":
    if node != Node(skips["seg", k + 1], ()):
      raise _fail(f"deconv{k}-seg should read 'skip{k + 1}-seg'", _describe(net, node))
    return
  layer = net.layers[node.base]
  joined = net.inputs(node.base) if layer.type == "Concat" else []
  want = [Node(skips["h", k + 1], ()), Node(skips["seg", k + 1], ())]
  if node.ops or joined != want or layer.params.get("axis") != 1:
    raise _fail(f"deconv{k}-h should read Concat(skip{k + 1}-h, skip{k + 1}-seg) along the "
                "channels", _describe(net, node) + (
                    " of " + ", ".join(_describe(net, n) for n in joined) if joined else ""))


def _output_h(net: Net, skip0_h: int) -> _Block:
  """'output-h': the Deconvolution to RGB on skip0-h."""
  index = net.find_top("output-h")
  block = _block(net, Node(index, ()), "Deconvolution", "output-h", norm=False)
  _check_conv(block, 4, 1)
  if _single_input(net, index) != Node(skip0_h, ()):
    raise _fail("output-h should read 'skip0-h'", _describe(net, _single_input(net, index)))
  return block


def _reader(net: Net, base: int, layer_type: str, what: str) -> int:
  found = net.readers(base, layer_type)
  if len(found) != 1:
    raise _fail(f"one {layer_type} ({what}) should read {net.layers[base].name!r}",
                f"{len(found)}: {[net.layers[i].name for i in found]}")
  return found[0]


def _parsing_head(net: Net, skip0_seg: int) -> dict[tuple[str, ...], _Block]:
  """The scene-parsing head on skip0-seg: Deconvolution -> BatchNorm -> Scale -> ELU, then the
  1x1 Convolution to the classes."""
  deconv = _reader(net, skip0_seg, "Deconvolution", "the parsing head")
  classifier = _reader(net, deconv, "Convolution", "the parsing classifier")
  head = _block(net, _single_input(net, classifier), "Deconvolution", "the parsing head")
  _check_conv(head, 4, 1)
  out = _block(net, Node(classifier, ()), "Convolution", "the parsing classifier", norm=False)
  _check_conv(out, 1, 0, stride=1)
  return {("parsing_decoder", "head"): head, ("parsing_decoder", "classifier"): out}


def _structure(net: Net) -> dict[tuple[str, ...], _Block]:
  """flax module path -> the Caffe layers it comes from, every structural fact checked."""
  blocks: dict[tuple[str, ...], _Block] = {}
  skips: dict[tuple[str, int], int] = {}
  encoder: dict[int, Node] = {}
  for k in range(LEVELS):
    for decoder, scope in _DECODERS:
      skips[decoder, k], enc, dec = _skip(net, decoder, k)
      if encoder.setdefault(k, enc) != enc:
        raise _fail(f"'skip{k}-h' and 'skip{k}-seg' should add the same encoder output",
                    f"{_describe(net, encoder[k])} and {_describe(net, enc)}")
      block = _block(net, dec, "Deconvolution", f"deconv{k}-{decoder}")
      _check_conv(block, 4, 0 if k == LEVELS - 1 else 1)
      blocks[scope, f"deconv{k}"] = block
  for k in range(LEVELS):
    blocks["encoder", f"block{k}"] = block = _block(net, encoder[k], "Convolution", f"conv{k}")
    _check_conv(block, 4, 1)
    if k and _single_input(net, block.index) != encoder[k - 1]:
      raise _fail(f"conv{k} should read conv{k - 1} after its ELU",
                  _describe(net, _single_input(net, block.index)))
  _check_input(net, encoder[0].base)
  blocks[("fc7",)] = _fc7(net, [blocks[scope, f"deconv{LEVELS - 1}"] for _, scope in _DECODERS],
                          encoder[LEVELS - 1])
  for k in range(LEVELS - 1):
    for decoder, scope in _DECODERS:
      _check_decoder_input(net, blocks[scope, f"deconv{k}"], decoder, k, skips)
  blocks["harmonization_decoder", "output"] = _output_h(net, skips["h", 0])
  blocks.update(_parsing_head(net, skips["seg", 0]))
  return blocks


# --- weights --------------------------------------------------------------------------------


def _take(sd: StateDict, layer: Layer, i: int, shape: tuple[int, ...], path: str) -> np.ndarray:
  """Blob i of `layer` in Caffe's `shape` (a legacy 4-D blob of the same size is reshaped)."""
  key = f"{layer.name}.{i}"
  if key not in sd:
    raise _fail(f"layer {layer.name!r} ({layer.type}) should have a blob {i} for {path}",
                f"{len(layer.blobs)} blobs")
  blob = sd.take(key)
  if blob.size != int(np.prod(shape)):
    raise _fail(f"blob {i} of layer {layer.name!r} should hold {shape} for {path}",
                f"{blob.shape}")
  return blob.reshape(shape)


def _conv_variables(sd: StateDict, block: _Block, kernel_shape: tuple[int, ...],
                    transposed: bool, path: str) -> Tree:
  """{'kernel', 'bias'} of a flax (transposed) conv [kh, kw, I, O] from a Caffe
  (de)convolution."""
  kh, kw, cin, cout = kernel_shape
  layout = (cin, cout, kh, kw) if transposed else (cout, cin, kh, kw)
  weight = _take(sd, block.conv, 0, layout, path)
  kernel = conv_transpose_kernel(weight) if transposed else conv_kernel(weight)
  return {"kernel": kernel, "bias": _take(sd, block.conv, 1, (cout,), path)}


def _batch_norm(sd: StateDict, block: _Block, channels: int, path: str) -> tuple[Tree, Tree]:
  """(params {'scale', 'bias'} from the Scale layer, batch_stats {'mean', 'var'} from the
  BatchNorm's (mean * f, var * f, f), with Caffe's eps folded into var for flax's epsilon)."""
  mean, var = (_take(sd, block.bn, i, (channels,), path) for i in (0, 1))
  factor = float(_take(sd, block.bn, 2, (1,), path)[0])
  scale = 0.0 if factor == 0 else 1.0 / factor
  stats = {"mean": mean * scale,
           "var": var * scale + np.float32(block.bn.params["eps"] - dih.BN_EPSILON)}
  params = {"scale": _take(sd, block.scale, 0, (channels,), path),
            "bias": _take(sd, block.scale, 1, (channels,), path)}
  return params, stats


def _fc_variables(sd: StateDict, block: _Block, kernel_shape: tuple[int, ...],
                  channels: int) -> Tree:
  """fc7: Caffe weight [N, C * H * W] over (C, H, W) -> Dense kernel [H * W * C, N] over the
  NHWC map flattened in (H, W, C) order."""
  inputs, outputs = kernel_shape
  side = int(round(np.sqrt(inputs // channels)))
  weight = _take(sd, block.conv, 0, (outputs, channels, side, side), "fc7")
  kernel = np.transpose(weight, (2, 3, 1, 0)).reshape(inputs, outputs)
  return {"kernel": kernel, "bias": _take(sd, block.conv, 1, (outputs,), "fc7")}


def _put(tree: Tree, path: tuple[str, ...], value: Any) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def variables(sd: StateDict, net: Net, expected: Tree) -> Tree:
  """The DIH variables of the deploy net in `net`, shaped like `expected`.

  Raises:
    ConversionError: a structural difference from the deploy net, a missing or mis-sized blob.
  """
  params: Tree = {}
  stats: Tree = {}
  for path, block in _structure(net).items():
    where, transposed = "/".join(path), block.conv.type == "Deconvolution"
    leaf = expected["params"]
    for name in path:
      leaf = leaf[name]
    if path == ("fc7",):
      _put(params, path, _fc_variables(sd, block, leaf["kernel"].shape,
                                       dih.encoder_channels(LEVELS)[-1]))
    elif block.bn is None:
      _put(params, path, _conv_variables(sd, block, leaf["kernel"].shape, transposed, where))
    else:
      conv = "deconv" if transposed else "conv"   # DeconvBlock's / ConvBlock's sub-module
      _put(params, path + (conv,),
           _conv_variables(sd, block, leaf[conv]["kernel"].shape, transposed, where))
      p, s = _batch_norm(sd, block, leaf["bn"]["scale"].shape[0], where)
      _put(params, path + ("bn",), p)
      _put(stats, path + ("bn",), s)
  out = {"params": params, "batch_stats": stats}
  check_tree(expected, out)
  return out


def dih512(sd: StateDict, net: Net) -> Converted:
  """harmonize_iter_200000.caffemodel -> DIH variables (512 px, fc7, 26 parsing classes)."""
  expected = harmonization.model_expected("dih512")
  return Converted("dih512", variables(sd, net, expected),
                   dict(harmonization.MODEL_CONFIGS["dih512"]))
