"""Where a compiled XLA:CPU executable spends its time: per-op durations from a profiler trace.

`top_ops` runs the executable under `jax.profiler.trace(create_perfetto_trace=True)`, reads the
trace's per-op events (XLA:CPU's thunk executor names each with its HLO instruction,
`args.hlo_op`), and joins them with the optimised HLO text, so each row says what the op is:
e.g. a convolution fusion and its window, or a transpose/copy fusion (a layout change). Ops
that run concurrently on different threads are summed, so shares are of the summed op time.

Categories (`category`): 'conv' (window at most 11 wide), 'conv kernel gradient' (a window
larger than that: XLA:CPU writes the gradient of a conv with respect to its kernel as a conv
whose window is the whole image), 'conv lhs-dilated' (XLA's transposed conv and the input
gradient of a strided conv), 'dot', 'layout copy' (only transposes, copies, bitcasts, pads and
slices), 'pooling', 'pooling gradient', 'other' (elementwise and reductions).
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
from typing import Any

import jax

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+?) ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^%?([\w.\-]+) \(.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_WINDOW = re.compile(r"window=\{size=(\d+)x(\d+)[^}]*\}")
_LAYOUT_OPS = {"parameter", "transpose", "copy", "bitcast", "pad", "slice", "reshape",
               "constant", "broadcast", "concatenate", "tuple", "get-tuple-element"}


def _parse_hlo(text: str) -> tuple[dict[str, tuple[str, str, str]], dict[str, list[tuple]]]:
  """(instruction name -> (opcode, shape, rest of line), computation -> its instructions)."""
  instructions, computations, current = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    head = _COMPUTATION.match(line)
    if head and "=" not in line.split("(")[0]:
      current = head.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if m:
      name, shape, opcode, rest = m.groups()
      instructions[name] = (opcode, shape, rest)
      if current:
        computations[current].append((name, opcode, shape, rest))
  return instructions, computations


def _inner(name: str, instructions, computations) -> list[tuple]:
  """The instructions that `name` runs: its fused computation's, or itself."""
  opcode, shape, rest = instructions[name]
  called = _CALLS.search(rest)
  if opcode == "fusion" and called:
    return computations.get(called.group(1), [])
  return [(name, opcode, shape, rest)]


def _category(inner: list[tuple]) -> tuple[str, str]:
  """(category of the module docstring, a one-line description). A fusion of several convs
  (XLA:CPU's YNNPACK fusions take whole chains) is described by its first and last."""
  convs = [(shape, rest) for _, opcode, shape, rest in inner if opcode == "convolution"]
  if convs:
    shape, rest = convs[0]
    window = _WINDOW.search(rest)
    size = max(int(window.group(1)), int(window.group(2))) if window else 1
    detail = rest[rest.find("window="):].split(", metadata")[0].split(", dim_labels")[0]
    kind = ("conv lhs-dilated" if "lhs_dilate" in rest else
            "conv kernel gradient" if size > 11 else "conv")
    what = f"convolution -> {shape} {detail}"
    if len(convs) > 1:
      what = f"{len(convs)} convolutions, first -> {shape} {detail}, last -> {convs[-1][0]}"
    return kind, what
  for _, opcode, shape, _ in inner:
    if opcode == "dot":
      return "dot", f"dot -> {shape}"
    if opcode == "select-and-scatter":
      return "pooling gradient", f"select-and-scatter -> {shape}"
    if opcode == "reduce-window":
      return "pooling", f"reduce-window -> {shape}"
  opcodes = sorted({opcode for _, opcode, _, _ in inner})
  shape = inner[-1][2] if inner else ""
  if all(op in _LAYOUT_OPS for op in opcodes):
    return "layout copy", f"{'/'.join(o for o in opcodes if o != 'parameter')} -> {shape}"
  return "other", f"{'/'.join(opcodes[:6])} -> {shape}"


def op_seconds(compiled: Any, args: list[Any], calls: int = 1,
               chain: bool = False) -> dict[str, float]:
  """Seconds per call of each HLO instruction of `compiled`, over `calls` traced calls.

  With `chain`, the first output replaces the first argument after each call (donated train
  states); `args` is updated in place."""
  directory = tempfile.mkdtemp(prefix="cpjax_xla_profile_")
  with jax.profiler.trace(directory, create_perfetto_trace=True):
    for _ in range(calls):
      out = compiled(*args)
      jax.block_until_ready(out)
      if chain:
        args[0] = out[0]
  path = sorted(glob.glob(f"{directory}/**/*perfetto_trace.json.gz", recursive=True))[-1]
  with gzip.open(path, "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  totals: dict[str, float] = collections.defaultdict(float)
  for e in events:
    op = (e.get("args") or {}).get("hlo_op")
    if e.get("ph") == "X" and op:
      totals[op] += float(e.get("dur", 0.0)) * 1e-6 / calls
  return dict(totals)


def top_ops(compiled: Any, args: list[Any], count: int = 10, calls: int = 1,
            chain: bool = False) -> dict[str, Any]:
  """The `count` longest ops and the time per category (module docstring).

  Returns:
    {'op_seconds': summed op seconds per call, 'categories': {category: share},
     'top_ops': [{'op', 'category', 'seconds', 'share', 'what'}, ...]}.
  """
  seconds = op_seconds(compiled, args, calls, chain)
  instructions, computations = _parse_hlo(compiled.as_text())
  total = sum(seconds.values()) or 1.0
  categories: dict[str, float] = collections.defaultdict(float)
  rows = []
  for op, s in sorted(seconds.items(), key=lambda kv: -kv[1]):
    kind, what = (_category(_inner(op, instructions, computations)) if op in instructions
                  else ("other", op))
    categories[kind] += s / total
    rows.append({"op": op, "category": kind, "seconds": s, "share": s / total, "what": what})
  return {"op_seconds": total,
          "categories": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
          "top_ops": rows[:count]}
