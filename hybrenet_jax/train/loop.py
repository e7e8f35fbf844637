"""``train_and_evaluate(config, workdir)``: the training loop every entry point calls.

Sections: setup (the training core :class:`~hybrenet_jax.train.setup.Setup`: mesh, data,
batch stream, restore, evaluation; then model and optimizer) -> resume (latest intact
checkpoint) -> loop (the cross-entropy/KD/DKD objective on the jitted donated step, periodic
eval/checkpoints, metrics, progress bar, SIGTERM or a first Ctrl-C = save and exit) ->
summary.json. Before any of it: the typed config is built and checked
(:func:`hybrenet_jax.schema.build_config`), the workdir is locked for this run
(``workdir_lock``) and must have been made for this config's identity (``run_identity``). Runs unchanged on 1 CPU, N simulated CPU
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
import dataclasses
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from hybrenet_jax import distributed
from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.schema import (TrainConfig, as_dict, build_config, schedule_steps, stream_seed,
                                 updated)
from hybrenet_jax.train.checkpoint import Checkpointer, CheckpointError
from hybrenet_jax.train.divergence import DivergenceWatch, diverged_message, finite_numbers
from hybrenet_jax.train.metrics import MetricWriter
from hybrenet_jax.train.run_identity import check_identity, record_identity
from hybrenet_jax.train.rundir import (Preempted, TrainingError, check_lock, check_writable,
                                       make_workdir, read_summary, remove_if_untouched,
                                       run_directory, write_atomically, write_summary,
                                       writing)
from hybrenet_jax.train.setup import Setup, load_teacher
from hybrenet_jax.train.state import (create_state, learning_rate_schedule, make_optimizer,
                                      params_digest)
from hybrenet_jax.train.steps import (LossConfig, make_population_step, step_body,
                                      supervised_objective)
from hybrenet_jax.train.storage import WorkPath
from hybrenet_jax.train.workdir_lock import LOCK_FILE, WorkdirLock

log = logging.getLogger(__name__)


#: Several processes agree on a preemption signal every this many steps (a host-side message
#: through JAX's coordination service; it does not wait for the devices).
PREEMPTION_SYNC_STEPS = 10


# -- setup helpers --------------------------------------------------------------------------
def resolve_steps(config: TrainConfig, steps_per_epoch: int) -> dict[str, int]:
    """Durations in steps, resolved at run time (``total_steps > 0`` overrides epochs; a DKD
    warm-up trained on top is added: :func:`hybrenet_jax.schema.schedule_steps`)."""
    total = schedule_steps(config, steps_per_epoch)
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


def check_run(config: TrainConfig) -> None:
    """The rules of a training run beyond its fields (checked by
    :func:`hybrenet_jax.schema.build_config`): a teacher for distillation, and what the
    machine's devices need; compiles nothing.

    Raises:
      TrainingError: one line naming what is wrong and what is accepted.
    """
    if config.distill.kind != "none" and not config.distill.teacher_workdir:
        raise TrainingError(f"distill.kind={config.distill.kind!r} needs "
                            "distill.teacher_workdir (a finished run of ours)")
    n = jax.device_count()
    if n % config.mesh_model_axis:
        raise TrainingError(f"mesh_model_axis={config.mesh_model_axis} must divide the {n} "
                            "devices")
    devices = n // config.mesh_model_axis
    if config.batch_rule == "global" and config.batch_size % devices:
        raise TrainingError(f"batch_size={config.batch_size} (the global batch, batch_rule="
                            f"global) must be divisible by the {devices} devices of the data "
                            "axis; use a multiple of it or batch_rule=per_device")


def apply_batch_rule(config: TrainConfig, data_devices: int) -> TrainConfig:
    """The config the loop runs: ``batch_size`` the global batch, ``learning_rate`` scaled.

    ``batch_rule=global`` (default): unchanged. ``per_device``: ``batch_size * data_devices``
    images per step and ``learning_rate * data_devices`` (linear scaling rule).
    """
    if config.batch_rule != "per_device" or data_devices == 1:
        return config
    return updated(config, {"batch_size": config.batch_size * data_devices,
                            "learning_rate": config.learning_rate * data_devices})


#: Fields each process may set for itself (where it finds its data, how it prepares and
#: shows it); every other field of the typed config must be the same on every process.
PER_PROCESS_FIELDS = ("data_dir", "manual_dir", "prefetch", "data_workers", "progress",
                      "tensorboard")
#: Written by process 0 of a multi-process run and read by the others: one shared folder.
PROCESS_TOKEN = ".process0_token"


def _flat(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_processes_agree(config: TrainConfig) -> None:
    """Every process of a run has the same typed config (but :data:`PER_PROCESS_FIELDS`),
    checked before any collective: processes that train different things would diverge
    silently (another learning rate) or abort inside a collective (another model).

    Raises:
      TrainingError: on every process, the same line naming the fields and each value.
    """
    if jax.process_count() == 1:
        return
    shared = {k: v for k, v in _flat(as_dict(config)).items() if k not in PER_PROCESS_FIELDS}
    views = [json.loads(v) for v in distributed.gather_strings(
        "config", json.dumps(shared, sort_keys=True, default=str))]
    differ = [k for k in sorted(views[0]) if any(v.get(k) != views[0][k] for v in views)]
    if differ:
        named = "; ".join(f"{k}: " + ", ".join(f"{v.get(k)!r}" for v in views)
                          for k in differ[:4])
        raise TrainingError(f"the processes of this run have different configs ({named}, "
                            "by process); start every process with the same config and "
                            "overrides")


def check_shared_workdir(workdir: WorkPath, main_process: bool) -> None:
    """Every process sees the file process 0 just wrote into the workdir: the classic
    cluster mistake (node-local paths) is refused at start, not as a hang in the first
    checkpoint.

    Raises:
      TrainingError: on every process, the same line naming the process that does not see it.
    """
    if jax.process_count() == 1:
        return
    token = uuid.uuid4().hex if main_process else ""
    path = workdir / PROCESS_TOKEN
    distributed.agree("token-written", lambda: main_process and write_atomically(path, token))
    expected = distributed.gather_strings("token", token)[0]

    def read() -> None:
        try:
            seen = path.read_text()
        except OSError:
            seen = None
        if seen != expected:
            raise TrainingError(
                f"workdir {workdir} is not one folder for every process: process "
                f"{jax.process_index()} does not see the file process 0 just wrote there "
                "(node-local paths?); give every process the same shared folder (a network "
                "filesystem or a gs:// URL)")

    distributed.agree("workdir-shared", read)


def _acquire(lock: WorkdirLock, path: WorkPath) -> None:
    try:
        lock.acquire()
    except OSError as err:
        raise TrainingError(f"workdir {path} is not writable: {err.strerror or err}") from None


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


@contextlib.contextmanager
def _flushed_on_error(writer: MetricWriter) -> Iterator[None]:
    """Write the metrics held in memory (storage that cannot append) when the loop ends by an
    exception (a diverged loss, a failed save, a second Ctrl-C), then let it propagate."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            writer.flush()
        raise


def _log_train(writer: MetricWriter, bar, metrics: dict, step: int, spe: int) -> None:
    with writing(writer.path):
        writer.write(step, "train", {**metrics, "epoch": step / spe})
    bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{float(metrics['accuracy']):.3f}",
                    lr=f"{float(metrics['lr']):.4f}")


def _diverged(step: int, checkpointer: Checkpointer) -> TrainingError:
    """The one-line error of a diverged run, naming the last (finite) checkpoint kept."""
    checkpointer.wait()  # in-flight saves are finite (checked before they started)
    return TrainingError(diverged_message("training", step, checkpointer.last_intact_step(),
                                          str(checkpointer.latest.directory)))


# -- the loop -------------------------------------------------------------------------------
def train_and_evaluate(config: TrainConfig | Mapping, workdir: str | os.PathLike) -> dict:
    """Train ``config.model`` on ``config.dataset``, resuming from ``workdir`` if possible.

    ``config`` is a :class:`~hybrenet_jax.schema.TrainConfig` or a mapping of its fields (a
    ``ConfigDict``), built and checked here before anything else. A population of one
    (:func:`train_population`).

    Returns the summary dict that is also written to ``workdir/summary.json`` (or, when
    stopped by SIGTERM or Ctrl-C, ``{"preempted": True, "step": ..., "signal": ...}`` after
    saving a checkpoint).

    Raises:
      HybrenetError: a bad config field (before anything is built), a workdir in use by another
        run (``WorkdirBusyError``) or made for another model, optimizer, ... (
        ``RunIdentityError``; nothing in it is changed), a diverged loss, a failed save.
      KeyboardInterrupt: a second Ctrl-C during training (nothing more is saved).
    """
    result = train_population([(config, workdir)])[0]
    if isinstance(result, BaseException):
        raise result
    return result


#: What a member's result is when it could not finish: the one-line error of its divergence.
MemberResult = dict | TrainingError


def train_population(runs: Sequence[tuple[TrainConfig | Mapping, str | os.PathLike]]
                     ) -> list[MemberResult]:
    """Train several runs as one population: one jitted step updates every member, the
    data stream and the teacher's forward pass (when they distil) are shared.

    Each member is an ordinary run of :func:`train_and_evaluate` in its own workdir (same
    files, same checks, same resume); members must share what the stream and the teacher are
    made of (:func:`pack_key`). A member that diverges is stopped (its workdir keeps its last
    finite checkpoint) and reported as its :class:`TrainingError` in the returned list, while
    the others go on; with one member the error is raised, as ever.

    Returns:
      One entry per run, in order: its summary (or the preemption record), or the error of
      its divergence.

    Raises:
      HybrenetError: a bad config, a refused workdir (any member), members that cannot be
        packed, a failed save.
    """
    wall_start = time.time()
    main_process = jax.process_index() == 0
    typed = distributed.agree("config", lambda: [build_config(c) for c, _ in runs])
    for member_config in typed:
        check_processes_agree(member_config)
    check_packable(typed)
    workdirs: list[WorkPath] = []
    locks: list[WorkdirLock] = []
    effective: list[TrainConfig] = []
    made: list[WorkPath] = []  # workdirs this made: a refusal before they were written removes them

    def start() -> None:  # what may refuse a run; agreed over the processes
        for member_config, (_, workdir) in zip(typed, runs):
            check_run(member_config)
            path = run_directory(workdir)
            if path in workdirs:
                raise TrainingError(f"two members of the population share workdir {path}")
            run_config = apply_batch_rule(member_config, jax.device_count()
                                          // member_config.mesh_model_axis)
            created = main_process and not path.exists()
            make_workdir(path)
            lock = WorkdirLock(path, enabled=main_process)
            _acquire(lock, path)
            locks.append(lock)
            workdirs.append(path)
            if created:  # ours only once we hold its lock (a refused rival removes nothing)
                made.append(path)
            check_writable(path)
            check_identity(path, run_config)
            effective.append(run_config)

    finished = False
    try:
        distributed.agree("start", start)
        for path in workdirs:
            check_shared_workdir(path, main_process)
        results = _train(effective, workdirs, wall_start, main_process)
        finished = True
        return results
    finally:
        if not finished:  # under our locks: no other run can be starting in them
            for path in made:
                remove_if_untouched(path, {LOCK_FILE, PROCESS_TOKEN})
        for lock in locks:
            lock.release()


#: Fields that make the data stream and the teacher pass every member shares.
PACKED_FIELDS = ("dataset", "data_dir", "manual_dir", "batch_size", "batch_rule",
                 "crop_padding", "flip", "augment", "dtype", "mesh_model_axis")


def pack_key(config: TrainConfig) -> tuple:
    """Runs with equal keys can train as one population: the same batches (dataset, batch,
    augmentation, data order), dtype, length in steps, and teacher (when distilling)."""
    teacher = ((config.distill.teacher_workdir, config.distill.teacher_model,
                config.distill.teacher_checkpoint) if config.distill.kind != "none" else None)
    return (tuple(getattr(config, f) for f in PACKED_FIELDS), stream_seed(config),
            config.num_epochs, config.total_steps, config.distill.dkd_warmup_extra
            if config.distill.kind == "dkd" else None, teacher)


def check_packable(configs: Sequence[TrainConfig]) -> None:
    """Refuse members whose batches, length or teacher differ (:func:`pack_key`): one line
    naming the first field that differs.

    Raises:
      TrainingError: the members cannot share one data stream and teacher pass.
    """
    teachers = {pack_key(c)[-1] for c in configs} - {None}
    if len(teachers) > 1:
        raise TrainingError("the members of a population distil from different teachers; "
                            "pack runs of one teacher together")
    first = configs[0]
    for other in configs[1:]:
        for name in (*PACKED_FIELDS, "num_epochs", "total_steps"):
            if getattr(other, name) != getattr(first, name):
                raise TrainingError(f"the members of a population differ in {name} "
                                    f"({getattr(first, name)!r} vs {getattr(other, name)!r}); "
                                    "they must share the data stream: pack runs with equal "
                                    f"{name}")
        if stream_seed(other) != stream_seed(first):
            raise TrainingError(f"the members of a population differ in their data order "
                                f"(data_seed {stream_seed(first)} vs {stream_seed(other)}); set "
                                "the same data_seed for every member")
        if pack_key(other) != pack_key(first) and pack_key(other)[-1] is not None \
                and pack_key(first)[-1] is not None:
            raise TrainingError("the members of a population differ in their DKD warm-up "
                                "epochs trained on top; pack runs of equal length")


@dataclasses.dataclass
class _Member:
    """One run of a population and what the loop keeps for it."""

    config: TrainConfig
    workdir: WorkPath
    spec: Any
    steps: dict
    model: Any
    body: Callable
    checkpointer: Checkpointer
    eval_step: Callable = None  # type: ignore[assignment]
    writer: MetricWriter | None = None
    watch: DivergenceWatch = dataclasses.field(default_factory=DivergenceWatch)
    best: dict = dataclasses.field(default_factory=lambda: {"accuracy": -1.0, "step": -1})
    last_eval: dict | None = None
    failed: TrainingError | None = None


def _member(config: TrainConfig, workdir: WorkPath, setup: Setup) -> tuple[_Member, Any]:
    """A member's model, optimizer and step body, and its restored (or initial) state."""
    spec = spec_from_model_string(config.model, config.dataset)
    if setup.train.num_classes != spec.classes:
        raise TrainingError(f"model {config.model!r} has {spec.classes} classes but "
                            f"{config.dataset} has {setup.train.num_classes}")
    steps = resolve_steps(config, setup.steps_per_epoch)
    schedule = learning_rate_schedule(config.learning_rate, steps["total"], steps["warmup"],
                                      config.lr_schedule)
    optimizer = make_optimizer(schedule, config.momentum, config.weight_decay,
                               config.nesterov, config.optimizer)
    model = build_model(spec, setup.dtype)

    def init():
        variables = model.init(jax.random.PRNGKey(config.seed), jnp.zeros(input_shape(spec, 1)))
        return create_state(variables, optimizer)

    checkpointer = Checkpointer(workdir, config.checkpoint_keep, config.checkpoint_keep_best,
                                config.async_checkpointing)
    state, restored_meta = setup.restore(checkpointer, init)
    if restored_meta is not None:
        if restored_meta.get("model") not in (None, config.model):
            raise CheckpointError(f"workdir {workdir} holds a run of "
                                  f"{restored_meta.get('model')!r}, not {config.model!r}: use "
                                  "another workdir")
        log.info("resumed from step %d in %s", int(state.step), workdir)
    loss = LossConfig(distill=config.distill.kind, label_smoothing=config.label_smoothing,
                      temperature=config.distill.temperature, kd_weight=config.distill.kd_weight,
                      dkd_alpha=config.distill.dkd_alpha, dkd_beta=config.distill.dkd_beta,
                      dkd_warmup_steps=steps["dkd_warmup"])
    body = step_body(supervised_objective(model, loss), optimizer, schedule)
    return _Member(config, workdir, spec, steps, model, body, checkpointer), state


def _train(configs: list[TrainConfig], workdirs: list[WorkPath], wall_start: float,
           main_process: bool) -> list[MemberResult]:
    """Setup and resume of :func:`train_population` (workdirs locked); members restored at
    different steps (a damaged checkpoint set aside in one) train as separate groups."""
    setup = Setup.create(configs[0])
    built = [_member(c, w, setup) for c, w in zip(configs, workdirs)]
    teacher_config = next((c for c in configs if c.distill.kind != "none"), None)
    teacher = load_teacher(teacher_config, setup.mesh) if teacher_config else None
    results: dict[int, MemberResult] = {}
    by_step: dict[int, list[int]] = {}
    for i, (_, state) in enumerate(built):
        by_step.setdefault(int(state.step), []).append(i)
    if len(by_step) > 1:
        log.warning("the members resume from different steps (%s): they train as %d groups",
                    ", ".join(str(s) for s in sorted(by_step)), len(by_step))
    lengths = {m.steps["total"] for m, _ in built}
    if len(lengths) > 1:  # e.g. DKD warm-ups of other lengths trained on top
        raise TrainingError(f"the members of a population train for different numbers of "
                            f"steps ({', '.join(map(str, sorted(lengths)))}); pack runs of "
                            "equal length")
    for _, group in sorted(by_step.items()):
        members = [built[i][0] for i in group]
        states = tuple(built[i][1] for i in group)
        for i, result in zip(group, _run(members, states, setup, teacher, wall_start,
                                         main_process)):
            results[i] = result
    return [results[i] for i in range(len(built))]


def _run(members: list[_Member], states: tuple, setup: Setup, teacher, wall_start: float,
         main_process: bool) -> list[MemberResult]:
    """The loop of one group of members at the same step: shared batches, one jitted step,
    each member's own logging, evaluation, checkpoints, divergence check and summary."""
    spe = setup.steps_per_epoch
    total = members[0].steps["total"]
    several = jax.process_count() > 1
    train_step = make_population_step([m.body for m in members], setup.mesh, teacher)
    teacher_vars = teacher.variables if teacher else None
    for member in members:
        member.eval_step = setup.eval_step(member.model)

        def record(member=member) -> None:
            if main_process:
                with writing(member.workdir / "run_identity.json"):
                    record_identity(member.workdir, member.config)  # once it builds, restores
                write_atomically(member.workdir / "config.json",
                                 json.dumps(as_dict(member.config), indent=2))

        distributed.agree("record", record)
        with writing(member.workdir / "metrics.jsonl"):
            member.writer = MetricWriter(member.workdir, enabled=main_process,
                                         tensorboard=member.config.tensorboard)
            member.writer.rewind(int(states[0].step))  # what comes after is logged anew

    step = first_step = int(states[0].step)
    timer = _ThroughputTimer()
    desc = members[0].config.model if len(members) == 1 else f"population of {len(members)}"
    bar = tqdm(total=total, initial=step, disable=not (main_process and any(
        m.config.progress for m in members)), desc=desc, unit="step", dynamic_ncols=True)

    def fail(member: _Member, error: TrainingError) -> None:
        """Stop a diverged member (alone: raise its error at once, as a single run does)."""
        member.failed = error
        if len(members) == 1:
            raise error
        log.error("%s (%s): %s", member.config.model, member.workdir, error)

    def guard(i: int, checked_state=None) -> bool:
        """Whether member ``i`` may go on (log, evaluate, save); every process decides alike."""
        member = members[i]
        if member.failed is not None:
            return False
        bad = member.watch.check(checked_state)
        if bad is not None:
            fail(member, _diverged(bad, member.checkpointer))
            return False
        if checked_state is not None:  # about to save: still the workdir's one writer
            distributed.agree("lock-held", lambda: check_lock(member.workdir / "checkpoints"))
        return True

    with _Preemption() as preemption, contextlib.ExitStack() as flushed:
        for member in members:
            flushed.enter_context(_flushed_on_error(member.writer))
        # the signal every process acts on: its own (one process), or agreed (several)
        stop = (distributed.any_process("preempt", preemption.signal) if several
                else preemption.signal)
        # One stream over all remaining steps; closing it stops the data threads.
        feed = setup.feed(step, first_step if stop else total)
        with contextlib.closing(feed):
            for batch in feed:
                states, metrics = train_step(states, batch, teacher_vars)
                step += 1
                for member, state, member_metrics in zip(members, states, metrics):
                    if member.failed is None:
                        member.watch.observe(state.step, member_metrics)
                bar.update(1)
                if not several:
                    stop = preemption.signal
                elif step % PREEMPTION_SYNC_STEPS == 0 and step < total:
                    stop = distributed.any_process("preempt", preemption.signal)
                if step == first_step + 1:
                    timer.start(states)  # the first step compiles: time from here on
                else:
                    timer.count(members[0].config.batch_size)
                def due(member: _Member, every: str) -> bool:  # each member's own cadence
                    return step % member.steps[every] == 0 or step == total

                for i, member in enumerate(members):
                    if due(member, "log_every") and guard(i):
                        _log_train(member.writer, bar, jax.device_get(metrics[i]), step, spe)
                with timer.paused(states):
                    for i, (member, state) in enumerate(zip(members, states)):
                        if due(member, "eval_every") and guard(i, state):  # nothing non-finite
                            error = _evaluate(member, state, setup, step, bar,  # is ranked
                                              main_process, len(members) > 1)
                            if error is not None:
                                fail(member, error)
                    if not several:  # a signal that came during the eval counts now
                        stop = preemption.signal
                    for i, (member, state) in enumerate(zip(members, states)):
                        if (due(member, "checkpoint_every") or stop) and guard(i, state):
                            with writing(member.writer.path):  # metrics to a resumable step
                                member.writer.flush()
                            member.checkpointer.save(
                                step, state, {"model": member.config.model,
                                              "dataset": member.config.dataset,
                                              "epoch": step / spe}, force=True)
                if step >= total or stop or all(m.failed for m in members):
                    break
    timer.stop(states)
    bar.close()
    for member in members:
        member.checkpointer.close()
        with writing(member.writer.path):
            member.writer.close()
    if stop and step < total:
        log.warning("%s: saved step %d; rerun the same command to resume", stop, step)
        return [m.failed or {"preempted": True, "step": step, "signal": stop} for m in members]
    return [member.failed or _summarize(member, state, setup, step, timer, wall_start,
                                        len(members), main_process)
            for member, state in zip(members, states)]


def _evaluate(member: _Member, state, setup: Setup, step: int, bar, main_process: bool,
              named: bool) -> TrainingError | None:
    """Evaluate one member, log it and offer its state to its best-k set; its divergence
    error instead when the evaluation is not finite (nothing is logged or ranked then)."""
    spe = setup.steps_per_epoch
    last_eval = setup.evaluate(member.eval_step, state.variables)
    if not finite_numbers(last_eval):
        return _diverged(step, member.checkpointer)
    member.last_eval = last_eval
    with writing(member.writer.path):
        member.writer.write(step, "eval", last_eval)
    if main_process:
        who = f"{member.workdir}: " if named else ""
        bar.write(f"{who}step {step} (epoch {step / spe:.2f}): eval accuracy "
                  f"{last_eval['accuracy']:.4f}, top5 {last_eval['top5']:.4f}, loss "
                  f"{last_eval['loss']:.4f}")
    if last_eval["accuracy"] > member.best["accuracy"]:
        member.best = {"accuracy": last_eval["accuracy"], "step": step}
    member.checkpointer.save_best(step, state, {"model": member.config.model,
                                                "dataset": member.config.dataset,
                                                "epoch": step / spe}, last_eval["accuracy"])
    return None


def _summarize(member: _Member, state, setup: Setup, step: int, timer: _ThroughputTimer,
               wall_start: float, population: int, main_process: bool) -> dict:
    """A finished member's ``summary.json`` (written by process 0) and its dict."""
    config = member.config
    last_eval = member.last_eval
    if last_eval is None:  # resumed a finished run
        last_eval = setup.evaluate(member.eval_step, state.variables)
    counts = count(member.spec)
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "distill": config.distill.kind,
        "test_accuracy": last_eval["accuracy"],
        "test_top5": last_eval["top5"],
        "test_loss": last_eval["loss"],
        "best_accuracy": max(member.best["accuracy"], last_eval["accuracy"]),
        "relus": counts.relus,
        "flops": counts.flops,
        "macs": counts.macs,
        "params": counts.params,
        "steps": step,
        "epochs": step / setup.steps_per_epoch,
        "train_images_per_second": timer.images_per_second(),
        "wall_seconds": time.time() - wall_start,
        "params_digest": params_digest(state),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if population > 1:  # the record says how it was trained
        summary["population"] = population
    distributed.agree("summary",
                      lambda: main_process and write_summary(member.workdir, summary))
    return summary


def train_once(config: TrainConfig | Mapping, workdir: str | os.PathLike,
               log_line: Callable[[str], None]) -> dict:
    """The summary of the finished run in ``workdir``, training (or resuming) it first when
    it has not finished; the pipelines and SNL train every network through this.

    Raises:
      TrainingError: ``workdir`` holds a finished run of another model or distillation.
      Preempted: the run received SIGTERM (or Ctrl-C) and saved a checkpoint.
    """
    config = build_config(config)
    summary = read_summary(workdir)
    if summary is not None:
        if summary.get("model") != config.model:
            raise TrainingError(f"{workdir} holds a finished run of {summary.get('model')!r}, "
                                f"not {config.model!r}: use another workdir")
        if summary.get("distill", config.distill.kind) != config.distill.kind:
            raise TrainingError(f"{workdir} holds a run of {config.model} trained with "
                                f"distill={summary.get('distill')}, not "
                                f"{config.distill.kind}: use another workdir (or the same "
                                "teacher option as before)")
        log_line(f"finished already: {config.model} ({workdir})")
        return summary
    summary = train_and_evaluate(config, workdir)
    if summary.get("preempted"):
        raise Preempted(workdir, int(summary.get("step", 0)))
    return summary
