"""Multi-process start-up (`partitioning.initialize_distributed`) on 127.0.0.1, 2 CPU devices per
process."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO, subprocess_env
from trainer_runs import free_port

# Process 1 reaches its first train-step-like collective 35 s after process 0 (Gloo's fixed
# connection limit is 30 s): it must wait for it, not fail.
_LATE_PEER = """
import sys, time
import jax, jax.numpy as jnp, numpy as np
from cpjax.train import partitioning
port, pid = sys.argv[1], int(sys.argv[2])
partitioning.initialize_distributed(f"127.0.0.1:{port}", 2, pid)
if pid == 1:
  time.sleep(35)
mesh = partitioning.make_mesh()
rows = jax.make_array_from_process_local_data(
    partitioning.batch_sharding(mesh), np.full((2, 3), pid + 1.0, np.float32))
total = jax.jit(lambda x: jnp.sum(x, axis=0), out_shardings=partitioning.replicated(mesh))(rows)
print("total", np.asarray(total.addressable_data(0)).tolist())
"""


def test_a_peer_that_reaches_the_first_collective_35_s_late_is_waited_for():
  """The first collective after start-up, 35 s apart on the two processes (as when one
  process's first compile is slow): both finish with the all-device sum."""
  env = subprocess_env(devices=2)
  port = str(free_port())
  procs = [subprocess.Popen([sys.executable, "-c", _LATE_PEER, port, str(i)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
    assert "total [6.0, 6.0, 6.0]" in out, out[-3000:]
