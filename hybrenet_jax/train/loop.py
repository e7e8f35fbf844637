"""``train_and_evaluate(config, workdir)``: the training loop every entry point calls.

Sections: setup (mesh, data, model, optimizer) -> resume (latest intact checkpoint) -> loop
(jitted donated steps, periodic eval/checkpoints, metrics, progress bar, SIGTERM or a first
Ctrl-C = save and exit) -> summary.json. Before any of it: every config field is checked
(``config_rules``), the workdir is locked for this run (``workdir_lock``) and must have been
made for this config's identity (``run_identity``). Runs unchanged on 1 CPU, N simulated CPU
devices and multi-host pods: the batch is sharded over the mesh's ``data`` axis, params are
replicated, and every process takes the same loop decisions.

Several processes (``hybrenet_jax.distributed``): each check that can fail on one process
only (the lock, the workdir, the dataset download, the summary write) is *agreed*: when one
fails, all raise the same one-line error instead of waiting in a collective. Process 0 alone
writes shared state (manifests, quarantine, identity, config, metrics, summary, dataset
preparation) while the others wait; every process reads. A SIGTERM or Ctrl-C reaching any one
process is agreed every :data:`PREEMPTION_SYNC_STEPS` steps, so all processes save the same
step together and exit 0.

Batch rule (``config.batch_rule``): ``global`` (default, the paper recipe) keeps
``batch_size`` the global batch whatever the device count; ``per_device`` makes it the batch
of each device of the ``data`` axis, with the learning rate scaled linearly
(``learning_rate * data devices``). Either way the global batch must divide over the devices.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
from tqdm.auto import tqdm

from hybrenet_jax import data as data_lib
from hybrenet_jax import distributed
from hybrenet_jax.counts import count
from hybrenet_jax.data.pipeline import train_stream
from hybrenet_jax.data.prefetch import default_workers
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.train.checkpoint import Checkpointer, CheckpointError, load_variables
from hybrenet_jax.train.config_rules import RULES, validate_config
from hybrenet_jax.train.metrics import MetricWriter
from hybrenet_jax.train.run_identity import check_identity, record_identity
from hybrenet_jax.train.storage import (WorkPath, temporary_sibling, workdir_path,
                                          write_text_atomically)
from hybrenet_jax.train.state import (create_state, learning_rate_schedule, make_optimizer,
                                      params_digest)
from hybrenet_jax.train.steps import (LossConfig, Teacher, make_eval_step, make_train_step,
                                      replicated)
from hybrenet_jax.train.workdir_lock import WorkdirLock
from hybrenet_jax.variables import validate_variables

log = logging.getLogger(__name__)


class TrainingError(HybrenetError):
    """A run cannot start or continue (bad config, diverged loss, unwritable workdir)."""


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
#: Several processes agree on a preemption signal every this many steps (a host-side message
#: through JAX's coordination service; it does not wait for the devices).
PREEMPTION_SYNC_STEPS = 10
#: How ``batch_size`` relates to the devices (``hybrenet_jax/config.py``: ``batch_rule``).
BATCH_RULES = ("global", "per_device")
DISTILL = RULES["distill.kind"].choices
if tuple(DTYPES) != RULES["dtype"].choices:  # one list of dtypes: the rule table's
    raise ImportError("DTYPES and config_rules.RULES['dtype'] disagree")


# -- setup helpers --------------------------------------------------------------------------
def make_mesh(model_axis: int = 1) -> jax.sharding.Mesh:
    """A ``(data, model)`` mesh over all devices; the model axis is reserved (size 1 today)."""
    n = jax.device_count()
    if model_axis < 1 or n % model_axis:
        raise TrainingError(f"mesh_model_axis={model_axis} must divide the {n} devices")
    # Auto axes: XLA's sharding propagation (pjit style) places every intermediate, so
    # gradients contracted over the sharded batch need no per-op annotations.
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh((n // model_axis, model_axis), ("data", "model"),
                         axis_types=(auto, auto))


def resolve_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> dict[str, int]:
    """Durations in steps, resolved at run time (``total_steps > 0`` overrides epochs)."""
    total = config.total_steps if config.total_steps > 0 else config.num_epochs * steps_per_epoch
    if total <= 0:
        raise TrainingError("nothing to train: set num_epochs > 0 or total_steps > 0")

    def every(value: int) -> int:
        return value if value > 0 else steps_per_epoch

    return {
        "total": int(total),
        "eval_every": every(config.eval_every_steps),
        "checkpoint_every": every(config.checkpoint_every_steps),
        "log_every": max(1, min(config.log_every_steps, steps_per_epoch)),
        "warmup": int(round(config.warmup_epochs * steps_per_epoch)),
        "dkd_warmup": int(round(config.distill.dkd_warmup_epochs * steps_per_epoch)),
    }


def data_workers(config: ml_collections.ConfigDict) -> int:
    """Threads preparing training batches: ``config.data_workers``, or automatic when 0."""
    workers = int(config.get("data_workers", 0))
    if workers < 0:
        raise TrainingError(f"data_workers={workers} must be >= 0 (0: automatic)")
    return workers or default_workers()


def train_feed(train: data_lib.ArraySplit, config: ml_collections.ConfigDict, mesh,
               start_step: int, stop_step: int,
               normalization: data_lib.Normalization | None = None
               ) -> Iterator[dict[str, jax.Array]]:
    """The placed training batches of steps ``start_step .. stop_step - 1``, as the loop
    consumes them (one stream across epochs: step ``s`` is batch ``s % S`` of epoch
    ``s // S``).

    ``data_workers(config)`` threads make the batches (``train_stream``); one thread takes
    them in order, puts each on the mesh (``shard_batch``) and keeps ``config.prefetch`` of
    them ready. The batches are those of one thread, whatever the worker count.
    """
    local = train_stream(
        train, config.batch_size, seed=config.seed, start_step=start_step,
        stop_step=stop_step, process_index=jax.process_index(),
        process_count=jax.process_count(), normalization=normalization,
        crop_padding=config.crop_padding, flip=config.flip, augment=config.augment,
        workers=data_workers(config))

    def placed() -> Iterator[dict[str, jax.Array]]:
        with contextlib.closing(local):  # stops the workers when the feed is closed
            for batch in local:
                yield data_lib.shard_batch(batch, mesh)

    return data_lib.prefetch(placed(), config.prefetch)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Every field against its rule (``config_rules``), then the rules that involve several
    fields or the machine's devices; compiles nothing.

    Raises:
      HybrenetError: one line naming what is wrong and what is accepted.
    """
    validate_config(config)
    if config.distill.kind != "none" and not config.distill.teacher_workdir:
        raise TrainingError(f"distill.kind={config.distill.kind!r} needs "
                            "distill.teacher_workdir (a finished run of ours)")
    n = jax.device_count()
    if n % config.mesh_model_axis:
        raise TrainingError(f"mesh_model_axis={config.mesh_model_axis} must divide the {n} "
                            "devices")
    devices = n // config.mesh_model_axis
    rule = config.get("batch_rule", "global")
    if rule not in BATCH_RULES:
        raise TrainingError(f"batch_rule={rule!r}: accepted: {', '.join(BATCH_RULES)}")
    if rule == "global" and config.batch_size % devices:
        raise TrainingError(f"batch_size={config.batch_size} (the global batch, batch_rule="
                            f"global) must be divisible by the {devices} devices of the data "
                            "axis; use a multiple of it or batch_rule=per_device")


def apply_batch_rule(config: ml_collections.ConfigDict, data_devices: int
                     ) -> ml_collections.ConfigDict:
    """The config the loop runs: ``batch_size`` the global batch, ``learning_rate`` scaled.

    ``batch_rule=global`` (default): unchanged. ``per_device``: ``batch_size * data_devices``
    images per step and ``learning_rate * data_devices`` (linear scaling rule).
    """
    if config.get("batch_rule", "global") != "per_device" or data_devices == 1:
        return config
    out = ml_collections.ConfigDict(config.to_dict())
    out.batch_size = config.batch_size * data_devices
    out.learning_rate = config.learning_rate * data_devices
    return out


def run_directory(workdir: str | os.PathLike) -> WorkPath:
    """``workdir`` as a path (local, ``file://`` or cloud storage: ``storage.workdir_path``);
    an empty name is an error (it would mean the current folder)."""
    if not os.fspath(workdir).strip():
        raise TrainingError("workdir is empty: name a run directory, e.g. --workdir runs/NAME")
    return workdir_path(workdir)


def _make_workdir(path: WorkPath) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"workdir {path} is not writable: {err.strerror or err}") from None


#: Files a run writes into its workdir (a folder or other non-file of that name is an error).
OUTPUT_FILES = ("summary.json", "config.json", "metrics.jsonl", "run_identity.json")
OUTPUT_DIRS = ("checkpoints", "best", "tensorboard")


def _check_writable(path: WorkPath) -> None:
    try:
        # unique per process: the processes of a multi-host run share one workdir
        probe = temporary_sibling(path / ".write_test")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"workdir {path} is not writable: {err.strerror or err}") from None
    for name in OUTPUT_FILES:
        if (path / name).exists() and not (path / name).is_file():
            raise TrainingError(f"{path / name} is not a file; the run writes its {name} there: "
                                "move it away or use another workdir")
    for name in OUTPUT_DIRS:
        if (path / name).exists() and not (path / name).is_dir():
            raise TrainingError(f"{path / name} is not a folder; the run keeps its {name} "
                                "there: move it away or use another workdir")


@contextlib.contextmanager
def _writing(path: WorkPath) -> Iterator[None]:
    """Turn an OSError of the ``with`` body into one line naming ``path`` (disk full named)."""
    try:
        yield
    except OSError as err:
        reason = ("the disk is full (ENOSPC)" if err.errno == errno.ENOSPC
                  else err.strerror or str(err))
        raise TrainingError(f"writing {path} failed: {reason}; free space (or fix the path) and "
                            "rerun the same command to resume") from None


def _write_atomically(path: WorkPath, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with _writing(path):
        write_text_atomically(path, text)


def _acquire(lock: WorkdirLock, path: WorkPath) -> None:
    try:
        lock.acquire()
    except OSError as err:
        raise TrainingError(f"workdir {path} is not writable: {err.strerror or err}") from None


def load_teacher(config: ml_collections.ConfigDict, dataset: str, mesh) -> Teacher:
    """The frozen teacher of a KD/DKD run, from one of our run directories."""
    tdir = config.distill.teacher_workdir
    variables, meta = load_variables(tdir, config.distill.teacher_checkpoint)
    model_string = config.distill.teacher_model or meta.get("model")
    if not model_string:
        raise CheckpointError(f"teacher checkpoint in {tdir} does not record its model string; "
                              "set distill.teacher_model")
    spec = spec_from_model_string(model_string, dataset)
    teacher = build_model(spec, DTYPES[config.dtype])
    variables = validate_variables(spec, variables, f"teacher checkpoint in {tdir}",
                                   "Set distill.teacher_model to the teacher's model string.")
    variables = jax.device_put(variables, replicated(mesh))
    return Teacher(teacher, variables)


class _Preemption:
    """SIGTERM and a first SIGINT (Ctrl-C) become a flag the loop checks after every step
    (save, then stop). A second SIGINT goes to the handler installed before (the CLI's, which
    exits at once) or, if that is Python's default, raises ``KeyboardInterrupt`` (no save)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal: str | None = None  # name of the first signal received
        self._interrupts = 0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> "_Preemption":
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not in the main thread: no signal handling
            self.__exit__()
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                previous = self._previous.get(signal.SIGINT)
                if callable(previous) and previous is not signal.default_int_handler:
                    previous(signum, frame)
                raise KeyboardInterrupt
        if self.signal is None:
            self.signal = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


class _ThroughputTimer:
    """Training images per second, excluding the compiling first step, evals and saves."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._since: float | None = None

    def start(self, state) -> None:
        jax.block_until_ready(state)
        self._since = time.perf_counter()

    def count(self, images: int) -> None:
        if self._since is not None:
            self.images += images

    def stop(self, state) -> None:
        if self._since is not None:
            jax.block_until_ready(state)
            self.seconds += time.perf_counter() - self._since
            self._since = None

    @contextlib.contextmanager
    def paused(self, state):
        running = self._since is not None
        if running:
            self.stop(state)
        try:
            yield
        finally:
            if running:
                self._since = time.perf_counter()

    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 and self.images else None


def _log_train(writer: MetricWriter, bar, metrics: dict, step: int, spe: int,
               checkpointer: Checkpointer) -> None:
    if not all(math.isfinite(float(v)) for v in metrics.values()):
        saved = checkpointer.latest.all_steps()
        where = checkpointer.latest.directory
        kept = (f"the last checkpoint (step {max(saved)}) in {where} is intact" if saved
                else "no checkpoint was saved yet")
        raise TrainingError(
            f"non-finite training metrics at step {step} (loss={float(metrics['loss'])}); "
            f"the run stopped and {kept}; lower learning_rate or add warmup_epochs")
    with _writing(writer.path):
        writer.write(step, "train", {**metrics, "epoch": step / spe})
    bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['accuracy']):.3f}",
                    lr=f"{float(metrics['lr']):.4f}")


def evaluate(eval_step, variables, test, batch_size: int, mesh) -> dict[str, float]:
    """Exact metrics over the whole eval split (padded last batch, masked)."""
    sums = None
    batches = data_lib.eval_batches(test, batch_size, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    for batch in batches:
        out = eval_step(variables, data_lib.shard_batch(batch, mesh))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = float(sums["count"])
    return {"loss": float(sums["loss"]) / n, "accuracy": float(sums["top1"]) / n,
            "top5": float(sums["top5"]) / n, "examples": n}


# -- the loop -------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Train ``config.model`` on ``config.dataset``, resuming from ``workdir`` if possible.

    Returns the summary dict that is also written to ``workdir/summary.json`` (or, when
    stopped by SIGTERM or Ctrl-C, ``{"preempted": True, "step": ..., "signal": ...}`` after
    saving a checkpoint).

    Raises:
      HybrenetError: a bad config field (before anything is built), a workdir in use by another
        run (``WorkdirBusyError``) or made for another model, optimizer, ... (
        ``RunIdentityError``; nothing in it is changed), a diverged loss, a failed save.
      KeyboardInterrupt: a second Ctrl-C during training (nothing more is saved).
    """
    wall_start = time.time()
    main_process = jax.process_index() == 0
    lock: WorkdirLock | None = None
    effective = config

    def start() -> None:  # what may refuse the run; agreed over the processes
        nonlocal workdir, lock, effective
        check_config(config)
        workdir = run_directory(workdir)
        effective = apply_batch_rule(config, jax.device_count() // config.mesh_model_axis)
        _make_workdir(workdir)
        lock = WorkdirLock(workdir, enabled=main_process)
        _acquire(lock, workdir)
        _check_writable(workdir)
        check_identity(workdir, effective)

    try:
        distributed.agree("start", start)
        return _train(effective, workdir, wall_start, main_process)
    finally:
        if lock is not None:
            lock.release()


def _load_data(config: ml_collections.ConfigDict, main_process: bool
               ) -> tuple[data_lib.ArraySplit, data_lib.ArraySplit]:
    """Both splits; process 0 downloads and prepares them first while the others wait, then
    the others read (one writer of ``data_dir``); a failure anywhere stops every process."""
    def load() -> tuple[data_lib.ArraySplit, data_lib.ArraySplit]:
        train = data_lib.load_dataset(config.dataset, "train", config.data_dir or None,
                                      config.manual_dir or None)
        test = data_lib.load_dataset(config.dataset, data_lib.eval_split(config.dataset),
                                     config.data_dir or None, config.manual_dir or None)
        return train, test

    first = distributed.agree("data-prepare", load if main_process else lambda: None,
                              timeout_s=6 * 3600.0)
    rest = distributed.agree("data-read", (lambda: None) if main_process else load,
                             timeout_s=6 * 3600.0)
    return first if main_process else rest


def _train(config: ml_collections.ConfigDict, workdir: WorkPath, wall_start: float,
           main_process: bool) -> dict:
    """Setup, resume, loop and summary of :func:`train_and_evaluate` (workdir locked)."""
    mesh = make_mesh(config.mesh_model_axis)

    spec = spec_from_model_string(config.model, config.dataset)
    train, test = _load_data(config, main_process)
    if train.num_classes != spec.classes:
        raise TrainingError(f"model {config.model!r} has {spec.classes} classes but "
                            f"{config.dataset} has {train.num_classes}")
    spe = data_lib.steps_per_epoch(len(train), config.batch_size)
    if spe == 0:
        raise TrainingError(f"batch_size={config.batch_size} exceeds the {len(train)} "
                            f"training examples of {config.dataset}")
    steps = resolve_steps(config, spe)

    schedule = learning_rate_schedule(config.learning_rate, steps["total"], steps["warmup"],
                                      config.lr_schedule)
    optimizer = make_optimizer(schedule, config.momentum, config.weight_decay,
                               config.nesterov, config.optimizer)
    model = build_model(spec, DTYPES[config.dtype])
    rep = replicated(mesh)

    def init(rng):
        return create_state(model.init(rng, jnp.zeros(input_shape(spec, 1))), optimizer)

    rng = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init, rng)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                            abstract)
    checkpointer = Checkpointer(workdir, config.checkpoint_keep, config.checkpoint_keep_best,
                                config.async_checkpointing)
    restored = checkpointer.restore_latest(abstract)
    if restored is not None:
        state, meta = restored
        if meta.get("model") not in (None, config.model):
            raise CheckpointError(f"workdir {workdir} holds a run of {meta.get('model')!r}, "
                                  f"not {config.model!r}: use another workdir")
        log.info("resumed from step %d in %s", int(state.step), workdir)
    else:
        state = jax.jit(init, out_shardings=rep)(rng)

    teacher = load_teacher(config, config.dataset, mesh) if config.distill.kind != "none" \
        else None
    loss = LossConfig(distill=config.distill.kind, label_smoothing=config.label_smoothing,
                      temperature=config.distill.temperature, kd_weight=config.distill.kd_weight,
                      dkd_alpha=config.distill.dkd_alpha, dkd_beta=config.distill.dkd_beta,
                      dkd_warmup_steps=steps["dkd_warmup"])
    train_step = make_train_step(model, optimizer, schedule, loss, mesh, teacher)
    eval_step = make_eval_step(model, mesh)
    teacher_vars = teacher.variables if teacher else None

    counts = count(spec)
    meta = {"model": config.model, "dataset": config.dataset}

    def record() -> None:
        if main_process:
            with _writing(workdir / "run_identity.json"):
                record_identity(workdir, config)  # once the config builds and restores
            _write_atomically(workdir / "config.json", config.to_json_best_effort(indent=2))

    distributed.agree("record", record)
    with _writing(workdir / "metrics.jsonl"):
        writer = MetricWriter(workdir, enabled=main_process, tensorboard=config.tensorboard)
    several = jax.process_count() > 1

    step = first_step = int(state.step)
    best = {"accuracy": -1.0, "step": -1}
    timer = _ThroughputTimer()
    last_eval: dict[str, float] | None = None
    bar = tqdm(total=steps["total"], initial=step, disable=not (main_process and config.progress),
               desc=config.model, unit="step", dynamic_ncols=True)
    with _Preemption() as preemption:
        # the signal every process acts on: its own (one process), or agreed (several)
        stop = (distributed.any_process("preempt", preemption.signal) if several
                else preemption.signal)
        # One stream over all remaining steps; closing it stops the data threads.
        with contextlib.closing(train_feed(train, config, mesh, step, steps["total"])) as feed:
            for batch in (() if stop or step >= steps["total"] else feed):
                state, metrics = train_step(state, batch, teacher_vars)
                step += 1
                bar.update(1)
                if not several:
                    stop = preemption.signal
                elif step % PREEMPTION_SYNC_STEPS == 0 and step < steps["total"]:
                    stop = distributed.any_process("preempt", preemption.signal)
                if step == first_step + 1:
                    timer.start(state)  # the first step compiles: time from here on
                else:
                    timer.count(config.batch_size)
                if step % steps["log_every"] == 0 or step == steps["total"]:
                    _log_train(writer, bar, jax.device_get(metrics), step, spe, checkpointer)
                with timer.paused(state):
                    if step % steps["eval_every"] == 0 or step == steps["total"]:
                        last_eval = evaluate(eval_step, state.variables, test,
                                             config.batch_size, mesh)
                        with _writing(writer.path):
                            writer.write(step, "eval", last_eval)
                        if main_process:
                            bar.write(f"step {step} (epoch {step / spe:.2f}): eval accuracy "
                                      f"{last_eval['accuracy']:.4f}, top5 "
                                      f"{last_eval['top5']:.4f}, loss {last_eval['loss']:.4f}")
                        if last_eval["accuracy"] > best["accuracy"]:
                            best = {"accuracy": last_eval["accuracy"], "step": step}
                        checkpointer.save_best(step, state, {**meta, "epoch": step / spe},
                                               last_eval["accuracy"])
                    if not several:  # a signal that came during the eval counts now
                        stop = preemption.signal
                    if (step % steps["checkpoint_every"] == 0 or step == steps["total"]
                            or stop):
                        checkpointer.save(step, state, {**meta, "epoch": step / spe},
                                          force=True)
                if step >= steps["total"] or stop:
                    break
    timer.stop(state)
    bar.close()
    checkpointer.close()
    with _writing(writer.path):
        writer.close()
    if stop and step < steps["total"]:
        log.warning("%s: saved step %d; rerun the same command to resume", stop, step)
        return {"preempted": True, "step": step, "signal": stop}

    if last_eval is None:  # resumed a finished run
        last_eval = evaluate(eval_step, state.variables, test, config.batch_size, mesh)
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "distill": config.distill.kind,
        "test_accuracy": last_eval["accuracy"],
        "test_top5": last_eval["top5"],
        "test_loss": last_eval["loss"],
        "best_accuracy": max(best["accuracy"], last_eval["accuracy"]),
        "relus": counts.relus,
        "flops": counts.flops,
        "macs": counts.macs,
        "params": counts.params,
        "steps": step,
        "epochs": step / spe,
        "train_images_per_second": timer.images_per_second(),
        "wall_seconds": time.time() - wall_start,
        "params_digest": params_digest(state),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    distributed.agree("summary", lambda: main_process and _write_atomically(
        workdir / "summary.json", json.dumps(summary, indent=2)))
    return summary
