"""The vs_torch benchmark's rows build and trace: each default workload makes its PyTorch side
(where a reference exists) and a cpjax function that lowers with the arguments the row times,
with a nonzero FLOP count. A renamed import or a changed signature fails here, not in the next
benchmark run (the benchmark itself is never a timed test)."""
from __future__ import annotations

import jax
import pytest
from absl import flags

pytest.importorskip("torch")

from experiments.benchmarks import vs_torch  # pylint: disable=g-import-not-at-top


@pytest.mark.parametrize("name", vs_torch.DEFAULT)
def test_workload_builds_and_lowers(name):
  if name.startswith("copy_paste"):   # data-parallel over the tests' 8 devices: 1 example each
    workload = getattr(vs_torch, name)(batch_size=jax.device_count(), size=64, variant="tiny")
  else:
    workload = vs_torch.WORKLOADS[name]()
  assert workload.kind in ("train", "inference", "ceiling")
  assert (workload.torch_call is None) == name.startswith("copy_paste")
  analysis = workload.jax_fn.lower(*workload.jax_args).cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  assert analysis["flops"] > 0


def test_importing_defines_no_flags():
  """The flags exist only when run as a program: importing must not claim --out and the other
  names that the tools (imported by other tests in the same process) define."""
  assert not flags.FLAGS.flags_by_module_dict().get(vs_torch.__name__)
  assert "out" not in flags.FLAGS
