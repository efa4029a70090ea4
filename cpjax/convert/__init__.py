"""Import of released PyTorch checkpoints into cpjax's flax modules.

A converter is a function `(sd: StateDict) -> Converted` that takes every key it needs from the
state dict (`cpjax.convert.state_dict`), checks the result against the module's own variable
shapes (`check_tree`), and drops on purpose only keys it names (reported to the user). `convert`
then fails if any key is left unused: nothing is silently ignored or left at random init.
`CONVERTERS` maps the `--model` names of `python -m cpjax.tools.convert` to converters, imported
only when asked for. Converters of Caffe models (`CAFFE_MODELS`) take `(sd, net)`: the net's
learned blobs as the state dict ('{layer}.{blob index}') and the `cpjax.convert.caffe.Net`
whose graph says where they go.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import numpy as np

from cpjax.convert.caffe import Net
from cpjax.convert.state_dict import ConversionError, StateDict

__all__ = ["CONVERTERS", "Converted", "ConversionError", "convert"]


@dataclasses.dataclass
class Converted:
  """Converted weights and what they belong to.

  Attributes:
    model: the converter's name (a key of CONVERTERS).
    variables: flax variables {'params': ..., 'batch_stats': ... (if the module has BatchNorm)}
      with float32 NumPy leaves.
    module_config: JSON-able description of the module the variables fit (e.g. its width), so
      tasks can check they build the same architecture.
    dropped: reference keys that were deliberately not used (reported by the tool).
  """
  model: str
  variables: dict[str, Any]
  module_config: dict[str, Any]
  dropped: list[str] = dataclasses.field(default_factory=list)


# --model name -> "module:function"; see each module for the file it expects.
CONVERTERS: dict[str, str] = {
    "vgg16_torchvision": "cpjax.convert.vgg:vgg16_torchvision",
    "vgg16_caffe": "cpjax.convert.vgg:vgg16_caffe",
    "fcn32s": "cpjax.convert.fcn:fcn32s",
    "fcn16s": "cpjax.convert.fcn:fcn16s",
    "fcn8s": "cpjax.convert.fcn:fcn8s",
    "cpn_video": "cpjax.convert.video_cpn:cpn_video",
    "hrnet_w18s": "cpjax.convert.hrnet:hrnet_w18s",
    "hrnet_w18": "cpjax.convert.hrnet:hrnet_w18",
    "hrnet_w32": "cpjax.convert.hrnet:hrnet_w32",
    "idih256": "cpjax.convert.harmonization:idih256",
    "hrnet18s_idih256": "cpjax.convert.harmonization:hrnet18s_idih256",
    "hrnet18_idih256": "cpjax.convert.harmonization:hrnet18_idih256",
    "hrnet32_idih256": "cpjax.convert.harmonization:hrnet32_idih256",
    "dih512": "cpjax.convert.dih_caffe:dih512",
}
# Models released as Caffe .caffemodel files (the others are PyTorch state dicts).
CAFFE_MODELS = ("dih512",)


# Converted models that run on their own, and the config (file in configs/, variant) that builds
# the system around them: tools accept their directories in place of a training workdir.
RUNNABLE: dict[str, str] = {
    "idih256": "iharmony4_idih.py",
    "hrnet18s_idih256": "iharmony4_idih_hrnet.py:w18s",
    "hrnet18_idih256": "iharmony4_idih_hrnet.py:w18",
    "hrnet32_idih256": "iharmony4_idih_hrnet.py:w32",
    "dih512": "iharmony4_dih.py",
    "fcn32s": "fcn_voc.py:32s",
    "fcn16s": "fcn_voc.py:16s",
    "fcn8s": "fcn_voc.py:8s",
    "cpn_video": "video_inpainting.py",
}


def convert(model: str, source: Mapping[str, np.ndarray] | Net) -> Converted:
  """Converts a state dict (names -> NumPy arrays), or a Caffe net for `CAFFE_MODELS`, for the
  converter named `model`.

  Raises:
    ConversionError: unknown model, the wrong kind of source, or keys that are missing, unused
      or mis-shaped (listed).
  """
  if model not in CONVERTERS:
    raise ConversionError(f"unknown model {model!r}; known: {', '.join(sorted(CONVERTERS))}")
  if (model in CAFFE_MODELS) != isinstance(source, Net):
    kind = "Caffe net" if model in CAFFE_MODELS else "state dict"
    raise ConversionError(f"{model} converts a {kind}, not a {type(source).__name__}")
  module_name, function_name = CONVERTERS[model].split(":")
  function = getattr(importlib.import_module(module_name), function_name)
  if isinstance(source, Net):
    sd = StateDict(source.arrays())
    converted = function(sd, source)
  else:
    sd = StateDict(source)
    converted = function(sd)
  sd.check_all_used()
  converted.dropped = sorted(set(converted.dropped) | set(sd.dropped))
  return converted
