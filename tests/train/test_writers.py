"""cpjax.train.writers: TensorBoard files written without loading PyTorch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

pytest.importorskip("torch", reason="only matters where PyTorch is installed")

_SCRIPT = """
import sys, pathlib
from cpjax.train import writers
w = writers.Writer(sys.argv[1], "train", enabled=True)
w.scalars(3, {"loss": 0.5})
assert "torch" not in sys.modules, "tensorboardX loaded torch"
import torch   # still importable afterwards
print(len(list(pathlib.Path(sys.argv[1], "tensorboard", "train").glob("events.out.tfevents.*"))))
"""


def test_tensorboard_writer_does_not_import_torch(tmp_path):
  """With PyTorch installed, a run's TensorBoard writer leaves it unloaded (tensorboardX would
  import it, 2 s of every start), writes its event file, and torch imports normally later."""
  run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.split() == ["1"]
