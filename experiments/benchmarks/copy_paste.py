r"""Benchmark of the copy-paste system: train examples/s, inference ms/megapixel, GFLOP/s, and
the throughput of the on-device transform T.

  python -m experiments.benchmarks.copy_paste --config=configs/faces.py \
      [--image_size=512] [--batch_size=5] [--out=experiments/benchmarks/results.jsonl]

Runs on whatever devices JAX sees (the batch is sharded over all of them, as in training).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cpjax.ops.transform import transform_T
from cpjax.tasks.base import example_keys
from cpjax.train import partitioning
from experiments.benchmarks import harness

_CONFIG = config_flags.DEFINE_config_file("config", "configs/faces.py", "Config to benchmark.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Override config.data.image_size.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the global batch size.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations first (compilation, caches).")
_OUT = flags.DEFINE_string("out", None, "Append the JSON row to this file.")


def main(argv):
  del argv
  bench = harness.task_bench(_CONFIG.value, _IMAGE_SIZE.value, _BATCH.value)
  config, mesh, task = bench.config, bench.mesh, bench.task
  size, batch_size = config.data.image_size, config.batch_size
  key = jax.random.key(0)
  rng = np.random.default_rng(0)
  batch = partitioning.global_batch(
      {"image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
       "index": np.arange(batch_size, dtype=np.int32)}, mesh)
  train_stats = harness.measure(bench.train_step, bench.init(), batch, key,
                                iters=_ITERS.value, warmup=_WARMUP.value, chain=True)
  state = bench.init()

  def infer(state, batch, key):
    ex = task.problems(batch, key, jnp.zeros((), jnp.int32))
    return task.generate(state.generator, ex, key)

  infer_stats = harness.measure(jax.jit(infer), state, batch, key, iters=_ITERS.value,
                                warmup=_WARMUP.value)

  def transform(batch, key):
    images = batch["image"].astype(jnp.float32) / 255.0
    keys = example_keys(key, 0, batch["index"])
    return jax.vmap(transform_T, in_axes=(0, 0, None))(keys, images, task.transform)

  t_stats = harness.measure(jax.jit(transform), batch, key, iters=_ITERS.value,
                            warmup=_WARMUP.value)
  megapixels = batch_size * size * size / 1e6
  harness.write_row(_OUT.value, {
      "benchmark": "copy_paste",
      "config": config_flags.get_config_filename(flags.FLAGS["config"]), "image_size": size,
      "global_batch": batch_size, **harness.environment(),
      "train_examples_per_sec": batch_size / train_stats["seconds_per_call"],
      "train_gflops_per_sec": train_stats["achieved_gflops_per_sec"],
      "train_gflops_per_step": train_stats["gflops_per_call"],
      "train_compile_seconds": train_stats["compile_seconds"],
      "inference_ms_per_megapixel": infer_stats["seconds_per_call"] * 1e3 / megapixels,
      "inference_gflops_per_sec": infer_stats["achieved_gflops_per_sec"],
      "transform_images_per_sec": batch_size / t_stats["seconds_per_call"],
      "transform_megapixels_per_sec": megapixels / t_stats["seconds_per_call"],
  })


if __name__ == "__main__":
  app.run(main)
