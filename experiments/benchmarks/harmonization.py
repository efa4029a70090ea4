r"""Benchmark of the harmonisation models: train examples/s and inference ms per image.

  python -m experiments.benchmarks.harmonization --config=configs/iharmony4_idih.py \
      [--image_size=256] [--batch_size=16] [--out=experiments/benchmarks/results.jsonl]
  python -m experiments.benchmarks.harmonization --config=configs/iharmony4_idih_hrnet.py:w18

Times one jitted train step (forward, FN-MSE, backward, Adam, BatchNorm statistics) on a batch
of real-pair problems (random uint8 composites, real images and rectangle masks), and
inference (`HarmonizationTask.harmonize`) on the same batch, on whatever devices JAX sees (the
batch sharded over all of them, as in training).
"""
from __future__ import annotations

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cpjax.train import partitioning
from experiments.benchmarks import harness

_CONFIG = config_flags.DEFINE_config_file("config", "configs/iharmony4_idih.py",
                                          "Config to benchmark.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Override config.data.image_size.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the global batch size.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations first (compilation, caches).")
_OUT = flags.DEFINE_string("out", None, "Append the JSON row to this file.")


def real_pair_batch(batch_size: int, size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random composites and reals with a centred rectangle mask (a quarter of the image)."""
  rng = np.random.default_rng(seed)
  mask = np.zeros((batch_size, size, size, 1), np.uint8)
  mask[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 255
  return {"image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
          "real": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
          "mask": mask, "index": np.arange(batch_size, dtype=np.int32),
          "subset": np.zeros(batch_size, np.int32)}


def main(argv):
  del argv
  bench = harness.task_bench(_CONFIG.value, _IMAGE_SIZE.value, _BATCH.value)
  config, task, init = bench.config, bench.task, bench.init
  size, batch_size = config.data.image_size, config.batch_size
  key = jax.random.key(0)
  batch = partitioning.global_batch(real_pair_batch(batch_size, size), bench.mesh)
  train_stats = harness.measure(bench.train_step, init(), batch, key, iters=_ITERS.value,
                                warmup=_WARMUP.value, chain=True)

  def infer(state, batch):
    ex = task.problems(batch, key, 0, train=False)
    return task.harmonize(state, ex["composite"], ex["mask"])

  infer_stats = harness.measure(jax.jit(infer), init(), batch, iters=_ITERS.value,
                                warmup=_WARMUP.value)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(init().params))
  harness.write_row(_OUT.value, {
      "benchmark": "harmonization", "model": config.model.name,
      "hrnet_width": config.model.get("hrnet_width"),
      "config": config_flags.get_config_filename(flags.FLAGS["config"]), "image_size": size,
      "global_batch": batch_size, "parameters": params, **harness.environment(),
      "train_examples_per_sec": batch_size / train_stats["seconds_per_call"],
      "train_gflops_per_sec": train_stats["achieved_gflops_per_sec"],
      "train_gflops_per_step": train_stats["gflops_per_call"],
      "inference_ms_per_image": infer_stats["seconds_per_call"] * 1e3 / batch_size,
      "inference_gflops_per_sec": infer_stats["achieved_gflops_per_sec"],
  })


if __name__ == "__main__":
  app.run(main)
