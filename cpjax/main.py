r"""cpjax command line: train or evaluate any system from a config file.

  python -m cpjax.main --config=configs/demo.py[:variant] --workdir=DIR \
      [--mode=train|eval|eval_sweep] [--config.<key>=<value> ...]

Multi-host: run the same command on every host. TPU pods, SLURM and Open MPI jobs are detected;
an explicit launch adds --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
"""
from __future__ import annotations

import logging as logging_lib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cpjax import compilation

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with a variant: configs/demo.py:tiny.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples, eval.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "eval_sweep"],
                          "train (resumes from DIR), eval (one checkpoint), eval_sweep (all).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0, for an explicit multi-process launch.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the full traceback on errors.")
flags.mark_flags_as_required(["config", "workdir"])
compilation.define_flag()


class _OwnInfoOnly(logging_lib.Filter):
  """Keeps INFO lines of cpjax and its data pipelines; libraries show warnings and errors only
  (orbax alone logs dozens of INFO lines per checkpoint)."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    own = ("/cpjax/", "/data_pipelines/", "/experiments/")
    return record.levelno >= logging_lib.WARNING or any(p in record.pathname for p in own)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that --help is fast and flags are parsed before grain starts workers.
  from cpjax.train import partitioning, trainer  # pylint: disable=g-import-not-at-top

  if not _VERBOSE.value:
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
  compilation.setup()
  partitioning.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    if _MODE.value == "train":
      trainer.train(config, workdir)
    elif _MODE.value == "eval":
      trainer.evaluate(config, workdir)
    else:
      trainer.eval_sweep(config, workdir)
  except (ValueError, FileNotFoundError, FloatingPointError, OSError) as e:
    if _VERBOSE.value:
      raise
    print(f"cpjax.main: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main)
