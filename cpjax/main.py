r"""cpjax command line: train or evaluate any system from a config file.

  python -m cpjax.main --config=configs/demo.py[:variant] --workdir=DIR \
      [--mode=train|eval|eval_sweep] [--config.<key>=<value> ...]

Multi-host: run the same command on every host. TPU pods, SLURM and Open MPI jobs are detected;
an explicit launch adds --coordinator_address=HOST:PORT --num_processes=N --process_id=I.
If a process dies, the others stop with one line naming it (exit status 3, `train.peers`).
"""
from __future__ import annotations

import difflib
import logging as logging_lib
import pathlib
import sys
import warnings
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from cpjax import compilation
from cpjax.train import defaults

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
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_secs", 60, "Seconds a process may stay silent before a multi-process "
    "run counts it lost and stops (each survivor then says which process was lost).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the full traceback on errors.")
flags.mark_flags_as_required(["config", "workdir"])
compilation.define_flag()


class _OwnInfoOnly(logging_lib.Filter):
  """Keeps INFO lines of cpjax and its data pipelines; libraries show warnings and errors only
  (orbax alone logs dozens of INFO lines per checkpoint)."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    own = ("/cpjax/", "/data_pipelines/", "/experiments/")
    if ("/orbax/checkpoint/_src/futures/" in record.pathname
        or "exception was never retrieved" in record.getMessage().split("\n", 1)[0]):
      return False   # a failed save's writes, each with its traceback: cpjax reports it once
    return record.levelno >= logging_lib.WARNING or any(p in record.pathname for p in own)


def _quiet_closed_event_loops(unraisable: Any) -> None:
  """After a failed checkpoint save, TensorStore's callbacks into orbax's closed event loop
  each print 'RuntimeError: Event loop is closed' (100+ tracebacks); those are dropped, any
  other unraisable exception is shown as usual."""
  if (unraisable.exc_type is RuntimeError
      and str(unraisable.exc_value) == "Event loop is closed"):
    return
  sys.__unraisablehook__(unraisable)


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Imported here so that --help is fast and flags are parsed before grain starts workers.
  from cpjax.train import partitioning, peers, trainer  # pylint: disable=g-import-not-at-top

  if not _VERBOSE.value:
    logging.get_absl_handler().addFilter(_OwnInfoOnly())
    sys.unraisablehook = _quiet_closed_event_loops
    # A failed save also leaves orbax's pending write coroutines unawaited; Python warns about
    # each at exit, after cpjax's one line about the save.
    warnings.filterwarnings("ignore", message=r"coroutine '[^']*' was never awaited",
                            category=RuntimeWarning)
  compilation.setup()
  partitioning.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                      _HEARTBEAT.value)
  peers.watch()
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    if _MODE.value == "train":
      trainer.train(config, workdir)
    elif _MODE.value == "eval":
      trainer.evaluate(config, workdir)
    else:
      trainer.eval_sweep(config, workdir)
  except Exception as e:  # pylint: disable=broad-except
    peers.stop_if_peer_lost(e)   # a collective failed because another process is gone
    if _VERBOSE.value or not isinstance(
        e, (ValueError, FileNotFoundError, FloatingPointError, OSError)):
      raise
    print(f"cpjax.main: {e}", file=sys.stderr)
    return 1
  return 0


def _config_spec(argv: list[str]) -> str | None:
  return next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)


def _config_mistake(argv: list[str], error: Exception) -> str:
  """One line for a --config / --config.<key> mistake: a missing file, what the config file
  itself said (an unknown variant lists the variants), or the unknown key and the closest
  existing ones."""
  spec = _config_spec(argv)
  if spec is not None:
    path, _, variant = spec.partition(":")
    if not pathlib.Path(path).is_file():
      return f"--config={spec}: no such file {path!r}; the configs are in configs/ (see README)."
    try:
      config = defaults.load_sibling(path, pathlib.Path(path).stem).get_config(variant)
    except Exception as e:  # pylint: disable=broad-except  (the config file's own error)
      return f"--config={spec}: {e}"
    keys = defaults.flat(config.to_dict())
    for arg in argv[1:]:
      key = arg.split("=", 1)[0].removeprefix("--config.")
      if arg.startswith("--config.") and key not in keys:
        close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join('--config.' + k for k in close)}?" if close
                else f"its settings are listed by python -m cpjax.main --config={spec} "
                "--helpfull.")
        return f"--config.{key}: {path} has no setting {key!r}; {hint}"
  return str(error).strip().splitlines()[0]


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config mistake as one line (exit status 2) instead of
  ml_collections' tracebacks."""
  try:
    remaining = flags.FLAGS(argv)
    if _config_spec(argv) is not None:
      _CONFIG.value.to_dict()   # a config file that failed to load raises here
    return remaining
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    if "--verbose" in argv:
      raise
    print(f"cpjax.main: {_config_mistake(argv, e)}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=_parse_flags)
