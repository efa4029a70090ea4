"""What a process of a multi-process run says when another process of the run is lost.

When a process dies (killed, preempted without notice, its host gone), the others cannot go on:
the next collective fails (Gloo: "Connection closed by peer") and `jax.distributed`'s
coordination service terminates them, after `heartbeat_timeout` seconds at most when a host
vanishes silently, at once when a process's connections close. Its own report is a C++ check
failure with a stack trace, and Python's fault handler adds a dump of every thread.

`watch` makes each surviving process end with one line instead, written to stderr last so that
it is what a user sees:

  cpjax: process 0 of 2 stops: lost process 1 (it died or was preempted). Rerun the same
  command on every host; training resumes from the latest checkpoint.

and exit status `EXIT_LOST_PEER`. Two paths lead there: a Python exception while a peer is
gone (`stop_if_peer_lost`, called by `cpjax.main`), and the coordination service's abort
(SIGABRT), caught by a C-level signal handler that replaces the fault handler's thread dump.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import os
import signal
import sys
import time
from typing import Any

import jax

EXIT_LOST_PEER = 3
_ABORT_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int)
_installed: list[Any] = []   # the ctypes handler, kept alive for the process's lifetime
_ANSWER_SECS = 3.0           # a live coordinator answers within this
_patience_secs = 62.0        # the heartbeat timeout and 2 s (`watch` sets it)
# What a collective or coordination call says when the other side is gone.
_COLLECTIVE_FAILURES = ("Gloo", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Connection closed",
                        "heartbeat")


def _client() -> Any:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top  (no public accessor)
  return distributed.global_state.client


def lost_processes(patience_secs: float | None = None) -> list[int] | None:
  """The processes of the run that the coordination service no longer counts as alive.

  The service notices a silent process after the heartbeat timeout, so this asks again until
  one is missing or `patience_secs` (default: that timeout and 2 s) have passed.

  Returns:
    Their indices ([0] when the coordinator, process 0, does not answer within
    `_ANSWER_SECS`); [] when all are alive; None in a single-process run, or when process 0's
    own service fails.
  """
  client, count = _client(), jax.process_count()
  if client is None or count == 1:
    return None
  deadline = time.monotonic() + (_patience_secs if patience_secs is None else patience_secs)
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  try:
    while True:
      try:
        live = pool.submit(client.get_live_nodes, list(range(count))).result(
            timeout=_ANSWER_SECS)
      except Exception:  # pylint: disable=broad-except  (no answer, or its socket is closed)
        return [0] if jax.process_index() != 0 else None   # the coordinator is gone
      lost = [i for i in range(count) if i not in live]
      if lost or time.monotonic() > deadline:
        return lost
      time.sleep(0.2)
  finally:
    pool.shutdown(wait=False)


def message(lost: list[int] | None) -> str:
  """The one line a surviving process ends with."""
  me, count = jax.process_index(), jax.process_count()
  if lost:
    who = ", ".join(f"process {i}{' (the coordinator)' if i == 0 else ''}" for i in lost)
    what = f"lost {who} (it died or was preempted)"
  else:
    what = "lost another process of the run (it died or was preempted)"
  return (f"cpjax: process {me} of {count} stops: {what}. Rerun the same command on every "
          "host; training resumes from the latest checkpoint.")


def stop_if_peer_lost(error: BaseException) -> None:
  """After `error` in a multi-process run: if a peer is gone, says so and exits at once
  (`EXIT_LOST_PEER`, skipping the shutdown barrier that would wait for the lost peer).
  Returns if every process is alive (the error is this process's own); only an error of a
  cross-process operation waits for the service to notice a silent peer."""
  if jax.process_count() == 1:
    return
  collective = any(s in str(error) for s in _COLLECTIVE_FAILURES)
  lost = lost_processes(patience_secs=None if collective else 0.0)
  if lost == [] and not collective:
    return
  _say_and_exit(message(lost))


def _say_and_exit(line: str) -> None:
  sys.stdout.flush()
  os.write(2, f"\n{line}\n".encode())
  os._exit(EXIT_LOST_PEER)  # pylint: disable=protected-access


def _on_abort(signum: int) -> None:
  """SIGABRT: a lost peer ends with `message`; any other abort goes on as the default one."""
  lost = lost_processes()
  if lost == []:
    _libc().signal(signum, None)   # SIG_DFL
    os.abort()
  _say_and_exit(message(lost))


def _libc() -> Any:
  libc = ctypes.CDLL(None)
  libc.signal.restype = ctypes.c_void_p
  libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
  return libc


def watch(heartbeat_timeout_secs: float) -> None:
  """In a multi-process run, ends the coordination service's abort with `message` and
  `EXIT_LOST_PEER` (a C-level SIGABRT handler; Python-level handlers never run on an abort
  from a C++ thread). No effect in a single-process run.

  Args:
    heartbeat_timeout_secs: the run's heartbeat timeout (how long finding the lost process
      may take).
  """
  global _patience_secs
  _patience_secs = heartbeat_timeout_secs + 2.0
  if jax.process_count() == 1 or _installed:
    return
  handler = _ABORT_HANDLER_TYPE(_on_abort)
  _libc().signal(signal.SIGABRT, ctypes.cast(handler, ctypes.c_void_p))
  _installed.append(handler)
