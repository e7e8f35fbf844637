"""Multi-process runs: which devices each process takes, and agreement between processes.

**Process/device mapping** (:func:`cluster_args`, a pure function of the environment):

* ``--coordinator_address/--num_processes/--process_id`` (plain multi-process launch): those
  three, ``local_device_ids`` from ``--local_device_ids`` or else every device the process sees;
  no cluster auto-detection (which inside a SLURM allocation would narrow each process to
  ``[SLURM_LOCALID]``).
* ``--distributed`` under SLURM: **one process per node, with all of its GPUs** (our
  ``launch/slurm_gpu.sbatch``; one process per GPU works too). JAX's own SLURM detection
  (``jax/_src/clusters/slurm_cluster.py``, unchanged in 0.10-0.12) gives every process
  ``local_device_ids=[SLURM_LOCALID]``: with one task per node that is GPU 0 only, so a
  4x8-GPU job would train on 4 GPUs. We compute the arguments ourselves instead: coordinator
  the first node of ``SLURM_STEP_NODELIST`` on JAX's port rule (``JAX_COORDINATOR_PORT``
  overrides), ``SLURM_NTASKS``/``SLURM_PROCID``, and the local devices: the GPUs this task sees
  (``CUDA_VISIBLE_DEVICES``/``ROCR_VISIBLE_DEVICES``, else ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS``,
  else ``SLURM_GPUS_ON_NODE``) split evenly over the node's tasks when all tasks see all GPUs
  (``[LOCALID*k, ..., LOCALID*k+k-1]``), or all of them when SLURM bound a share to each task.
  With no GPU information, every visible device (CPU jobs).
* ``--distributed`` elsewhere (TPU VMs, Open MPI, Kubernetes): ``jax.distributed.initialize()``
  with JAX's auto-detection, which never narrows devices on TPU VMs.

**Agreement** (:func:`agree`, :func:`gather_strings`, :func:`barrier`): through the key-value
store of JAX's coordination service (host-side messages, no device computation, so the
training step's asynchronous dispatch is not stalled). A check that one process fails makes
every process raise the same one-line error, so none is left waiting in a collective.

**Exit** (:func:`settle_coordinator_shutdown`): process 0 stops the coordination service it
hosts :data:`SHUTDOWN_SETTLE_S` after the shutdown barrier, once the other processes' cancelled
calls have landed, instead of at once (which could abort it in gRPC's teardown).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hybrenet_jax.errors import HybrenetError

T = TypeVar("T")


class ClusterError(HybrenetError):
    """Multi-process arguments that do not fit together, or a failed agreement."""


@dataclasses.dataclass(frozen=True)
class ClusterArgs:
    """Arguments of ``jax.distributed.initialize`` for this process.

    ``source`` says where they came from: ``manual``, ``slurm`` or ``auto`` (JAX detects).
    """

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None

    def initialize_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``jax.distributed.initialize``."""
        if self.source == "auto":
            return {}
        kwargs: dict[str, Any] = {"coordinator_address": self.coordinator_address,
                                  "num_processes": self.num_processes,
                                  "process_id": self.process_id}
        if self.local_device_ids is not None:
            kwargs["local_device_ids"] = list(self.local_device_ids)
        else:  # every visible device: keep JAX's detection from narrowing them
            kwargs["cluster_detection_method"] = "deactivate"
        return kwargs


SLURM_REQUIRED = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        raise ClusterError(f"SLURM variable {name}={environ.get(name)!r} is not an integer") \
            from None


def first_slurm_host(nodelist: str) -> str:
    """The first hostname of a SLURM node list (``node[001-004],other`` -> ``node001``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ClusterError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + re.split(r"[,-]", ranges)[0]


def tasks_on_node(spec: str, node_id: int) -> int:
    """Tasks on node ``node_id`` from SLURM's ``2(x3),1`` notation."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise ClusterError(f"cannot read SLURM tasks per node {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if len(counts) == 1:  # the same on every node
        return counts[0]
    if not 0 <= node_id < len(counts):
        raise ClusterError(f"SLURM node {node_id} is not in tasks per node {spec!r}")
    return counts[node_id]


def _id_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v for v in value.split(",") if v.strip()]
    if not items or value.strip() in ("NoDevFiles", "void"):
        return None
    return items


def visible_gpus(environ: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(GPUs this task sees, GPUs of the node) from the environment; None where unknown."""
    seen = None
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        ids = _id_list(environ.get(name))
        if ids is not None:
            seen = len(ids)
            break
    if seen is None:
        for name in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
            ids = _id_list(environ.get(name))
            if ids is not None:
                seen = len(ids)
                break
    node = environ.get("SLURM_GPUS_ON_NODE")
    node_gpus = int(node) if node and node.strip().isdigit() else None
    if seen is None:
        seen = node_gpus
    return seen, node_gpus


def slurm_local_device_ids(environ: Mapping[str, str]) -> tuple[int, ...] | None:
    """The device ids (indices into the devices this process sees) of this SLURM task.

    One task per node: all of the node's GPUs. Several tasks per node that all see all GPUs:
    an even share each, by ``SLURM_LOCALID``. Tasks that SLURM bound to their own GPUs
    (``--gpus-per-task``, ``--gpu-bind``): all they see. No GPU information: None (every
    visible device).
    """
    seen, node_gpus = visible_gpus(environ)
    if not seen:
        return None
    spec = (environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
            or environ.get("SLURM_NTASKS_PER_NODE"))
    node_id = int(environ.get("SLURM_NODEID", "0") or 0)
    tasks = tasks_on_node(spec, node_id) if spec else 1
    local = _int(environ, "SLURM_LOCALID")
    if tasks <= 1:
        return tuple(range(seen))
    bound = node_gpus is not None and seen * tasks <= node_gpus and seen < node_gpus
    if bound or seen < tasks:
        return tuple(range(seen))  # SLURM gave this task its own GPUs
    if seen % tasks:
        raise ClusterError(f"{seen} GPUs per node cannot be split evenly over {tasks} tasks "
                           "per node: use one task per node or one per GPU")
    share = seen // tasks
    return tuple(range(local * share, (local + 1) * share))


def slurm_coordinator(environ: Mapping[str, str]) -> str:
    """``host:port`` of process 0: the first node, on JAX's port rule for SLURM jobs."""
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") \
        or environ.get("SLURM_NODELIST")
    if not nodelist:
        raise ClusterError("SLURM_STEP_NODELIST is not set: run the training under srun")
    port = environ.get("JAX_COORDINATOR_PORT") or str(
        _int(environ, "SLURM_JOB_ID") % 2**12 + (65535 - 2**12 + 1))
    return f"{first_slurm_host(nodelist)}:{port}"


def in_slurm_step(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` is that of a SLURM task (``srun``)."""
    return all(name in environ for name in SLURM_REQUIRED)


def cluster_args(environ: Mapping[str, str], *, distributed: bool = False,
                 coordinator_address: str | None = None, num_processes: int | None = None,
                 process_id: int | None = None,
                 local_device_ids: Sequence[int] | None = None) -> ClusterArgs | None:
    """How this process joins a multi-process run (None: a single-process run).

    Raises:
      ClusterError: incomplete manual arguments or an unreadable SLURM environment.
    """
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ClusterError("--coordinator_address needs --num_processes and --process_id")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ClusterError(f"--process_id={process_id} must be in [0, --num_processes="
                               f"{num_processes})")
        ids = tuple(local_device_ids) if local_device_ids is not None else None
        return ClusterArgs("manual", coordinator_address, num_processes, process_id, ids)
    if num_processes is not None or process_id is not None:
        raise ClusterError("--num_processes/--process_id need --coordinator_address")
    if not distributed:
        return None
    if in_slurm_step(environ):
        ids = (tuple(local_device_ids) if local_device_ids is not None
               else slurm_local_device_ids(environ))
        return ClusterArgs("slurm", slurm_coordinator(environ), _int(environ, "SLURM_NTASKS"),
                           _int(environ, "SLURM_PROCID"), ids)
    return ClusterArgs("auto", local_device_ids=tuple(local_device_ids)
                       if local_device_ids is not None else None)


def initialize(args: ClusterArgs | None, timeout_s: int = 300) -> None:
    """Join the run described by ``args`` (nothing for None); must precede any JAX backend."""
    if args is None:
        return
    import jax

    # CPU collectives across processes need gloo; GPU/TPU backends ignore the setting
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = args.initialize_kwargs()
    if args.source == "auto" and args.local_device_ids is not None:
        kwargs["local_device_ids"] = list(args.local_device_ids)
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout_s)
    except (ValueError, RuntimeError) as err:  # no cluster found, coordinator unreachable, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterError(f"could not join the multi-process run ({args.source}): {first}; "
                           "outside SLURM/TPU pods give --coordinator_address, "
                           "--num_processes and --process_id") from None
    settle_coordinator_shutdown()


#: Seconds process 0 keeps the coordination service up after the shutdown barrier.
SHUTDOWN_SETTLE_S = 2.0


class _SettlingService:
    """JAX's coordination service (process 0), stopped ``settle_s`` after the others left.

    At exit every process meets at the shutdown barrier; right after it, each process cancels
    its long-running calls to the service (error polling, the preemption notice), and JAX stops
    the service at once. A cancelled call that reaches the gRPC server while it is being torn
    down aborts process 0 (SIGABRT, ``Check failed: queue.Pop() == nullptr`` in
    ``~RealRequestMatcher``) after the run ended, turning exit 0 or 2 into -6. Waiting lets
    those calls land on a running server first.
    """

    def __init__(self, service: Any, settle_s: float) -> None:
        self._service = service
        self._settle_s = settle_s

    def shutdown(self) -> None:
        time.sleep(self._settle_s)
        self._service.shutdown()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)


def settle_coordinator_shutdown(settle_s: float = SHUTDOWN_SETTLE_S,
                                state: Any | None = None) -> bool:
    """Make the coordination service this process hosts (process 0) stop ``settle_s`` after
    the shutdown barrier instead of at once (see :class:`_SettlingService`); JAX's exit
    handler keeps its order. Returns whether this process hosts a service to wrap."""
    if state is None:
        try:
            from jax._src import distributed as jax_distributed
            state = jax_distributed.global_state
        except (ImportError, AttributeError):  # private API moved: JAX's own shutdown
            return False
    service = getattr(state, "service", None)
    if service is None:  # processes other than 0 host no service
        return False
    if not isinstance(service, _SettlingService):
        state.service = _SettlingService(service, settle_s)
    return True


# -- agreement between processes ------------------------------------------------------------
_COUNTER = itertools.count()
_PREFIX = "hybrenet"
_OWN_KEYS: list[str] = []


def process_count() -> int:
    """Processes of this run (1 without JAX's distributed system)."""
    import jax

    return jax.process_count()


def _client():
    try:
        from jax._src import distributed as jax_distributed
        return jax_distributed.global_state.client
    except (ImportError, AttributeError):  # private API moved
        return None


def gather_strings(name: str, value: str, timeout_s: float = 600.0) -> list[str]:
    """Every process's ``value``, in process order (collective: all processes must call it,
    in the same order, with the same ``name``)."""
    import jax

    n = jax.process_count()
    if n == 1:
        return [value]
    key = f"{_PREFIX}/{name}/{next(_COUNTER)}"
    client = _client()
    me = jax.process_index()
    if client is not None:
        timeout_ms = int(timeout_s * 1000)
        client.key_value_set(f"{key}/{me}", value)
        out = [value if i == me else client.blocking_key_value_get(f"{key}/{i}", timeout_ms)
               for i in range(n)]
        # Every process read our key of two gathers ago before it set its key of the last
        # one, which we have read: that key can go (the store stays small in long runs).
        _OWN_KEYS.append(f"{key}/{me}")
        delete = getattr(client, "key_value_delete", None)
        if len(_OWN_KEYS) > 2 and delete is not None:
            delete(_OWN_KEYS.pop(0))
        return out
    # no coordination service (should not happen with jax.distributed): via the devices
    import numpy as np
    from jax.experimental import multihost_utils

    raw = value.encode()
    sizes = multihost_utils.process_allgather(np.array(len(raw), np.int32))
    pad = np.zeros(int(np.max(sizes)), np.uint8)
    pad[:len(raw)] = np.frombuffer(raw, np.uint8)
    rows = multihost_utils.process_allgather(pad)
    return [bytes(rows[i][:int(sizes[i])]).decode() for i in range(n)]


def barrier(name: str, timeout_s: float = 600.0) -> None:
    """Wait until every process reached the barrier ``name`` (no-op with one process)."""
    import jax

    if jax.process_count() == 1:
        return
    client = _client()
    unique = f"{_PREFIX}/{name}/{next(_COUNTER)}"
    if client is not None:
        client.wait_at_barrier(unique, int(timeout_s * 1000))
    else:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(unique)


def _error_record(err: BaseException) -> str:
    return json.dumps({"type": type(err).__name__, "message": str(err).splitlines()[0]
                       if str(err) else type(err).__name__,
                       "hybrenet": isinstance(err, HybrenetError)})


def _error_classes() -> dict[str, type]:
    """Every loaded :class:`HybrenetError` subclass by name (the error types a refusal can
    have: config, lock, run identity, checkpoint, dataset, ...), without importing them."""
    found: dict[str, type] = {}
    stack: list[type] = [HybrenetError]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.__name__, cls)
        stack.extend(cls.__subclasses__())
    return found


def _rebuild(record: dict, process: int) -> HybrenetError:
    if not record.get("hybrenet"):
        return ClusterError(f"process {process} failed: {record['type']}: {record['message']}")
    cls = _error_classes().get(record["type"], HybrenetError)
    err = cls.__new__(cls)
    Exception.__init__(err, record["message"])
    return err


def agree(name: str, fn: Callable[[], T], timeout_s: float = 600.0) -> T | None:
    """Run ``fn`` here, then learn whether it failed in any process: if it did, every process
    raises the same one-line error (the failure of the lowest process id), so a refusal of
    process 0 (a held lock, another run's workdir, a bad field) stops all of them alike.

    Collective: every process calls ``agree`` with the same ``name`` at the same point.
    Returns ``fn()``'s result where every process succeeded.
    """
    result: T | None = None
    failure: BaseException | None = None
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - reported to every process, then re-raised
        failure = err
    if process_count() == 1:
        if failure is not None:
            raise failure
        return result
    records = gather_strings(f"agree-{name}", _error_record(failure) if failure else "",
                             timeout_s)
    for process, record in enumerate(records):
        if record:
            if process == _me() and failure is not None:
                raise failure
            raise _rebuild(json.loads(record), process) from None
    return result


def _me() -> int:
    import jax

    return jax.process_index()


def any_process(name: str, value: str | None, timeout_s: float = 3600.0) -> str | None:
    """The first non-empty ``value`` over the processes (by process id), or None.

    Used for agreed preemption: each process offers the name of the signal it received (or
    None) and all of them learn the same answer at the same step.
    """
    if process_count() == 1:
        return value or None
    values = gather_strings(name, value or "", timeout_s)
    return next((v for v in values if v), None)
