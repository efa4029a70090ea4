"""Import of released PyTorch checkpoints into cpjax's flax modules.

A converter is a function `(sd: StateDict) -> Converted` that takes every key it needs from the
state dict (`cpjax.convert.state_dict`), checks the result against the module's own variable
shapes (`check_tree`), and drops on purpose only keys it names (reported to the user). `convert`
then fails if any key is left unused: nothing is silently ignored or left at random init.
`CONVERTERS` maps the `--model` names of `python -m cpjax.tools.convert` to converters, imported
only when asked for.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

import numpy as np

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
CONVERTERS: dict[str, str] = {}


def convert(model: str, arrays: Mapping[str, np.ndarray]) -> Converted:
  """Converts a state dict (names -> NumPy arrays) for the converter named `model`.

  Raises:
    ConversionError: unknown model, or keys that are missing, unused or mis-shaped (listed).
  """
  if model not in CONVERTERS:
    raise ConversionError(f"unknown model {model!r}; known: {', '.join(sorted(CONVERTERS))}")
  module_name, function_name = CONVERTERS[model].split(":")
  function = getattr(importlib.import_module(module_name), function_name)
  sd = StateDict(arrays)
  converted = function(sd)
  sd.check_all_used()
  converted.dropped = sorted(set(converted.dropped) | set(sd.dropped))
  return converted
