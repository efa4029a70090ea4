"""saic-vul/image_harmonization checkpoints -> `cpjax.models.dih`, and their use by the task.

Models (`--model` of `python -m cpjax.tools.convert`), the v1.0 release files of the reference:
  idih256           idih256.pth           improved_dih256: iDIH depth 7, BatchNorm from block 2,
                                          image fusion (`IDIH`)
  hrnet18s_idih256  hrnet18s_idih256.pth  HRNetV2-W18s + OCR + mask fusion joined to that iDIH
  hrnet18_idih256   hrnet18_idih256.pth   the same with HRNetV2-W18   (`IDIHHRNet`)
  hrnet32_idih256   hrnet32_idih256.pth   the same with HRNetV2-W32
and the Caffe DIH of wasidennis/DeepHarmonization, converted by `cpjax.convert.dih_caffe`:
  dih512            harmonize_iter_200000.caffemodel   `DIH` with fc7 and the parsing decoder

State-dict names (plain state dicts) -> flax paths of `IDIH` (prefixed 'model.' / 'model/' inside
`IDIHHRNet`):
  encoder.block{0,1}.block.{0: conv, 1: BatchNorm}      encoder/block{i}/{conv, bn}
  encoder.blocks_connected.block{i}.block.{0, 1}        encoder/block{i}/{conv, bn}     (i >= 2)
  decoder.deconv_blocks.{d}.block.{0: ConvTranspose2d, 1: BatchNorm}
                                                        decoder/block{d}/{deconv, bn}
  decoder.to_rgb, decoder.conv_attention                decoder/to_rgb, decoder/conv_attention
and of `IDIHHRNet`'s backbone (`HRNetOCR`):
  mask_conv.{0: conv, 1: ScaleLayer .scale}             backbone/mask_conv/{0, 1}
  backbone.hrnet.<trunk>                                backbone/hrnet/<trunk>  (as ImageNet)
  backbone.hrnet.conv3x3_ocr.{0, 1}                     backbone/ocr_conv3x3/{0, 1}
  backbone.hrnet.ocr_distri_head.*                      backbone/ocr_distri_head/*
Blocks 0 and 1 have no BatchNorm (nn.Identity, no keys); the 'cat' features connector and the
OCR gather head have no parameters. Transposed convs: PyTorch ConvTranspose2d(4, 2, p) kernels
flipped for flax's ConvTranspose with padding 3 - p (`cpjax.convert.state_dict`).

Use (`HarmonizationTask.warm_start` calls `pretrained_variables`):
  init_from=DIR            a converted idih256 / hrnet*_idih256 / dih512: the whole network
                           (parameters and BatchNorm statistics); config.model must build the same
                           network (for dih512 also model.input_space='caffe_bgr').
  model.backbone_init=DIR  a converted hrnet_w18s / hrnet_w18 / hrnet_w32 (ImageNet): the HRNet
                           trunk of an 'idih_hrnet' model of the same width; the OCR head, the
                           mask fusion and the iDIH keep their fresh initialisation.
Both are merged by `cpjax.convert.checkpoint.put` (leaves and shapes checked, scope by scope).
  model.backbone_init=random  the trunk from random weights, asked for explicitly.
iDIH-HRNet fine-tunes an ImageNet trunk: `check_initialisation` (called before a new run's
state is made, `Task.check_warm_start`) refuses an 'idih_hrnet' config with neither init_from nor
model.backbone_init, naming the file to download and the command that converts it.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Callable

import jax.numpy as jnp
import ml_collections
from absl import logging

from cpjax.convert import Converted, checkpoint
from cpjax.convert import hrnet as hrnet_convert
from cpjax.convert.hrnet import Path, expected_variables, module_variables
from cpjax.convert.state_dict import StateDict, Tree
from cpjax.models import dih, hrnet

SIZE = 256   # the fixed256 models: depth 7 needs 2**(7 + 1) px
RANDOM_INIT = "random"   # model.backbone_init asking for a randomly initialised HRNet trunk
SIZES = {"dih512": 512}   # other sizes: the Caffe DIH's fc7 takes conv6's 4x4 map of 512 px
# The released file of each model (the README says where it is published).
FILES = {**{m: f"{m}.pth" for m in ("idih256", "hrnet18s_idih256", "hrnet18_idih256",
                                    "hrnet32_idih256")},
         "dih512": "harmonize_iter_200000.caffemodel", **hrnet_convert.FILES}
# HRNetV2 width -> the --model converting its ImageNet trunk.
TRUNKS = {width: model for model, width in hrnet_convert.WIDTHS.items()}
# The variable collections a converted network fills.
COLLECTIONS = ("params", "batch_stats")
# The reference's improved_dih256 (depth 7, BatchNorm from block 2, image fusion), as
# config.model fields of the harmonisation task.
IDIH256 = {"depth": 7, "ch": 64, "max_channels": 512, "batchnorm_from": 2}
MODEL_CONFIGS = {
    "idih256": {"name": "idih", **IDIH256, "image_fusion": True},
    **{f"hrnet{w}_idih256": {"name": "idih_hrnet", "hrnet_width": f"w{w}", **IDIH256,
                             "downsize_backbone_input": False} for w in ("18s", "18", "32")},
    # the Caffe deploy net (`cpjax.convert.dih_caffe`), fed in its own input space
    "dih512": {"name": "dih", "depth": 7, "ch": 64, "max_channels": 512, "fc_features": 1024,
               "parsing_classes": 26, "input_space": "caffe_bgr"},
}


def _idih_name(path: Path) -> str:
  """IDIH flax path -> reference (DeepImageHarmonization) state-dict prefix."""
  part, block, *rest = path
  if block in ("to_rgb", "conv_attention"):
    return f"decoder.{block}"
  index = int(block.removeprefix("block"))
  layer = {"conv": "0", "deconv": "0", "bn": "1"}[rest[0]]
  if part == "decoder":
    return f"decoder.deconv_blocks.{index}.block.{layer}"
  owner = f"encoder.block{index}" if index < 2 else f"encoder.blocks_connected.block{index}"
  return f"{owner}.block.{layer}"


def _idih_hrnet_name(path: Path) -> str:
  """IDIHHRNet flax path -> reference (HRNetIHModel) state-dict prefix."""
  if path[0] == "model":
    return "model." + _idih_name(path[1:])
  scope, rest = path[1], ".".join(path[2:])
  if scope == "mask_conv":
    return f"mask_conv.{rest}"
  if scope == "ocr_conv3x3":
    return f"backbone.hrnet.conv3x3_ocr.{rest}"
  if scope == hrnet.TRUNK:
    return f"backbone.hrnet.{rest}"
  return f"backbone.hrnet.{scope}.{rest}"   # ocr_distri_head


def _is_transposed(path: Path) -> bool:
  return path[-1] == "deconv"


def build_model(module_config: dict[str, Any]) -> Any:
  """The flax module a converted harmonisation model belongs to ('input_space' is the task's)."""
  m = {k: v for k, v in module_config.items() if k != "input_space"}
  name = m.pop("name")
  if name == "idih":
    return dih.IDIH(**m)
  if name == "dih":
    return dih.DIH(**m)
  return dih.IDIHHRNet(width=m.pop("hrnet_width"), **m)


@functools.lru_cache(maxsize=None)
def model_expected(model: str) -> Tree:
  """Variable shapes of the network of a released model (cached: tracing takes seconds)."""
  size = SIZES.get(model, SIZE)
  image = jnp.zeros((1, size, size, 3), jnp.float32)
  mask = jnp.zeros((1, size, size, 1), jnp.float32)
  return expected_variables(build_model(MODEL_CONFIGS[model]), image, mask)


def _converter(model: str) -> Callable[[StateDict], Converted]:
  module_config = MODEL_CONFIGS[model]
  name_of = _idih_name if module_config["name"] == "idih" else _idih_hrnet_name

  def convert(sd: StateDict) -> Converted:
    variables = module_variables(sd, model_expected(model), name_of, _is_transposed)
    return Converted(model, variables, dict(module_config))
  convert.__doc__ = f"{model}.pth -> {module_config['name']} variables."
  return convert


idih256 = _converter("idih256")
hrnet18s_idih256 = _converter("hrnet18s_idih256")
hrnet18_idih256 = _converter("hrnet18_idih256")
hrnet32_idih256 = _converter("hrnet32_idih256")


# --- use by the harmonisation task --------------------------------------------------------


def _metadata(directory: str, option: str, models: tuple[str, ...], model: str) -> dict[str, Any]:
  """converted.json of a converted-weights directory holding one of `models` (checked before
  any weights are read; another path is refused with the command converting `model`)."""
  checkpoint.require_converted(directory, option, model, FILES[model])
  meta = json.loads((pathlib.Path(directory).expanduser() / checkpoint.METADATA).read_text())
  if meta["model"] not in models:
    raise ValueError(f"{option}={directory} holds converted {meta['model']!r} weights; it "
                     f"takes one of {', '.join(models)}")
  return meta


def _released(model: ml_collections.ConfigDict) -> str:
  """The released network config.model builds (idih256 when none), for advice."""
  return next((name for name, fields in MODEL_CONFIGS.items()
               if all(model.get(k) == v for k, v in fields.items())), "idih256")


def check_initialisation(config: ml_collections.ConfigDict) -> None:
  """Refuses an iDIH-HRNet config that names no pretrained weights (module docstring).

  Raises:
    ValueError: an 'idih_hrnet' model with init_from and model.backbone_init unset (one line
      naming the file, where it is published, the convert command and the flags), or an
      unknown model.hrnet_width.
  """
  m = config.model
  if m.get("name") != "idih_hrnet" or m.get("backbone_init") or config.get("init_from"):
    return
  if m.hrnet_width not in TRUNKS:
    raise ValueError(f"model.hrnet_width is {m.hrnet_width!r}; use one of {', '.join(TRUNKS)}")
  model = TRUNKS[m.hrnet_width]
  file = hrnet_convert.FILES[model]
  raise ValueError(
      f"model.backbone_init is not set, and iDIH-HRNet fine-tunes an ImageNet HRNetV2-"
      f"{m.hrnet_width} trunk: download {file} (the ImageNet models of the "
      "HRNet/HRNet-Image-Classification README), "
      + checkpoint.convert_advice("model.backbone_init", model, file)
      + " (or --config.init_from=DIR: a converted "
      f"whole network); --config.model.backbone_init={RANDOM_INIT} starts the trunk from "
      "random weights")


def pretrained_variables(config: ml_collections.ConfigDict, variables: Tree) -> Tree | None:
  """The harmonisation model's variables with the pretrained weights of the config put in.

  Args:
    config: the task config (`init_from`, `model.backbone_init`, `model.*`).
    variables: the fresh {'params', 'batch_stats'} of the task's model.

  Returns:
    The new variables (the dtypes of `variables`), or None when the config names no weights.

  Raises:
    ValueError: a directory of the wrong model, a config that builds another network, or a
      leaf of another shape (`checkpoint.put`).
    FileNotFoundError: a path without converted weights (e.g. a .pth): the convert command.
  """
  init_from = config.get("init_from", "")
  backbone_init = config.model.get("backbone_init", "")
  backbone_init = "" if backbone_init == RANDOM_INIT else backbone_init
  if init_from and backbone_init:
    raise ValueError("init_from (the whole network) and model.backbone_init (its HRNet trunk) "
                     "both set; give one")
  if init_from:
    meta = _metadata(init_from, "init_from", tuple(MODEL_CONFIGS), _released(config.model))
    differ = {k: v for k, v in meta["module_config"].items() if config.model.get(k) != v}
    if differ:
      wanted = " ".join(f"--config.model.{k}={v}" for k, v in differ.items())
      raise ValueError(f"init_from={init_from} holds {meta['model']}, which needs {wanted} "
                       f"(the config builds another network)")
    converted = checkpoint.load(init_from).variables
    logging.info("init_from: the whole %s network from %s", meta["model"], init_from)
    return checkpoint.put(variables, {(k,): converted.get(k, {}) for k in COLLECTIONS},
                          "init_from", init_from)
  if backbone_init:
    meta = _metadata(backbone_init, "model.backbone_init", tuple(hrnet_convert.WIDTHS),
                     TRUNKS.get(config.model.get("hrnet_width"), "hrnet_w18s"))
    width = meta["module_config"]["hrnet_width"]
    if config.model.name != "idih_hrnet" or config.model.get("hrnet_width") != width:
      raise ValueError(f"model.backbone_init={backbone_init} holds the HRNetV2-{width} trunk; "
                       f"it needs model.name='idih_hrnet' with model.hrnet_width='{width}' "
                       f"(e.g. configs/iharmony4_idih_hrnet.py:{width})")
    converted = checkpoint.load(backbone_init).variables
    logging.info("model.backbone_init: the HRNetV2-%s trunk from %s", width, backbone_init)
    return checkpoint.put(variables, {(k, "backbone", hrnet.TRUNK): converted[k]
                                      for k in COLLECTIONS}, "model.backbone_init", backbone_init)
  return None
