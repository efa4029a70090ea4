"""Mesh, shardings, multi-host initialisation and global batches.

One parallel code path (pjit semantics): `jax.jit` with `NamedSharding` on a 1-D `Mesh` whose
axis is called `data`. The batch is sharded over `data`; the train state is replicated, or, with
`fsdp=True`, each large array is split over `data` along its largest divisible dimension
(FSDP-style: XLA inserts the all-gathers and reduce-scatters).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           heartbeat_timeout_secs: int = 60) -> None:
  """Starts `jax.distributed` when this is one process of several.

  With `coordinator_address` the launch is explicit (every process gets the same address and
  `num_processes`, and its own `process_id`). Without it, clusters whose environment JAX can read
  (TPU pods, SLURM, Open MPI) are detected and initialised automatically; a single process on a
  laptop or one GPU machine is left alone.

  Args:
    heartbeat_timeout_secs: how long a process may stay silent before the run counts it lost
      and stops every process (`cpjax.train.peers` says which one was lost).
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id too.")
    kwargs = {}
    if coordinator_address.startswith(("127.", "localhost")):
      # Bind only to loopback for local multi-process runs (tests, one-machine launches).
      kwargs["coordinator_bind_address"] = coordinator_address
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               heartbeat_timeout_seconds=heartbeat_timeout_secs, **kwargs)
  elif _cluster_detected():
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_secs)
  if jax.process_count() > 1:
    connect_collectives()
  logging.info("process %d of %d; %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.devices()[0].platform)


def connect_collectives() -> None:
  """Runs one reduction over all global devices while the processes are still in step.

  On CPU, Gloo connects the devices of a collective the first time it runs, and gives up when a
  peer has not arrived within 30 s (a fixed limit). Each process compiles the first train step
  on its own, and on a busy host those compiles can end more than 30 s apart: the first step then
  fails on the process that finished first. `jax.distributed.initialize` has just brought the
  processes together, so the connection is made here, once, for the group that every
  data-parallel collective of `make_mesh()` uses (all global devices); later collectives reuse it
  and wait for a late peer without that limit. All processes must call this together.
  """
  mesh = make_mesh()
  ones = np.ones((jax.local_device_count(),), np.int32)
  count = jax.jit(jnp.sum, out_shardings=replicated(mesh))(
      jax.make_array_from_process_local_data(batch_sharding(mesh), ones))
  jax.block_until_ready(count)


def _cluster_detected() -> bool:
  """True inside a multi-process job whose launcher JAX can auto-detect."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in env:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  return "," in env.get("TPU_WORKER_HOSTNAMES", "") or "MEGASCALE_COORDINATOR_ADDRESS" in env


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: all global devices) with the axis `data`."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(state_shapes: Any, mesh: Mesh, *, fsdp: bool = False,
                    fsdp_min_size: int = 2**16) -> Any:
  """Shardings for a train-state pytree of `jax.ShapeDtypeStruct`s (or arrays).

  Replicated by default. With `fsdp`, arrays of at least `fsdp_min_size` elements are split over
  `data` along the largest dimension that the mesh size divides; smaller or indivisible arrays
  stay replicated.
  """
  n = mesh.shape[DATA_AXIS]

  def leaf_sharding(x: Any) -> NamedSharding:
    shape = getattr(x, "shape", ())
    if not fsdp or n == 1 or int(np.prod(shape, dtype=np.int64)) < fsdp_min_size:
      return replicated(mesh)
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
      if shape[dim] % n == 0:
        spec = [None] * len(shape)
        spec[dim] = DATA_AXIS
        return NamedSharding(mesh, P(*spec))
    return replicated(mesh)

  return jax.tree.map(leaf_sharding, state_shapes)


def check_batch_size(global_batch_size: int, mesh: Mesh, flag: str = "--config.batch_size"
                     ) -> None:
  """The global batch must be positive and split evenly over devices and processes.

  Args:
    flag: the flag that sets it, named in the message.
  """
  n = mesh.shape[DATA_AXIS]
  if not isinstance(global_batch_size, int) or global_batch_size < 1:
    raise ValueError(f"{flag}={global_batch_size}; give a global batch size >= 1, a multiple "
                     f"of the {n} devices of the mesh.")
  if global_batch_size % n:
    raise ValueError(
        f"global batch size {global_batch_size} is not divisible by the {n} devices of the mesh; "
        f"set {flag} to a multiple of {n}.")
  if global_batch_size % jax.process_count():
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes; set {flag} to a multiple of it.")


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's share into global arrays sharded over `data`.

  Process p's arrays hold the rows p * B/P ... (p + 1) * B/P - 1 of the global batch (the data
  pipeline's contract), and the mesh lists devices process by process, so the rows land in order.
  """
  sharding = batch_sharding(mesh)
  process_count = jax.process_count()

  def to_global(x: np.ndarray) -> jax.Array:
    global_shape = (x.shape[0] * process_count,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return {k: to_global(np.asarray(v)) for k, v in local_batch.items()}
