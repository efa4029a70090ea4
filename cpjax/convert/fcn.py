"""pytorch-fcn's FCN-32s / 16s / 8s checkpoints -> `cpjax.models.fcn.FCN`.

Models: `fcn32s`, `fcn16s`, `fcn8s` (pytorch-fcn's `fcn32s_from_caffe.pth`,
`fcn16s_from_caffe.pth`, `fcn8s_from_caffe.pth`, converted from the Caffe originals, or any
checkpoint trained with pytorch-fcn's `FCN32s` / `FCN16s` / `FCN8s`; the number of classes is
read from `score_fr`). Not `fcn8s-atonce`: its forward scales pool4 / pool3 by 0.01 / 0.0001,
which cpjax's FCN does not.

State-dict keys and their places (the names are the same on both sides):
  conv1_1 ... conv5_3                     -> vgg/conv1_1 ... vgg/conv5_3    (Conv2d)
  fc6 [4096, 512, 7, 7], fc7, score_fr    -> fc6, fc7, score_fr             (Conv2d)
  score_pool4 (16s, 8s), score_pool3 (8s) -> score_pool4, score_pool3       (Conv2d)
  upscore (32s); upscore2, upscore16 (16s); upscore2, upscore_pool4, upscore8 (8s)
                                          -> the same names (ConvTranspose2d, no bias)
Conv2d weights [O, I, kh, kw] -> kernel [kh, kw, I, O]. The FCN's transposed convs use
`transpose_kernel=True` (PyTorch's semantics: the gradient of a correlation, kernel
[kh, kw, O, I] in flax), so a ConvTranspose2d weight [I, O, kh, kw] takes the same transpose and
no flip; padding 0 is flax's 'VALID' (k - 1 per side of the dilated input).

Input: the Caffe convention (BGR on 0..255 minus the mean), which the FCN applies itself
(`caffe_preprocess`) to RGB in [0, 1].
"""
from __future__ import annotations

from cpjax.convert import Converted, checkpoint
from cpjax.convert.state_dict import StateDict, Tree, check_tree, conv_kernel
from cpjax.convert.vgg import expected_shapes, fully_connected, trunk
from cpjax.models import vgg

# Converter name -> FCN variant.
VARIANTS = {"fcn32s": "32s", "fcn16s": "16s", "fcn8s": "8s"}
# Layers of each variant besides the trunk and fc6 / fc7: (1x1 score convs, transposed convs).
_HEADS = {"32s": (("score_fr",), ("upscore",)),
          "16s": (("score_fr", "score_pool4"), ("upscore2", "upscore16")),
          "8s": (("score_fr", "score_pool4", "score_pool3"),
                 ("upscore2", "upscore_pool4", "upscore8"))}


def _fcn(sd: StateDict, model: str) -> Converted:
  variant = VARIANTS[model]
  scores, upscores = _HEADS[variant]
  params = {"vgg": trunk(sd, {name: name for name in vgg.CONV_NAMES}),
            "fc6": fully_connected(sd, "fc6", "fc6"), "fc7": fully_connected(sd, "fc7", "fc7")}
  params.update({name: sd.conv(name) for name in scores})
  params.update({name: {"kernel": conv_kernel(sd.take(f"{name}.weight"))} for name in upscores})
  num_classes = params["score_fr"]["bias"].shape[0]
  check_tree(expected_shapes(num_classes, variant), {"params": params})
  return Converted(model=model, variables={"params": params},
                   module_config={"architecture": "fcn", "variant": variant,
                                  "num_classes": num_classes, "widths": list(vgg.WIDTHS),
                                  "fc_width": 4096, "preprocess": "caffe"})


def fcn32s(sd: StateDict) -> Converted:
  """pytorch-fcn FCN32s (module docstring)."""
  return _fcn(sd, "fcn32s")


def fcn16s(sd: StateDict) -> Converted:
  """pytorch-fcn FCN16s (module docstring)."""
  return _fcn(sd, "fcn16s")


def fcn8s(sd: StateDict) -> Converted:
  """pytorch-fcn FCN8s (module docstring)."""
  return _fcn(sd, "fcn8s")


def load_params(directory: str, field: str) -> Tree:
  """The parameters of a converted fcn32s / fcn16s / fcn8s directory.

  Args:
    directory: written by `python -m cpjax.tools.convert --model=fcn...`.
    field: the config field that named it, for messages.

  Returns:
    The FCN parameter tree (module docstring), float32 NumPy arrays.

  Raises:
    ValueError: the directory holds other converted weights.
  """
  converted = checkpoint.load(directory)
  if converted.model not in VARIANTS:
    raise ValueError(f"{field}={directory} holds converted {converted.model!r} weights, not an "
                     f"FCN; convert an FCN checkpoint with --model={'|'.join(VARIANTS)}"
                     + (" (VGG16 weights go to model.vgg_init)"
                        if converted.model.startswith("vgg16") else ""))
  return converted.variables["params"]

