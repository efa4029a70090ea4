"""VGG16 ImageNet weights -> `cpjax.models.vgg.VGG16`, with the classifier as FCN's fc6 / fc7.

Models (`--model` of `python -m cpjax.tools.convert`):
  vgg16_torchvision  torchvision's `vgg16-397923af.pth` (RGB input normalised with the ImageNet
                     mean / std: `cpjax.ops.color.imagenet_normalize`).
  vgg16_caffe        pytorch-fcn's `vgg16_from_caffe.pth`: the same key names, the weights of the
                     Caffe VGG16 (BGR input on 0..255 minus the Caffe mean:
                     `cpjax.models.vgg.caffe_preprocess`), what FCN is initialised from.

State-dict keys (torchvision naming): `features.N.weight` [O, I, 3, 3] / `.bias` for the 13
convs (N in `cpjax.models.vgg.TORCHVISION_FEATURE_INDEX`), `classifier.0` (Linear 25088 ->
4096), `classifier.3` (4096 -> 4096), `classifier.6` (4096 -> 1000).

Converted variables: the parameter tree of `cpjax.models.fcn.FCN` without its scoring layers,
  {'params': {'vgg': {'conv1_1': {'kernel', 'bias'}, ... 'conv5_3': ...},
              'fc6': {'kernel' [7, 7, 512, 4096], 'bias'}, 'fc7': {'kernel' [1, 1, 4096, 4096],
              'bias'}}}
so that FCN takes them as they are and the perceptual losses take `params['vgg']`.

Choice: the classifier is kept as fc6 / fc7 convolutions, as pytorch-fcn's
`copy_params_from_vgg16` does (`classifier.0.weight.view(4096, 512, 7, 7)`): torchvision
flattens pool5 in (C, H, W) order, so the view is exactly a 7x7 valid conv over NCHW pool5, and
its flax kernel applied to NHWC pool5 gives the same numbers. `classifier.6` (the 1000 ImageNet
scores) has no place in cpjax and is dropped (reported).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from cpjax.convert import Converted, checkpoint
from cpjax.convert.state_dict import ConversionError, StateDict, Tree, check_tree, conv_kernel
from cpjax.models import vgg
from cpjax.models.fcn import FCN

# module_config 'preprocess' of each model: the input normalisation its weights expect.
PREPROCESS = {"vgg16_torchvision": "imagenet", "vgg16_caffe": "caffe"}
# The released file of each model (the README says where it is published).
FILES = {"vgg16_torchvision": "vgg16-397923af.pth", "vgg16_caffe": "vgg16_from_caffe.pth"}
# FCN's fully connected layers as convs: name -> (kernel size, input channels).
_FC = {"fc6": (7, vgg.WIDTHS[-1]), "fc7": (1, 4096)}


def trunk(sd: StateDict, key: dict[str, str]) -> Tree:
  """The 13 convs of VGG16 by cpjax name, from state-dict prefixes `key[name]`.

  Returns:
    {'conv1_1': {'kernel' [3, 3, I, O], 'bias' [O]}, ..., 'conv5_3': ...}.
  """
  return {name: sd.conv(key[name]) for name in vgg.CONV_NAMES}


def fully_connected(sd: StateDict, name: str, prefix: str) -> Tree:
  """fc6 / fc7 as a flax Conv from a Linear or an already convolutional weight at `prefix`.

  A Linear weight [4096, C k k] is viewed as a conv weight [4096, C, k, k] (row-major, i.e. the
  (C, H, W) flattening of PyTorch's NCHW maps) before the usual conv layout change.
  """
  size, channels = _FC[name]
  weight = sd.take(f"{prefix}.weight")
  if weight.ndim == 2:
    if weight.shape[1] != channels * size * size:
      raise ConversionError(f"{prefix}.weight is {weight.shape}; VGG16's {name} takes "
                            f"{channels}x{size}x{size} = {channels * size * size} inputs")
    weight = weight.reshape(weight.shape[0], channels, size, size)
  return {"kernel": conv_kernel(weight), "bias": sd.take(f"{prefix}.bias")}


def expected_shapes(num_classes: int, variant: str) -> Tree:
  """Abstract variables of the full-size `FCN` (VGG16 widths, fc width 4096)."""
  model = FCN(num_classes=num_classes, variant=variant)
  return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3),
                                                                            jnp.float32))


def _vgg16(sd: StateDict, model: str) -> Converted:
  key = {name: f"features.{i}" for name, i in vgg.TORCHVISION_FEATURE_INDEX.items()}
  params = {"vgg": trunk(sd, key), "fc6": fully_connected(sd, "fc6", "classifier.0"),
            "fc7": fully_connected(sd, "fc7", "classifier.3")}
  sd.drop("classifier.6.")
  fcn_params = expected_shapes(1, "32s")["params"]
  check_tree({name: fcn_params[name] for name in params}, params)
  return Converted(model=model, variables={"params": params},
                   module_config={"architecture": "vgg16", "preprocess": PREPROCESS[model],
                                  "widths": list(vgg.WIDTHS), "fc_width": 4096})


def vgg16_torchvision(sd: StateDict) -> Converted:
  """torchvision's ImageNet VGG16 (module docstring)."""
  return _vgg16(sd, "vgg16_torchvision")


def vgg16_caffe(sd: StateDict) -> Converted:
  """pytorch-fcn's vgg16_from_caffe.pth (module docstring)."""
  return _vgg16(sd, "vgg16_caffe")


def load_params(directory: str, preprocess: str, field: str) -> Tree:
  """The parameters of a converted vgg16_* directory whose weights expect `preprocess` input.

  Args:
    directory: written by `python -m cpjax.tools.convert --model=vgg16_...`.
    preprocess: the input normalisation of the network that takes them: 'caffe' (FCN) or
      'imagenet' (the perceptual losses).
    field: the config field that named the directory, for messages.

  Returns:
    {'vgg': {...}, 'fc6': {...}, 'fc7': {...}} float32 NumPy arrays (module docstring).

  Raises:
    FileNotFoundError: no converted directory (e.g. an .npz): the convert command.
    ValueError: other converted weights, or VGG16 weights for the other input normalisation
      (they would run, but on wrongly normalised input).
  """
  want = next(m for m, p in PREPROCESS.items() if p == preprocess)
  checkpoint.require_converted(directory, field, want, FILES[want])
  converted = checkpoint.load(directory)
  fix = f"convert {FILES[want]} with python -m cpjax.tools.convert --model={want}"
  if converted.model not in PREPROCESS:
    raise ValueError(f"{field}={directory} holds converted {converted.model!r} weights, not "
                     f"VGG16; {fix}")
  if converted.model != want:
    raise ValueError(f"{field}={directory} holds {converted.model} weights, which expect "
                     f"{PREPROCESS[converted.model]!r}-normalised input, but this network feeds "
                     f"{preprocess!r}-normalised input; {fix}")
  return converted.variables["params"]
