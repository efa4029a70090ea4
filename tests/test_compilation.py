"""cpjax.compilation: XLA:CPU's optimisation flag and the persistent cache settings."""
from __future__ import annotations

import pytest

from cpjax import compilation


@pytest.mark.parametrize("platforms,flags,expected", [
    ("cpu", "", compilation.CPU_OPTIMIZATION_FLAG),
    ("cpu", "--xla_force_host_platform_device_count=2",
     "--xla_force_host_platform_device_count=2 " + compilation.CPU_OPTIMIZATION_FLAG),
    ("cpu", "--xla_backend_optimization_level=3", "--xla_backend_optimization_level=3"),
    ("cuda", "", ""),
    ("cuda,cpu", "", ""),
])
def test_cpu_flags_only_on_the_cpu_and_never_over_the_users(monkeypatch, platforms, flags,
                                                             expected):
  """The level is added for CPU runs, left alone when XLA_FLAGS already sets one, and never
  added when JAX may run on an accelerator."""
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.setenv("XLA_FLAGS", flags)
  compilation.set_cpu_flags()
  import os  # pylint: disable=import-outside-toplevel
  assert os.environ["XLA_FLAGS"] == expected


def test_cache_setting(tmp_path, monkeypatch):
  """'off' turns the cache off, a directory is created and used, 'auto' follows
  JAX_COMPILATION_CACHE_DIR (else the user cache folder)."""
  import jax  # pylint: disable=import-outside-toplevel
  before = jax.config.jax_compilation_cache_dir
  try:
    assert compilation.setup(str(tmp_path / "c")) == tmp_path / "c"
    assert (tmp_path / "c").is_dir() and jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
    assert compilation.setup("off") is None and jax.config.jax_compilation_cache_dir is None
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    assert compilation.setup("auto") == tmp_path / "env"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compilation.setup("auto") == tmp_path / "xdg" / "cpjax" / "jax"
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
