r"""The ablations of "Smart, Deep Copy-Paste" section 4.1 as runnable sweeps.

  python -m experiments.copy_paste_ablations --sweep=sigma --config=configs/faces.py \
      --root=/runs/ablations [--dry_run] [-- --config.data.source=folder:/data/faces ...]

Each sweep is a list of named variants, each a set of `--config.<key>=<value>` overrides of the
base config; every variant trains in `<root>/<sweep>/<variant>` with the ordinary command line
(so each resumes, checkpoints and evaluates like any run) and a table of the variants' final
eval JSON is printed at the end. Arguments after `--` are passed to every run.

Sweeps (paper section 4.1):
  sigma    T_geometric offset: too small (overfits, artefacts on real pastes), the paper's
           value, too large (ignores the source). Values are fractions of the base sigma.
  shading  local shading adjustments (T_shading, eq. 3) vs one global T_color (Fig. 5).
  noise    noise-addition layers after each transposed conv vs one noise image as an extra
           input channel (section 3.2) vs no noise.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from absl import app, flags

_SWEEP = flags.DEFINE_enum("sweep", "sigma", ["sigma", "shading", "noise"], "Which ablation.")
_CONFIG = flags.DEFINE_string("config", "configs/faces.py", "Base config (with :variant).")
_ROOT = flags.DEFINE_string("root", None, "Parent directory of the runs' workdirs.")
_SIGMA = flags.DEFINE_float("base_sigma", 15.0,
                            "The base config's sigma (15 faces, 10 Cityscapes).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


def variants(sweep: str, base_sigma: float) -> dict[str, dict[str, object]]:
  """Variant name -> config overrides."""
  if sweep == "sigma":
    return {f"sigma_{s:g}": {"transform.sigma": s}
            for s in (base_sigma / 3, base_sigma, base_sigma * 3)}
  if sweep == "shading":
    return {"local": {"transform.shading": "local"}, "global": {"transform.shading": "global"}}
  return {"noise_layers": {"model.noise": "layers"}, "noise_input": {"model.noise": "input"},
          "no_noise": {"model.noise": "none"}}


def command(config: str, workdir: pathlib.Path, overrides: dict[str, object],
            extra: list[str]) -> list[str]:
  return ([sys.executable, "-m", "cpjax.main", f"--config={config}", f"--workdir={workdir}"]
          + [f"--config.{k}={v}" for k, v in overrides.items()] + extra)


def summary(root: pathlib.Path, names: list[str]) -> str:
  """One line per variant with its latest eval result."""
  lines = []
  for name in names:
    results = sorted((root / name / "eval").glob("step_*.json"))
    if not results:
      lines.append(f"{name:16s} (no eval result yet)")
      continue
    r = json.loads(results[-1].read_text())
    lines.append(f"{name:16s} step {r['step']:>7d}  " + "  ".join(
        f"{k} {v:.4g}" for k, v in r.items() if isinstance(v, float)))
  return "\n".join(lines)


def main(argv: list[str]) -> int:
  extra = argv[1:]
  root = pathlib.Path(_ROOT.value) / _SWEEP.value
  runs = variants(_SWEEP.value, _SIGMA.value)
  for name, overrides in runs.items():
    cmd = command(_CONFIG.value, root / name, overrides, extra)
    print(" ".join(cmd), flush=True)
    if not _DRY_RUN.value:
      subprocess.run(cmd, check=True)
  if not _DRY_RUN.value:
    print(summary(root, list(runs)))
  return 0


if __name__ == "__main__":
  flags.mark_flag_as_required("root")   # here, not at import: tests import this module
  app.run(main)
