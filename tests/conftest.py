"""Test session setup: 8 simulated CPU devices and XLA's backend optimisation level 0, set
before JAX starts.

Tests that need one device build a mesh over `jax.devices()[:1]`; multi-process tests start
their own subprocesses with their own flags.
"""
import os
import re

# XLA:CPU's backend optimisation level for everything the tests compile, in this process and in
# the processes they start (`subprocess_env`): 0, where cpjax's entry points use 1
# (`cpjax.compilation`, tested in tests/test_compilation.py). XLA's HLO passes (fusion, layouts,
# simplification) are the same at both levels; only LLVM optimises the machine code less. The
# tests are compile-bound: a cold `configs/demo.py:tiny` run takes 47 CPU seconds instead of 69.
# An XLA_FLAGS that already sets a level wins.
_LEVEL = re.search(r"--xla_backend_optimization_level=\S+", os.environ.get("XLA_FLAGS", ""))
XLA_LEVEL_FLAG = _LEVEL.group(0) if _LEVEL else "--xla_backend_optimization_level=0"
_FLAGS = [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
os.environ["XLA_FLAGS"] = " ".join(f for f in _FLAGS + ([] if _LEVEL else [XLA_LEVEL_FLAG]) if f)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session and the subprocesses it starts: runs of the same config
# on the same devices compile once.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = __import__("tempfile").mkdtemp(prefix="cpjax_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  # Removed when the session ends (hundreds of MB per session otherwise stay in /tmp).
  __import__("atexit").register(__import__("shutil").rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402  (after the flags above)
import pytest  # noqa: E402


@pytest.fixture
def rng() -> jax.Array:
  """A fixed PRNG key, so every test is reproducible."""
  return jax.random.key(0)


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def subprocess_env(devices: int = 1) -> dict[str, str]:
  """The environment of a `cpjax.main` or tool process that a test starts: the CPU, `devices`
  simulated devices, the tests' XLA level and the session's compilation cache."""
  flags = [XLA_LEVEL_FLAG] + ([f"--xla_force_host_platform_device_count={devices}"]
                             if devices > 1 else [])
  return dict(os.environ, XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu")


def load_config(name: str, variant: str = ""):
  """configs/<name>.py's get_config(variant), loaded the way `cpjax.main` loads it (by path)."""
  from cpjax.train import defaults  # pylint: disable=g-import-not-at-top
  return defaults.load_sibling(str(REPO / "configs" / "x.py"), name).get_config(variant)


def tiny_config(name: str, **overrides):
  """configs/<name>.py:tiny with synchronous checkpoint saves (a test reads a step's files as
  soon as training returns) and `overrides` (flattened keys, e.g. **{"optim.lr": 1e-3})."""
  c = load_config(name, "tiny")
  c.checkpoint.async_save = False
  c.update_from_flattened_dict(overrides)
  return c


def first_batches(data_config, n: int, **kwargs) -> list:
  """The first n batches of a new `data_pipelines.pipeline.train_iterator(data_config,
  **kwargs)`, which is then closed: its prefetch threads and worker processes end here, not
  whenever the garbage collector finds the iterator."""
  from data_pipelines import pipeline  # pylint: disable=g-import-not-at-top
  iterator = pipeline.train_iterator(data_config, **kwargs)
  try:
    return [next(iterator) for _ in range(n)]
  finally:
    pipeline.close_iterator(iterator)


def flat_params(tree) -> dict:
  """{path string: NumPy array} of a parameter tree (fetched from the devices)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def jit_unoptimized(fn):
  """jax.jit with XLA's backend optimisations off, for tests that compare numbers: networks of
  dozens to hundreds of convs that XLA:CPU otherwise compiles for a long time to run once or
  twice. The numerics are the same float32 operations."""
  return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0,
                                       "xla_llvm_disable_expensive_passes": True})


def numpy_params(shapes, seed: int = 0):
  """Random parameters for a tree of ShapeDtypeStructs, drawn with NumPy (no XLA compile):
  kernels ~ N(0, 1 / fan_in), everything else ~ N(0, 0.1)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  r = np.random.default_rng(seed)

  def fill(path, s):
    if path[-1].key == "kernel":
      return jnp.asarray(r.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jnp.asarray(0.1 * r.normal(size=s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="session")
def video_demo_tiny_run(tmp_path_factory):
  """`python -m cpjax.main --config=configs/video_demo.py:tiny` (2 steps, 1 device): its workdir.

  Shared by the video-inpainting task and tool tests, so the command line is exercised once.
  """
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("video_demo_tiny")
  run = subprocess.run(
      [sys.executable, "-m", "cpjax.main", "--config=configs/video_demo.py:tiny",
       f"--workdir={workdir}", "--config.checkpoint.async_save=False"],
      cwd=REPO, env=subprocess_env(), capture_output=True,
      text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir, run.stderr


def evaluate_twice(config, workdir):
  """Two evaluations of one fresh run (steps 1 and 2; the trainer's `_Run.evaluate`), the
  baseline function replaced by one that fails before the second: (first, second) results.
  Baselines do not depend on the train state, so the second must reuse the first's sums."""
  from cpjax.train import trainer  # pylint: disable=g-import-not-at-top
  run = trainer._Run(config, workdir, jax.devices()[:1])  # pylint: disable=protected-access
  try:
    state = run.system.init_state()
    first = run.evaluate(state, 1)

    def gone(*args):
      raise AssertionError("baselines recomputed")

    run.baseline_fn = gone
    return first, run.evaluate(state, 2)
  finally:
    run.close()
