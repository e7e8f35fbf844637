"""Accelerator acceptance run: ``python -m bench.accelerator --out DIR [--budget-s 470]``.

One command that says whether hybrenet_jax works, and how fast, on the accelerator it runs on
(one GPU, as a lent H100/H200 or one node of a cluster). In order of importance, each part
written to ``DIR/accelerator.json`` and ``DIR/accelerator.md`` as soon as it is done, so a run
cut short by ``--budget-s`` or a timeout keeps everything measured until then:

1. ``environment``: device name/count, driver, CUDA, cuDNN, package versions, XLA flags;
2. ``main_job``: the README's main job (digits, ``configs/default.py``) on the accelerator:
   test accuracy (>= 0.95 asked), images/s, wall time;
3. ``durability``: the same run SIGKILLed after a checkpoint and resumed, params digest vs the
   uninterrupted run, with the project's XLA defaults (on a GPU: deterministic kernels) and
   with XLA's own default kernels;
4. ``export``: ``hybrenet export --verify`` of the accelerator-trained checkpoint;
5. ``pipeline``: the input pipeline's images/s on this host;
6. ``steps``: the training step of each network x batch x dtype, ours against PyTorch on the
   same single GPU (eager and ``torch.compile`` of the whole step, channels_last,
   ``cudnn.benchmark``, bf16 autocast), images/s, step ms, compile s, MFU, peak memory.

Step groups (one network at one batch, both dtypes) compile concurrently, ``--concurrency``
groups at a time; while one group is timed, every worker still compiling is paused
(SIGSTOP), so timings see an otherwise idle machine.

``--cpu-smoke`` runs all of it on the CPU with tiny networks and 2 timed steps, no torch
needed: the test suite runs it. The process running this module never starts a JAX backend.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from bench.peaks import peak_for
from bench.throughput import (GPU_NETWORKS, build_workers, implementations, interleave,
                              make_record, torch_available, worker_env)
from bench.worker import Worker
from hybrenet_jax.runtime import DETERMINISM_OPT_OUT

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPORT_JSON = "accelerator.json"
REPORT_MD = "accelerator.md"
ACCURACY_TARGET = 0.95
SMOKE_NETWORKS = ("hrn-2x2x2x:m=4,cull=S1,thin=S2+S3+S4,reuse=2",)  # culled, thinned and Re2
#: model-string overrides of the main job in --cpu-smoke (a few steps of a tiny network)
SMOKE_TRAIN = ("--config.model=hrn-2x2x2x:m=4", "--config.batch_size=32",
               "--config.total_steps=16", "--config.eval_every_steps=8")


# -- the report ------------------------------------------------------------------------------
class Report:
    """The run's JSON + markdown, rewritten atomically after every finished part."""

    def __init__(self, out: pathlib.Path, data: dict[str, Any]):
        self.out = out
        self.data = data
        self.lock = threading.Lock()

    def update(self, **parts: Any) -> None:
        with self.lock:
            self.data.update(parts)
            self._write()

    def add_step(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.data.setdefault("steps", []).append(record)
            self._write()

    def _write(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _atomic_write(self.out / REPORT_JSON, json.dumps(self.data, indent=1) + "\n")
        _atomic_write(self.out / REPORT_MD, render_markdown(self.data))


def _atomic_write(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -- budget ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Budget:
    """Seconds left until ``--budget-s`` runs out."""

    deadline: float

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, cap: float) -> float:
        """A child's timeout: ``cap`` or what is left, at least 1 s."""
        return max(1.0, min(cap, self.left()))


# -- child processes ---------------------------------------------------------------------------
def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None,
         log: pathlib.Path | None = None) -> dict[str, Any]:
    """Run a child to completion (or its timeout): rc, wall seconds, output tail."""
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") if log else open(os.devnull, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            sink.write(out or "")
            return {"rc": None, "timed_out": True, "wall_seconds": time.monotonic() - start,
                    "tail": (out or "")[-1500:]}
        sink.write(out or "")
    return {"rc": proc.returncode, "timed_out": False, "wall_seconds": time.monotonic() - start,
            "tail": (out or "")[-1500:]}


def _train_cmd(workdir: pathlib.Path, smoke: bool, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "launch.train", "--config", "configs/default.py",
           "--workdir", str(workdir), "--config.progress=false"]
    return cmd + list(SMOKE_TRAIN if smoke else ()) + list(extra)


def _summary(workdir: pathlib.Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


# -- the parts ------------------------------------------------------------------------------
def environment(args, budget: Budget) -> dict[str, Any]:
    """``bench.environment`` in a child that runs on the benchmark's device."""
    result = _run([sys.executable, "-m", "bench.environment"], budget.timeout(120),
                  worker_env(args.device))
    if result["rc"] != 0:
        return {"error": result["tail"][-500:]}
    return json.loads(result["tail"].strip().splitlines()[-1])


def main_job(args, budget: Budget, work: pathlib.Path) -> dict[str, Any]:
    """The README's main job, uninterrupted; its checkpoint is the export's input."""
    workdir = work / "main"
    result = _run(_train_cmd(workdir, args.cpu_smoke), budget.timeout(300),
                  worker_env(args.device), args.out / "main_job.log")
    summary = _summary(workdir) or {}
    accuracy = summary.get("test_accuracy")
    shown = ["python", *_train_cmd(pathlib.Path("WORKDIR"), args.cpu_smoke)[1:]]
    return {"command": shlex.join(shown),
            "rc": result["rc"], "timed_out": result["timed_out"],
            "process_wall_seconds": result["wall_seconds"],
            "train_wall_seconds": summary.get("wall_seconds"),
            "train_images_per_second": summary.get("train_images_per_second"),
            "steps": summary.get("steps"), "test_accuracy": accuracy,
            "accuracy_target": None if args.cpu_smoke else ACCURACY_TARGET,
            "backend": summary.get("backend"), "params_digest": summary.get("params_digest"),
            "passed": result["rc"] == 0 and accuracy is not None
            and (args.cpu_smoke or accuracy >= ACCURACY_TARGET),
            **({} if result["rc"] == 0 else {"error": result["tail"][-800:]})}


def _killed_and_resumed(args, budget: Budget, workdir: pathlib.Path, kill_at: int,
                        flags: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    """Train, SIGKILL once checkpoint ``kill_at`` exists, rerun the same command to the end."""
    cmd = _train_cmd(workdir, args.cpu_smoke, flags)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    killed_after = None
    while budget.left() > 5 and proc.poll() is None:
        steps = _checkpoint_steps(workdir)
        if steps and steps[-1] >= kill_at:
            os.killpg(proc.pid, signal.SIGKILL)
            killed_after = steps[-1]
            break
        time.sleep(0.02)
    if proc.poll() is None and killed_after is None:  # out of budget
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if killed_after is None:
        return {"error": "the run finished (or the budget ran out) before it could be killed",
                "rc": proc.returncode}
    resumed = _run(cmd, budget.timeout(240), env)
    summary = _summary(workdir) or {}
    return {"killed_after_checkpoint": killed_after, "resume_rc": resumed["rc"],
            "steps": summary.get("steps"), "params_digest": summary.get("params_digest"),
            **({} if resumed["rc"] == 0 else {"error": resumed["tail"][-800:]})}


def durability(args, budget: Budget, work: pathlib.Path, reference: dict[str, Any]
               ) -> dict[str, Any]:
    """Killed-and-resumed vs uninterrupted, with the project's XLA defaults (on a GPU:
    deterministic kernels) and with XLA's own (``HYBRENET_DETERMINISTIC=0``), all at once."""
    env = worker_env(args.device)
    xla_env = {**env, DETERMINISM_OPT_OUT: "0"}
    total = reference.get("steps") or 16
    kill_at = max(1, total // 3)
    flags = ("--config.checkpoint_every_steps=1",) if args.cpu_smoke else ()
    out: dict[str, Any] = {"kill_after_checkpoint": kill_at}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        ours = pool.submit(_killed_and_resumed, args, budget, work / "killed", kill_at,
                           flags, env)
        xla_ref = pool.submit(_run, _train_cmd(work / "xla_ref", args.cpu_smoke, flags),
                              budget.timeout(300), xla_env)
        xla = pool.submit(_killed_and_resumed, args, budget, work / "xla_killed", kill_at,
                          flags, xla_env)
        out["project_defaults"] = ours.result()
        xla_ref.result()
        out["xla_defaults"] = xla.result()
    out["project_defaults"]["reference_digest"] = reference.get("params_digest")
    out["xla_defaults"]["reference_digest"] = (_summary(work / "xla_ref") or {}).get(
        "params_digest")
    for key in ("project_defaults", "xla_defaults"):
        part = out[key]
        part["digest_equal"] = (part.get("params_digest") is not None
                                and part.get("params_digest") == part["reference_digest"])
    out["passed"] = out["project_defaults"]["digest_equal"]
    return out


def export(args, budget: Budget, work: pathlib.Path) -> dict[str, Any]:
    """``hybrenet export --verify`` of the main job's checkpoint, on the same device."""
    path = work / "main.onnx"
    cmd = [sys.executable, "-m", "hybrenet_jax", "export", "--workdir", str(work / "main"),
           "--format", "onnx", "--out", str(path), "--verify"]
    result = _run(cmd, budget.timeout(180), worker_env(args.device))
    lines = [l.strip() for l in result["tail"].splitlines()
             if l.strip().startswith(("ok", "FAILED"))]
    return {"rc": result["rc"], "checks": lines, "passed": result["rc"] == 0,
            **({} if result["rc"] == 0 else {"error": result["tail"][-800:]})}


def population(args, budget: Budget) -> dict[str, Any]:
    """``bench.population`` in a child: K students with KD packed in one step vs the same K
    single-run steps one by one (GPU: HRN-2x5x3x variants, K = 1, 4, 8, 16, batch 128,
    bfloat16; about 2 minutes)."""
    if budget.left() <= 0:
        return {"skipped": "budget: no time left"}
    out = args.out / "population.json"
    if args.cpu_smoke:
        cmd = [sys.executable, "-m", "bench.population", "--cpu-smoke", "--out", str(out)]
    else:
        peak = (args.peaks or {}).get("bfloat16")
        cmd = [sys.executable, "-m", "bench.population", "--out", str(out), "--ks", "1", "4",
               "8", "16", "--batches", "128", "--dtypes", "bfloat16", "--rounds", "6",
               *(["--peak-tflops", str(peak)] if peak else [])]
    result = _run(cmd, budget.timeout(240), worker_env(args.device))
    if result["rc"] != 0:
        return {"rc": result["rc"], "error": result["tail"][-800:]}
    try:
        return {"rc": 0, **json.loads(out.read_text(encoding="utf-8"))}
    except (OSError, ValueError) as err:
        return {"rc": 0, "error": f"unreadable report {out}: {err}"}


def pipeline(args, budget: Budget) -> list[dict[str, Any]]:
    """The input pipeline alone, per batch size (bench.pipeline in a child)."""
    from bench.pipeline import measure_in_child

    images = 2_000 if args.cpu_smoke else args.pipeline_images
    return [measure_in_child(b, images, worker_env(args.device), budget.timeout(120))
            for b in args.batch]


# -- training steps -------------------------------------------------------------------------
@dataclasses.dataclass
class Group:
    """One network at one batch size: every dtype's implementations compile together."""

    network: str
    batch: int
    torch_compile: bool


class Scheduler:
    """Builds groups concurrently; times one group at a time with every builder paused."""

    def __init__(self, args, budget: Budget, report: Report, log: Callable[[str], None]):
        self.args = args
        self.budget = budget
        self.report = report
        self.log = log
        self.timing = threading.Lock()
        self.building: set[Worker] = set()
        self.building_lock = threading.Lock()
        self.estimate = {True: 60.0, False: 20.0}  # seconds a group takes, updated as measured

    def run_group(self, group: Group) -> None:
        args = self.args
        tag = f"[{group.network} b{group.batch}]"
        needed = self.estimate[group.torch_compile] * 1.2 + 10
        if self.budget.left() < needed:
            self._skip(group, f"budget: {self.budget.left():.0f} s left, ~{needed:.0f} s needed")
            return
        start = time.monotonic()
        impls = {d: implementations(args, group.network, group.batch, d, group.torch_compile
                                     and d in args.torch_compile_dtypes) for d in args.dtype}
        flat = [(f"{d}:{label}", config, env) for d, items in impls.items()
                for label, config, env in items]
        workers, ready = self._build(flat, tag)
        try:
            with self.timing:
                paused = self._pause_builders()
                try:
                    for dtype, items in impls.items():
                        own = {l: workers[f"{dtype}:{l}"] for l, _, _ in items
                               if f"{dtype}:{l}" in workers}
                        own_ready = {l: ready.get(f"{dtype}:{l}", {}) for l, _, _ in items}
                        times = interleave(own, own_ready, args.steps, args.rounds, group.batch,
                                           self.budget.timeout(120), self.log)
                        record = make_record(group.network, group.batch, dtype, args.device,
                                             items, own_ready, times,
                                             args.peaks.get(dtype), self._torch_reason(group))
                        record["compiled_concurrently_with"] = len(flat) - 1
                        self.report.add_step(record)
                finally:
                    for w in paused:
                        w.resume()
        finally:
            for worker in workers.values():
                worker.close()
        taken = time.monotonic() - start
        self.estimate[group.torch_compile] = max(self.estimate[group.torch_compile] * 0.5,
                                                 taken)

    def _build(self, flat, tag):
        tracked: list[Worker] = []

        def track(worker: Worker) -> None:  # building: a timing group pauses it
            with self.building_lock:
                self.building.add(worker)
            tracked.append(worker)

        try:
            return build_workers(flat, self.budget.timeout(self.args.build_timeout), self.log,
                                 tag, parallel=True, on_start=track)
        finally:
            with self.building_lock:
                self.building.difference_update(tracked)

    def _pause_builders(self) -> list[Worker]:
        with self.building_lock:
            paused = list(self.building)
        for worker in paused:
            worker.pause()
        return paused

    def _torch_reason(self, group: Group) -> str | None:
        if not self.args.torch:
            return "--no-torch"
        if not torch_available():
            return "torch not installed"
        return None if group.torch_compile else "torch.compile timed at batch " + \
            "/".join(map(str, self.args.torch_compile_batches)) + " only"

    def _skip(self, group: Group, reason: str) -> None:
        self.log(f"[{group.network} b{group.batch}] skipped: {reason}")
        for dtype in self.args.dtype:
            self.report.add_step({"network": group.network, "batch": group.batch,
                                  "dtype": dtype, "device": self.args.device,
                                  "skipped": reason})



def groups(args) -> list[Group]:
    """Step groups in order of importance: the goals' batch first, big networks first."""
    order = sorted(args.batch, key=lambda b: (b not in args.torch_compile_batches, -b))
    return [Group(n, b, args.torch and b in args.torch_compile_batches)
            for b in order for n in args.networks]


def steps(args, budget: Budget, report: Report, log: Callable[[str], None]) -> None:
    """Every group, ``--concurrency`` at a time; records land in the report as they finish."""
    scheduler = Scheduler(args, budget, report, log)
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        for future in [pool.submit(scheduler.run_group, g) for g in groups(args)]:
            try:
                future.result()
            except Exception as err:  # noqa: BLE001 -- one broken group must not end the run
                log(f"step group failed: {type(err).__name__}: {err}")


# -- verdicts -------------------------------------------------------------------------------
def goals(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's speed goals, each with the measured value and whether it was met."""
    rows = [r for r in data.get("steps", []) if not r.get("skipped")]
    out: list[dict[str, Any]] = []
    big = max((r["batch"] for r in rows), default=None)
    for r in rows:
        if r["batch"] != big:
            continue
        name = f"{r['network']} b{r['batch']} {r['dtype']}"
        if r["dtype"] == "bfloat16" and r.get("ratio_vs_torch_compile") is not None:
            out.append({"goal": f"{name}: ours >= 1.0x torch.compile",
                        "value": r["ratio_vs_torch_compile"], "met":
                        r["ratio_vs_torch_compile"] >= 1.0})
        if r.get("ratio_vs_torch_eager") is not None:
            out.append({"goal": f"{name}: ours >= 1.3x PyTorch eager",
                        "value": r["ratio_vs_torch_eager"],
                        "met": r["ratio_vs_torch_eager"] >= 1.3})
        if r["network"] == "wrn22x8" and r["dtype"] == "bfloat16" and r.get("ours_mfu"):
            out.append({"goal": f"{name}: MFU >= 40%", "value": r["ours_mfu"],
                        "met": r["ours_mfu"] >= 0.40})
    packed = {r["k"]: r for r in (data.get("population") or {}).get("rows", [])}
    if 1 in packed and 8 in packed:
        one = packed[1]["packed"]["member_images_per_second"]
        eight = packed[8]["packed"]["member_images_per_second"]
        out.append({"goal": "population: K=8 packed >= 3x the member-images/s of one run",
                    "value": eight / one, "met": eight >= 3 * one})
        mfu = packed[8]["packed"].get("mfu")
        if mfu is not None:
            out.append({"goal": "population: K=8 packed MFU >= 30%", "value": mfu,
                        "met": mfu >= 0.30})
    fastest = max((r.get("ours_images_per_second") or 0 for r in rows), default=0)
    for p in data.get("pipeline", []):
        feed = p.get("feed_images_per_second")
        demand = max((r.get("ours_images_per_second") or 0 for r in rows
                      if r["batch"] == p["batch"]), default=0)
        if feed and demand:
            out.append({"goal": f"input pipeline b{p['batch']} >= 2x the fastest step",
                        "value": feed / demand, "met": feed >= 2 * demand})
    if fastest and not data.get("pipeline"):
        out.append({"goal": "input pipeline measured", "value": None, "met": False})
    return out


def checks(data: dict[str, Any]) -> dict[str, bool | None]:
    """Correctness verdicts (None: that part did not run)."""
    steps_ok = [r.get("ours_images_per_second") is not None
                for r in data.get("steps", []) if not r.get("skipped")]
    return {"main_job": (data.get("main_job") or {}).get("passed"),
            "resume_bit_identical": (data.get("durability") or {}).get("passed"),
            "export_verify": (data.get("export") or {}).get("passed"),
            "population_equals_single_runs": _population_check(data.get("population")),
            "our_step_ran": all(steps_ok) if steps_ok else None}


def _population_check(part: dict[str, Any] | None) -> bool | None:
    """Packed members computed the single runs' first-step losses (None: not run)."""
    if not part or part.get("skipped"):
        return None
    rows = part.get("rows") or []
    return bool(rows) and all(r["max_first_loss_difference"] <= 1e-5 * max(
        1.0, max(abs(a) for a, _ in r["first_step_losses"])) for r in rows)


# -- markdown -------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def _gib(value: Any) -> str:
    return f"{value / 2**30:.1f}" if isinstance(value, (int, float)) else "–"


def render_markdown(data: dict[str, Any], level: int = 1) -> str:
    """The report as markdown tables (what docs/benchmarks.md shows); ``level``: the title's
    heading level, sections one below it."""
    text = _markdown(data)
    if level > 1:
        text = "\n".join("#" * (level - 1) + line if line.startswith("#") else line
                         for line in text.split("\n"))
    return text


#: markers of the generated accelerator section of docs/benchmarks.md
DOCS_BEGIN = "<!-- BEGIN ACCELERATOR (python -m bench.accelerator --render REPORT --docs PATH) -->"
DOCS_END = "<!-- END ACCELERATOR -->"


def docs_section(data: dict[str, Any], source: str) -> str:
    """The generated section of docs/benchmarks.md for one committed report."""
    return (f"{DOCS_BEGIN}\n\nRaw report: `{source}`.\n\n{render_markdown(data, level=3).strip()}"
            f"\n\n{DOCS_END}")


def write_docs(data: dict[str, Any], source: str, path: pathlib.Path) -> None:
    """Replace (or append) the generated accelerator section of ``path``."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = docs_section(data, source)
    if DOCS_BEGIN in text and DOCS_END in text:
        head, rest = text.split(DOCS_BEGIN, 1)
        text = head + section + rest.split(DOCS_END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    _atomic_write(path, text)


def _markdown(data: dict[str, Any]) -> str:
    lines = [f"# Accelerator acceptance run ({data.get('mode', '')})", "",
             f"Command: `{data.get('command', '')}`; started {data.get('started', '')}, "
             f"updated {data.get('updated', '')}.", ""]
    env = data.get("environment") or {}
    smi = env.get("nvidia_smi") or {}
    gpu = (smi.get("gpus") or [{}])[0]
    torch_facts = env.get("torch") or {}
    jax_facts = env.get("jax") or {}
    packages = env.get("packages") or {}
    lines += ["## Environment", "", "| | |", "|---|---|",
              f"| device | {gpu.get('name') or ', '.join(jax_facts.get('device_kinds', []))} "
              f"x {jax_facts.get('device_count', '–')} ({jax_facts.get('backend', '–')}) |",
              f"| driver / CUDA | {gpu.get('driver', '–')} / {smi.get('driver_cuda', '–')} "
              f"(torch CUDA {torch_facts.get('cuda', '–')}, cuDNN "
              f"{torch_facts.get('cudnn', '–')}) |",
              f"| host | {env.get('cpu', '–')}, {env.get('cores', '–')} cores, Python "
              f"{env.get('python', '–')} |",
              "| packages | " + ", ".join(f"{k} {v}" for k, v in packages.items() if v) + " |",
              f"| XLA_FLAGS | `{env.get('xla_flags', '') or '(none)'}` |", ""]
    verdicts = checks(data)
    lines += ["## Checks", "", "| check | passed |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in verdicts.items()]
    job = data.get("main_job")
    if job:
        lines += ["", "## Main job", "",
                  f"`{job.get('command')}`: test accuracy {_fmt(job.get('test_accuracy'), '.4f')}"
                  f" (target {_fmt(job.get('accuracy_target'), '.2f')}), "
                  f"{_fmt(job.get('steps'))} steps, "
                  f"{_fmt(job.get('train_images_per_second'))} images/s, training "
                  f"{_fmt(job.get('train_wall_seconds'), '.1f')} s, process "
                  f"{_fmt(job.get('process_wall_seconds'), '.1f')} s."]
    dur = data.get("durability")
    if dur:
        lines += ["", "## Killed and resumed", "", "| kernels | killed after checkpoint | "
                  "resumed digest = uninterrupted |", "|---|---|---|"]
        for key, name in (("project_defaults", "project defaults (GPU: deterministic)"),
                          ("xla_defaults", "XLA defaults (HYBRENET_DETERMINISTIC=0)"),
                          ("default_kernels", "XLA default kernels"),
                          ("deterministic_kernels", "--xla_gpu_deterministic_ops=true")):
            if key not in dur:  # the last two: reports written before 2026-11-27 03:30
                continue
            part = dur[key]
            lines.append(f"| {name} | "
                         f"{_fmt(part.get('killed_after_checkpoint'))} | "
                         f"{_fmt(part.get('digest_equal'))} |")
    exp = data.get("export")
    if exp:
        lines += ["", "## Export", "", "```text", *exp.get("checks", []),
                  *([exp["error"]] if exp.get("error") else []), "```"]
    steps_rows = data.get("steps") or []
    pop = data.get("population") or {}
    if pop.get("rows") or pop.get("error") or pop.get("skipped"):
        lines += ["", "## Population training (K students, KD, one step)", ""]
        if pop.get("rows"):
            lines += ["| members | batch | dtype | K | packed member-img/s | sequential "
                      "member-img/s | speedup | packed MFU | first-step loss diff |",
                      "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {r.get('family', '')} | {r['batch']} | {r['dtype']} | {r['k']} | "
                      f"{_fmt(r['packed']['member_images_per_second'])} | "
                      f"{_fmt(r['sequential']['member_images_per_second'])} | "
                      f"{_fmt(r['speedup'], '.2f')} | {_fmt(r['packed'].get('mfu'), '.1%')} | "
                      f"{_fmt(r['max_first_loss_difference'], '.1e')} |" for r in pop["rows"]]
        else:
            lines += [f"not measured: {pop.get('skipped') or pop.get('error', '')[:300]}"]
    if steps_rows:
        lines += ["", "## Training step (one device)", "",
                  "| network | batch | dtype | ours img/s | torch eager | torch.compile | "
                  "ours/eager | ours/compile | ours ms | compile s (ours/eager/compile) | "
                  "MFU ours/compile | peak GiB ours/torch |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
        for r in steps_rows:
            if r.get("skipped"):
                lines.append(f"| {r['network']} | {r['batch']} | {r['dtype']} | skipped: "
                             f"{r['skipped']} |||||||||")
                continue
            step_ms = r.get("ours_step_seconds_median")
            lines.append(
                f"| {r['network']} | {r['batch']} | {r['dtype']} "
                f"| {_fmt(r.get('ours_images_per_second'))} "
                f"| {_fmt(r.get('torch_eager_images_per_second'))} "
                f"| {_fmt(r.get('torch_compile_images_per_second'))} "
                f"| {_fmt(r.get('ratio_vs_torch_eager'), '.2f')} "
                f"| {_fmt(r.get('ratio_vs_torch_compile'), '.2f')} "
                f"| {_fmt(step_ms * 1e3 if step_ms else None, '.2f')} "
                f"| {_fmt(r.get('ours_compile_seconds'), '.1f')} / "
                f"{_fmt(r.get('torch_eager_compile_seconds'), '.1f')} / "
                f"{_fmt(r.get('torch_compile_compile_seconds'), '.1f')} "
                f"| {_fmt(r.get('ours_mfu'), '.1%')} / {_fmt(r.get('torch_compile_mfu'), '.1%')} "
                f"| {_gib(r.get('ours_peak_bytes'))} / "
                f"{_gib(r.get('torch_compile_peak_bytes') or r.get('torch_eager_peak_bytes'))} |")
        errors = [(r["network"], r["batch"], r["dtype"], k, v) for r in steps_rows
                  for k, v in r.items() if k.endswith("_error") and v and "only" not in str(v)]
        if errors:
            lines += ["", "Unavailable:", ""]
            lines += [f"- {n} b{b} {d} {k[:-6]}: {str(v)[:300]}" for n, b, d, k, v in errors]
    pipe = data.get("pipeline")
    if pipe:
        lines += ["", "## Input pipeline (this host)", "", "| batch | feed img/s | numpy "
                  "synthetic img/s | digits img/s |", "|---:|---:|---:|---:|"]
        for p in pipe:
            lines.append(f"| {p['batch']} | {_fmt(p.get('feed_images_per_second'))} | "
                         f"{_fmt(p.get('synthetic_images_per_second'))} | "
                         f"{_fmt(p.get('digits_images_per_second'))} |")
    met = goals(data)
    if met:
        lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---:|---|"]
        lines += [f"| {g['goal']} | {_fmt(g['value'], '.2f')} | {_fmt(g['met'])} |"
                  for g in met]
    return "\n".join(lines) + "\n"


# -- the run --------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.accelerator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path,
                        help="directory for accelerator.json/.md and the logs (required)")
    parser.add_argument("--render", metavar="REPORT",
                        help="render a saved accelerator.json instead of running (with --docs: "
                             "into that file's generated section)")
    parser.add_argument("--docs", type=pathlib.Path, metavar="PATH")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="stop starting new work after this many seconds (default 470; "
                             "--cpu-smoke 300)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny networks on the CPU, 2 timed steps, no torch needed")
    parser.add_argument("--networks", nargs="+", metavar="MODEL")
    parser.add_argument("--batch", type=int, nargs="+", help="default 512 128")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "bfloat16"))
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2)")
    parser.add_argument("--torch-compile-batches", type=int, nargs="*", default=None,
                        help="batches whose rows also time torch.compile (default: 512)")
    parser.add_argument("--torch-compile-dtypes", nargs="*", default=None,
                        choices=("float32", "bfloat16"),
                        help="dtypes that time torch.compile (default: both)")
    parser.add_argument("--torch", dest="torch", action="store_true", default=None,
                        help="time the PyTorch reference (default on, off in --cpu-smoke)")
    parser.add_argument("--no-torch", dest="torch", action="store_false")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="step groups compiling at once (default 3 on a GPU, 1 on CPU)")
    parser.add_argument("--pipeline-images", type=int, default=20_000)
    parser.add_argument("--build-timeout", type=float, default=400)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=("main_job", "durability", "export", "population", "pipeline",
                                 "steps"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.out is None and args.render is None:
        parser.error("--out DIR is required (or --render REPORT)")
    smoke = args.cpu_smoke
    args.device = "cpu" if smoke else "gpu"
    args.budget_s = args.budget_s or (300.0 if smoke else 470.0)
    args.networks = args.networks or list(SMOKE_NETWORKS if smoke else GPU_NETWORKS)
    args.batch = args.batch or ([8] if smoke else [512, 128])
    args.dtype = args.dtype or ["bfloat16", "float32"]
    args.steps = args.steps or (2 if smoke else 20)
    args.rounds = min(args.rounds or (1 if smoke else 4), args.steps)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 2)
    if args.torch_compile_batches is None:
        args.torch_compile_batches = [] if smoke else [512]
    if args.torch_compile_dtypes is None:
        args.torch_compile_dtypes = ["bfloat16", "float32"]
    args.concurrency = args.concurrency or (1 if smoke else 3)
    if args.torch is None:
        args.torch = not smoke
    # what bench.throughput's helpers read
    args.xla_flags = os.environ.get("XLA_FLAGS", "")
    args.fast_conv, args.plain_xla, args.variant = False, False, []
    args.torch_threads, args.torch_compile = None, True
    args.peaks = {}
    if min(args.steps, args.concurrency, *args.batch) < 1:
        parser.error("--steps, --concurrency and --batch must be >= 1")
    return args


def run(args) -> dict[str, Any]:
    """All parts in order; returns the report's data."""
    budget = Budget(time.monotonic() + args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    report = Report(args.out, {
        "mode": "cpu-smoke" if args.cpu_smoke else "accelerator",
        "command": "python -m bench.accelerator " + shlex.join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_seconds": args.budget_s,
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v)
                 for k, v in vars(args).items() if k not in ("quiet", "peaks")}})
    t0 = time.monotonic()
    log("environment ...")
    env = environment(args, budget)
    gpu_name = ((env.get("nvidia_smi") or {}).get("gpus") or [{}])[0].get("name")
    args.peaks = {} if args.cpu_smoke else peak_for(gpu_name)
    report.update(environment=env, peak_tflops=args.peaks or None)
    with tempfile.TemporaryDirectory(prefix="hybrenet-accelerator-") as tmp:
        work = pathlib.Path(tmp)
        if "main_job" not in args.skip:
            log("main job ...")
            report.update(main_job=main_job(args, budget, work))
            log(f"  {report.data['main_job'].get('test_accuracy')} test accuracy")
        job = report.data.get("main_job") or {}
        if "durability" not in args.skip and job.get("rc") == 0:
            log("killed and resumed ...")
            report.update(durability=durability(args, budget, work, job))
        if "export" not in args.skip and job.get("rc") == 0:
            log("export --verify ...")
            report.update(export=export(args, budget, work))
        if "population" not in args.skip:
            log("population training ...")
            report.update(population=population(args, budget))
        if "pipeline" not in args.skip:
            log("input pipeline ...")
            report.update(pipeline=pipeline(args, budget))
        if "steps" not in args.skip:
            steps(args, budget, report, log)
    report.update(checks=checks(report.data), goals=goals(report.data),
                  wall_seconds=time.monotonic() - t0, finished=True)
    return report.data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        try:
            data = json.loads(pathlib.Path(args.render).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            print(f"bench.accelerator: error: cannot read report {args.render}: {err}",
                  file=sys.stderr)
            return 2
        if args.docs:
            write_docs(data, args.render, args.docs)
        else:
            print(render_markdown(data))
        return 0
    data = run(args)
    print(render_markdown(data))
    failed = [k for k, v in data["checks"].items() if v is False]
    if failed:
        print(f"bench.accelerator: checks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
