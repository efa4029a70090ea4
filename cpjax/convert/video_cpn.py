"""The released Copy-and-Paste Networks weights -> `cpjax.models.video_cpn.CPNet`.

Model `cpn_video`: the state dict of the reference's `CPNet` (shleecs/Copy-and-Paste-Networks-
for-Deep-Video-Inpainting, `weight.pth`), saved from `nn.DataParallel` (the tool strips the
'module.' prefix). Every conv is wrapped as `<name>.conv.0` (Conv2d in an nn.Sequential with
its ReLU); the keys and their places:

  A_Encoder.{conv12,conv2,conv23,conv3,conv34,conv4a,conv4b}.conv.0  -> align_encoder/<name>
  A_Regressor.{conv45,conv5a,conv5b,conv56}.conv.0                   -> align_regressor/<name>
  A_Regressor.fc (Linear 512 -> 6)                                   -> align_regressor/fc
  Encoder.{conv12,conv2,conv23,conv3,value3}.conv.0                  -> encoder/<name>
  Decoder.{conv4,conv5_1,conv5_2,convA4_1..4,conv3c,conv3b,conv3a,conv32,conv2,conv21}.conv.0
                                                                     -> decoder/<name>
Dropped (reported): A_Regressor.conv6a / conv6b: the released forward applies conv5a / conv5b
where these were meant (`CPNet(reuse_conv5=True)` reproduces it), so they never ran.
Buffers: `A_Encoder.mean/std`, `Encoder.mean/std`, `Decoder.mean/std`, `mean`, `mean3d` hold
the ImageNet mean / std that cpjax's modules use as constants; they are checked to be those
values (an error otherwise) when present.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from cpjax.convert import Converted, checkpoint
from cpjax.convert.state_dict import ConversionError, StateDict, Tree, check_tree
from cpjax.models.video_cpn import CPNet
from cpjax.ops.color import IMAGENET_MEAN, IMAGENET_STD

# The reference architecture's fields of `CPNet` (its defaults), recorded as
# module_config: the video task checks that its config builds the same network.
MODULE_CONFIG = {"align_widths": [64, 64, 128, 128, 256, 256, 256], "align_size": 224,
                 "regressor_width": 512, "reuse_conv5": True,
                 "encoder_widths": [64, 64, 128, 128, 128], "decoder_widths": [128, 128, 64, 64],
                 "dilations": [2, 4, 8, 16]}
_CONVS = {
    "align_encoder": ("A_Encoder", ("conv12", "conv2", "conv23", "conv3", "conv34", "conv4a",
                                    "conv4b")),
    "align_regressor": ("A_Regressor", ("conv45", "conv5a", "conv5b", "conv56")),
    "encoder": ("Encoder", ("conv12", "conv2", "conv23", "conv3", "value3")),
    "decoder": ("Decoder", ("conv4", "conv5_1", "conv5_2", "convA4_1", "convA4_2", "convA4_3",
                            "convA4_4", "conv3c", "conv3b", "conv3a", "conv32", "conv2",
                            "conv21")),
}
# Normalisation buffers and the constants they must hold (broadcast shapes [1, 3, 1, 1(, 1)]).
_BUFFERS = {"A_Encoder.mean": IMAGENET_MEAN, "A_Encoder.std": IMAGENET_STD,
            "Encoder.mean": IMAGENET_MEAN, "Encoder.std": IMAGENET_STD,
            "Decoder.mean": IMAGENET_MEAN, "Decoder.std": IMAGENET_STD,
            "mean": IMAGENET_MEAN, "mean3d": IMAGENET_MEAN}


def _check_buffers(sd: StateDict) -> None:
  for key, want in _BUFFERS.items():
    if key in sd:
      got = sd.take(key).reshape(-1)
      if got.shape != (3,) or not np.allclose(got, want, atol=1e-6):
        raise ConversionError(f"{key} is {got.tolist()}, but cpjax's CPNet normalises "
                              f"with {list(want)}; is this a Copy-and-Paste Networks checkpoint?")


def expected_shapes() -> Tree:
  """Abstract variables of the reference-size `CPNet` (shapes do not depend on the
  frame size; one reference of a 16x16 frame is traced)."""
  net = CPNet(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in MODULE_CONFIG.items()})
  side = MODULE_CONFIG["align_size"] // 8
  shapes = [(1, 1, side, side, MODULE_CONFIG["align_widths"][-1]), (1, 1, 16, 16, 3),
            (1, 1, 16, 16, 1), (1, 16, 16, 3), (1, 16, 16, 1)]
  return jax.eval_shape(net.init, jax.random.key(0),
                        *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes))


def cpn_video(sd: StateDict) -> Converted:
  """The released CPNet state dict (module docstring)."""
  params = {scope: {name: sd.conv(f"{prefix}.{name}.conv.0") for name in names}
            for scope, (prefix, names) in _CONVS.items()}
  params["align_regressor"]["fc"] = sd.dense("A_Regressor.fc")
  sd.drop("A_Regressor.conv6a.")
  sd.drop("A_Regressor.conv6b.")
  _check_buffers(sd)
  check_tree(expected_shapes(), {"params": params})
  return Converted(model="cpn_video", variables={"params": params}, module_config=MODULE_CONFIG)


def load_params(directory: str, field: str, model: Mapping[str, Any]) -> Tree:
  """The parameters of a converted cpn_video directory, for a network built from `model`.

  Args:
    directory: written by `python -m cpjax.tools.convert --model=cpn_video`.
    field: the config field that named it, for messages.
    model: the task's `config.model` (`CPNet` fields); it must describe the released
      network (`MODULE_CONFIG`): a smaller align_size, say, would fit the shapes but not the
      weights.

  Returns:
    The `CPNet` parameter tree (module docstring), float32 NumPy arrays.

  Raises:
    FileNotFoundError: no converted directory: the convert command.
    ValueError: other converted weights, or a model config other than the released one (the
      differing fields named).
  """
  checkpoint.require_converted(directory, field, "cpn_video", "weight.pth")
  converted = checkpoint.load(directory)
  if converted.model != "cpn_video":
    raise ValueError(f"{field}={directory} holds converted {converted.model!r} weights, not "
                     "Copy-and-Paste Networks; convert the CPN release with --model=cpn_video")
  ours = {k: list(v) if isinstance(v, (tuple, list)) else v
          for k, v in ((k, model.get(k)) for k in converted.module_config)}
  if not ours.get("regressor_width"):
    ours["regressor_width"] = 2 * ours["align_widths"][-1]
  differ = [f"model.{k}={ours[k]} (released: {v})"
            for k, v in converted.module_config.items() if ours[k] != v]
  if differ:
    raise ValueError(f"{field}={directory} holds the released CPN, but the config builds another "
                     f"network: {'; '.join(differ)}; use configs/video_inpainting.py's model")
  return converted.variables["params"]
