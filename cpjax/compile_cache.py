"""JAX's persistent compilation cache, on by default for training runs and tools.

XLA:CPU takes seconds to minutes to compile a train step (HRNet variants the longest); the cache
keeps each compiled executable on disk, keyed by the computation, the devices and the XLA flags, so
a resumed run, a second evaluation or a tool's second invocation loads it instead of compiling.

  --compilation_cache=auto   (default) `$XDG_CACHE_HOME/cpjax/jax`, else `~/.cache/cpjax/jax`
  --compilation_cache=DIR    that directory
  --compilation_cache=off    no persistent cache
An explicit `JAX_COMPILATION_CACHE_DIR` in the environment wins over `auto`.
"""
from __future__ import annotations

import os
import pathlib

from absl import flags, logging

# Executables that compile faster than this are not worth a disk entry (reading one back costs
# tens of milliseconds).
MIN_COMPILE_SECONDS = 0.5


def default_directory() -> pathlib.Path:
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base) / "cpjax" / "jax"


def define_flag() -> None:
  """Defines --compilation_cache (once per process)."""
  if "compilation_cache" not in flags.FLAGS:
    flags.DEFINE_string("compilation_cache", "auto",
                        "Persistent XLA compilation cache: 'auto' (a user cache folder), a "
                        "directory, or 'off'.")


def setup(setting: str | None = None) -> pathlib.Path | None:
  """Turns the persistent cache on (or off) before the first compilation.

  Args:
    setting: 'auto', 'off' or a directory; None reads the --compilation_cache flag.

  Returns:
    The cache directory, or None when the cache is off.
  """
  import jax  # pylint: disable=g-import-not-at-top

  if setting is None:
    setting = flags.FLAGS.compilation_cache
  if setting == "off":
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  if setting == "auto":
    directory = pathlib.Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_directory())
  else:
    directory = pathlib.Path(setting).expanduser()
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    logging.warning("compilation cache %s cannot be created (%s); compiling without it.",
                    directory, e.strerror or e)
    return None
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
