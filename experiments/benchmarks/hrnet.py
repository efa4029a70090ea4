r"""Benchmark of the foreground-aware HRNetV2 + OCR backbone alone (cpjax.models.hrnet.HRNetOCR):
inference milliseconds per batch, XLA's FLOP count and achieved GFLOP/s, per width.

  python -m experiments.benchmarks.hrnet [--widths=w18s,w18,w32] [--image_size=256] \
      [--batch_size=1] [--dtype=float32|bfloat16] [--iters=10] \
      [--out=experiments/benchmarks/results.jsonl]

One JSON row per width: eval mode (running BatchNorm statistics, no dropout), jitted, after
warm-up, on the default device; `ms_vs_first` is the time relative to the first width listed.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cpjax.models import hrnet
from experiments.benchmarks import harness

_WIDTHS = flags.DEFINE_list("widths", ["w18s", "w18", "w32"], "HRNetOCR widths to time.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Square input size in pixels.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Images per call.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations first (compilation, caches).")
_OUT = flags.DEFINE_string("out", None, "Append the JSON rows to this file.")


def backbone_row(width: str, image_size: int, batch_size: int, dtype: Any, iters: int,
                 warmup: int) -> dict[str, Any]:
  """Times HRNetOCR(width) inference on a random image and a centred square mask.

  Returns:
    A JSON-able row: width, parameter count, ms per call, ms per image, GFLOPs per call and
    achieved GFLOP/s.
  """
  model = hrnet.HRNetOCR(width, dtype=dtype)
  rng = np.random.default_rng(0)
  image = jnp.asarray(rng.normal(size=(batch_size, image_size, image_size, 3)), jnp.float32)
  mask = np.zeros((batch_size, image_size, image_size, 1), np.float32)
  mask[:, image_size // 4:3 * image_size // 4, image_size // 4:3 * image_size // 4] = 1.0
  mask = jnp.asarray(mask)
  variables = jax.jit(lambda key: model.init(key, image, mask, False))(jax.random.key(0))
  params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(variables["params"]))
  infer = jax.jit(lambda v, x, m: model.apply(v, x, m, False))
  stats = harness.measure(infer, variables, image, mask, iters=iters, warmup=warmup)
  ms = stats["seconds_per_call"] * 1e3
  return {"benchmark": "hrnet_ocr_backbone", "width": width, "image_size": image_size,
          "batch_size": batch_size, "dtype": jnp.dtype(dtype).name, "params": params,
          "ms_per_call": ms, "ms_per_image": ms / batch_size,
          "gflops_per_call": stats["gflops_per_call"],
          "achieved_gflops_per_sec": stats["achieved_gflops_per_sec"]}


def main(argv):
  del argv
  dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
  first_ms = None
  for width in _WIDTHS.value:
    row = backbone_row(width, _IMAGE_SIZE.value, _BATCH.value, dtype, _ITERS.value,
                       _WARMUP.value)
    first_ms = first_ms or row["ms_per_call"]
    row["ms_vs_first"] = row["ms_per_call"] / first_ms
    harness.write_row(_OUT.value, {**row, **harness.environment()})


if __name__ == "__main__":
  app.run(main)
