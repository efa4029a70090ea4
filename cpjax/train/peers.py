"""What a process of a multi-process run says when another process of the run is lost.

When a process dies (killed, preempted without notice, its host gone), the others cannot go on:
the next collective fails (Gloo: "Connection closed by peer") and `jax.distributed`'s
coordination service terminates them, after `heartbeat_timeout` seconds at most when a host
vanishes silently, at once when a process's connections close. Its own report is a C++ check
failure with a stack trace, and Python's fault handler adds a dump of every thread.

`watch` makes each surviving process end with one line instead, written to stderr last (nothing
another thread writes can follow it) so that it is what a user sees:

  cpjax: process 0 of 2 stops: lost process 1 (it died or was preempted). Rerun the same
  command on every host; training resumes from the latest checkpoint.

and exit status `EXIT_LOST_PEER`. Two paths lead there: a Python exception while a peer is
gone (`stop_if_peer_lost`, called by `cpjax.main`), and the coordination service's abort
(SIGABRT), caught by a C-level signal handler that replaces the fault handler's thread dump.
Which process was lost: the service's live nodes, or, before the service notices, the process
whose liveness counter (a key each process moves four times a second in the service's
key-value store, read by the others) stopped. A peer must stay silent for more than
`_STALE_SECS` to count as lost, and the heartbeat timeout should be longer than that.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

import jax

EXIT_LOST_PEER = 3
_ABORT_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int)
_installed: list[Any] = []   # the ctypes handler, kept alive for the process's lifetime
_ANSWER_SECS = 3.0           # a live coordinator answers within this
_ALIVE_DIR = "cpjax/alive/"   # key-value directory of the processes' liveness counters
_ALIVE_EVERY_SECS = 0.25
_STALE_SECS = 2.0             # a counter that did not move for this long: its process is gone
_seen_lock = threading.Lock()
_last_change: dict[int, float] = {}   # process -> when its counter last moved (monotonic)
_last_reading = time.monotonic()      # when the counters were last read
_stop_counting = threading.Event()    # set at exit: the counter thread ends before teardown
# What a collective or coordination call says when the other side is gone.
_COLLECTIVE_FAILURES = ("Gloo", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Connection closed",
                        "heartbeat")


def _client() -> Any:
  from jax._src import distributed  # pylint: disable=g-import-not-at-top  (no public accessor)
  return distributed.global_state.client


def lost_processes(wait: bool = True) -> list[int] | None:
  """The processes of the run that stopped: those the coordination service no longer counts as
  alive or, when it has not noticed yet or no longer answers, those whose liveness counter
  (`watch`) had stopped for `_STALE_SECS` at the last reading (with `wait`, after watching the
  counters that long).

  Returns:
    Their indices ([0] when the coordinator, process 0, stopped answering and no other
    process's counter stopped first); [] when all are alive; None in a single-process run.
  """
  client, count = _client(), jax.process_count()
  if client is None or count == 1:
    return None
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  try:
    live = pool.submit(client.get_live_nodes, list(range(count))).result(timeout=_ANSWER_SECS)
    lost = [i for i in range(count) if i not in live]
    if lost or not wait:
      return lost
    time.sleep(_STALE_SECS)
  except Exception:  # pylint: disable=broad-except  (no answer, or the service failed)
    pass
  finally:
    pool.shutdown(wait=False)
  with _seen_lock:
    lost = [i for i, seen in _last_change.items() if _last_reading - seen > _STALE_SECS]
  if not lost and jax.process_index() != 0 and time.monotonic() - _last_reading > _STALE_SECS:
    return [0]   # the coordinator's store stopped answering before any counter stopped
  return lost


def _count_alive(client: Any) -> None:
  """Every `_ALIVE_EVERY_SECS` until `_stop_counting`: moves this process's liveness counter in
  the service's store, reads the others' and notes when each last changed (a daemon thread)."""
  me, beat, values = jax.process_index(), 0, {}
  global _last_reading
  while not _stop_counting.is_set():
    beat += 1
    try:
      client.key_value_set(f"{_ALIVE_DIR}{me}", str(beat), allow_overwrite=True)
      counters = dict(client.key_value_dir_get(_ALIVE_DIR))
    except Exception:  # pylint: disable=broad-except  (the coordinator is gone: stop counting)
      return
    now = time.monotonic()
    with _seen_lock:
      for key, value in counters.items():
        i = int(key.rsplit("/", 1)[-1])
        if i != me and values.get(i) != value:
          values[i], _last_change[i] = value, now
      _last_reading = now
    _stop_counting.wait(_ALIVE_EVERY_SECS)


def message(lost: list[int] | None, error: BaseException | None = None) -> str:
  """The one line a surviving process ends with (with the failed operation's first line when
  the lost process is not known)."""
  me, count = jax.process_index(), jax.process_count()
  if lost:
    who = ", ".join(f"process {i}{', the coordinator' if i == 0 else ''}" for i in lost)
    what = f"lost {who} (it died or was preempted)"
  else:
    cause = str(error).strip().splitlines()[0][:200] if error is not None else ""
    what = ("lost another process of the run (it died or was preempted"
            + (f"; {cause}" if cause else "") + ")")
  return (f"cpjax: process {me} of {count} stops: {what}. Rerun the same command on every "
          "host; training resumes from the latest checkpoint.")


def stop_if_peer_lost(error: BaseException) -> None:
  """After `error` in a multi-process run: if a peer is gone, says so and exits at once
  (`EXIT_LOST_PEER`, skipping the shutdown barrier that would wait for the lost peer).
  Returns otherwise (the error is this process's own, and is reported as usual). Only the error
  of a cross-process operation waits for the service to notice a silent peer."""
  if jax.process_count() == 1:
    return
  collective = any(s in str(error) for s in _COLLECTIVE_FAILURES)
  lost = lost_processes(wait=collective)
  if lost or collective:
    _say_and_exit(message(lost, error))


def _say_and_exit(line: str) -> None:
  """Writes `line` to stderr as the process's last output and exits at once. The coordination
  service's C++ threads may be logging their fatal error at the same moment: stdout and stderr
  are pointed at /dev/null first (the line goes to a duplicate of stderr), so nothing they write
  can follow it."""
  sys.stdout.flush()
  stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.dup2(devnull, 2)
  os.write(stderr, f"\n{line}\n".encode())
  os._exit(EXIT_LOST_PEER)  # pylint: disable=protected-access


def _on_abort(signum: int) -> None:
  """SIGABRT: a lost peer ends with `message`; any other abort goes on as the default one."""
  lost = lost_processes()
  if not lost:
    _libc().signal(signum, None)   # SIG_DFL
    os.abort()
  _say_and_exit(message(lost))


def _libc() -> Any:
  libc = ctypes.CDLL(None)
  libc.signal.restype = ctypes.c_void_p
  libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
  return libc


def _stop_counter(counter: threading.Thread) -> None:
  _stop_counting.set()
  counter.join(timeout=_ANSWER_SECS)


def watch() -> None:
  """In a multi-process run: starts this process's liveness counter, and ends the coordination
  service's abort with `message` and `EXIT_LOST_PEER` (a C-level SIGABRT handler; Python-level
  handlers never run on an abort from a C++ thread). No effect in a single-process run."""
  if jax.process_count() == 1 or _installed:
    return
  counter = threading.Thread(target=_count_alive, args=(_client(),), name="cpjax-alive",
                             daemon=True)
  counter.start()
  handler = _ABORT_HANDLER_TYPE(_on_abort)
  _libc().signal(signal.SIGABRT, ctypes.cast(handler, ctypes.c_void_p))
  _installed.append(handler)
  # At exit the interpreter is torn down: an abort then (jax.distributed's shutdown) must not
  # call back into Python.
  atexit.register(lambda: _libc().signal(signal.SIGABRT, None))
  # The counter thread must end before the interpreter does: a daemon thread still inside a
  # call to the service then is ended by a forced unwind through C++ that the binding catches
  # ("terminate called after throwing an instance of ''", SIGABRT). Registered after
  # jax.distributed's own shutdown, so it runs before it.
  atexit.register(_stop_counter, counter)
