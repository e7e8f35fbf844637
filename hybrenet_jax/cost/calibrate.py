"""Fit the cost model's constants on the Delphi reference data and write ``calibration.json``.

Run ``python -m hybrenet_jax.cost.calibrate`` (options: ``--delphi-dir``, ``--out``,
``--check``). The fit, all with numpy:

* **server HE**: per-layer measured seconds (``he_eval_seconds_logs_corrected``) against the
  layer's Delphi operation counts (plaintext multiplies, key switches, additions, one per-layer
  overhead), non-negative least squares on relative error (each layer weighted by 1/time);
* **client HE**: encrypt seconds per ciphertext sent, decrypt seconds per ciphertext received;
* **ciphertext bytes**: bytes written per ciphertext (both directions, least squares);
* **GC**: per-ReLU slope of a degree-1 fit of the single-thread criterion means at 1/10/100
  ReLUs for each benchmark; bytes per ReLU from Delphi's end-to-end runs (median over runs).

The written JSON also holds the fit report (per-network and per-layer errors, leave-one-
network-out validation, and a per-MAC baseline for comparison).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pathlib
import statistics
import sys
from typing import Callable, Sequence

import numpy as np

from hybrenet_jax.cost.constants import CALIBRATION_PATH, HE_FEATURES
from hybrenet_jax.cost.packing import HeOps
from hybrenet_jax.cost.reference import (TIMING_KEY, ReferenceLayer, default_delphi_dir,
                                         file_digests, load_gc_benchmarks, load_layer_timings)

#: Which benchmark gives each device's garble / evaluate speed (gc_benchmarks.json names).
DEVICE_BENCHMARKS = {
    "epyc": ("server", "server_garble", "server_evaluate"),
    "atom": ("client", "client_garble", "client_evaluate"),
}


def nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares ``min ||x c - y||, c >= 0`` by trying every column subset.

    Exact for the handful of features used here: the optimum is the unconstrained solution on
    its own support, so the best non-negative subset solution is the NNLS solution.
    """
    n = x.shape[1]
    best, best_res = np.zeros(n), float(np.sum(y**2))
    for size in range(1, n + 1):
        for cols in itertools.combinations(range(n), size):
            coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if np.any(coef < 0):
                continue
            full = np.zeros(n)
            full[list(cols)] = coef
            res = float(np.sum((x @ full - y) ** 2))
            if res < best_res - 1e-15:
                best, best_res = full, res
    return best


def fit_relative(rows: np.ndarray, target: np.ndarray) -> np.ndarray:
    """NNLS fit minimising the squared *relative* errors (each row weighted by 1/target)."""
    weights = 1.0 / target
    return nnls(rows * weights[:, None], target * weights)


def he_features(ops: HeOps) -> list[float]:
    """The fitted operation counts of one layer, in :data:`HE_FEATURES` order."""
    return [float(getattr(ops, f)) for f in HE_FEATURES]


def fit_he(layers: Sequence[ReferenceLayer]) -> dict[str, float]:
    """Seconds per multiply / key switch / addition / layer, fitted on ``layers``."""
    x = np.array([he_features(l.ops()) for l in layers])
    y = np.array([l.seconds for l in layers])
    return dict(zip(HE_FEATURES, map(float, fit_relative(x, y))))


def macs_at_input_resolution(layer: ReferenceLayer) -> int:
    """MACs of a layer evaluated at its input resolution (what a per-MAC model would use)."""
    return layer.in_ch * layer.out_ch * layer.kernel**2 * layer.in_hw**2


def fit_per_mac(layers: Sequence[ReferenceLayer]) -> tuple[float, float]:
    """Baseline for comparison: seconds = a * MACs + b per layer."""
    x = np.array([[macs_at_input_resolution(l), 1.0] for l in layers], float)
    y = np.array([l.seconds for l in layers])
    a, b = fit_relative(x, y)
    return float(a), float(b)


def error_report(layers: Sequence[ReferenceLayer],
                 predict: Callable[[ReferenceLayer], float]) -> dict:
    """Per-run total errors and per-layer relative errors (percent) of ``predict``."""
    per_layer = [(predict(l) - l.seconds) / l.seconds * 100 for l in layers]
    runs: dict[str, list[float]] = {}
    for layer, err in zip(layers, per_layer):
        runs.setdefault(layer.run, []).append(err)
    per_run = {}
    for run in runs:
        members = [l for l in layers if l.run == run]
        measured = sum(l.seconds for l in members)
        predicted = sum(predict(l) for l in members)
        per_run[run] = {
            "measured_seconds": round(measured, 4),
            "predicted_seconds": round(predicted, 4),
            "total_error_percent": round((predicted - measured) / measured * 100, 3),
            "median_abs_layer_error_percent": round(
                statistics.median(abs(e) for e in runs[run]), 3),
            "max_abs_layer_error_percent": round(max(abs(e) for e in runs[run]), 3),
        }
    return {
        "per_network": per_run,
        "median_abs_layer_error_percent": round(statistics.median(map(abs, per_layer)), 3),
        "max_abs_layer_error_percent": round(max(map(abs, per_layer)), 3),
        "max_abs_total_error_percent": round(
            max(abs(r["total_error_percent"]) for r in per_run.values()), 3),
    }


def he_predictor(constants: dict[str, float]) -> Callable[[ReferenceLayer], float]:
    """Layer -> predicted seconds under fitted HE ``constants``."""
    coef = np.array([constants[f] for f in HE_FEATURES])
    return lambda layer: float(np.dot(coef, he_features(layer.ops())))


def leave_one_out(layers: Sequence[ReferenceLayer], group: Callable[[ReferenceLayer], str]
                  ) -> dict:
    """Refit without each group (e.g. a network) and report the held-out group's errors."""
    out = {}
    for held in sorted({group(l) for l in layers}):
        train = [l for l in layers if group(l) != held]
        test = [l for l in layers if group(l) == held]
        constants = fit_he(train)
        report = error_report(test, he_predictor(constants))
        out[held] = {
            "seconds_per": {k: float(v) for k, v in constants.items()},
            "per_network": report["per_network"],
            "median_abs_layer_error_percent": report["median_abs_layer_error_percent"],
        }
    return out


def fit_client(layers: Sequence[ReferenceLayer]) -> dict[str, float]:
    """Client encrypt seconds per sent ciphertext and decrypt seconds per received one."""
    ops = [l.ops() for l in layers]
    enc = fit_relative(np.array([[o.input_ciphertexts] for o in ops], float),
                       np.array([l.encrypt_seconds for l in layers]))
    dec = fit_relative(np.array([[o.output_ciphertexts] for o in ops], float),
                       np.array([l.decrypt_seconds for l in layers]))
    return {"encrypt_seconds_per_ciphertext": float(enc[0]),
            "decrypt_seconds_per_ciphertext": float(dec[0])}


def fit_ciphertext_bytes(layers: Sequence[ReferenceLayer]) -> float:
    """Bytes per serialized ciphertext: least squares over both directions of every layer."""
    counts, sizes = [], []
    for layer in layers:
        ops = layer.ops()
        counts += [ops.input_ciphertexts, ops.output_ciphertexts]
        sizes += [layer.client_write_bytes, layer.server_write_bytes]
    counts_a, sizes_a = np.array(counts, float), np.array(sizes, float)
    return float(counts_a @ sizes_a / (counts_a @ counts_a))


def per_relu_slope(points: Sequence[dict]) -> float:
    """Slope of a degree-1 fit of mean seconds against ReLU count (1, 10, 100 ReLUs)."""
    n = np.array([p["n_relus"] for p in points], float)
    t = np.array([p["mean_s"] for p in points], float)
    return float(np.polyfit(n, t, 1)[0])


def fit_gc(gc: dict) -> dict:
    """Device profiles (per-ReLU single-thread garble/evaluate seconds) and bytes per ReLU."""
    bench = gc["benchmarks"]
    devices = {}
    for name, (role, garble, evaluate) in DEVICE_BENCHMARKS.items():
        devices[name] = {
            "description": gc["devices"][role],
            "garble_seconds_per_relu": per_relu_slope(bench[garble]),
            "evaluate_seconds_per_relu": per_relu_slope(bench[evaluate]),
        }
    runs = gc["delphi_end_to_end_per_relu"].values()
    return {
        "devices": devices,
        "gc_bytes_per_relu": statistics.median(r["gc_bytes_per_relu"] for r in runs),
        "ot_bytes_per_relu": statistics.median(
            r["ot_ext_server_send_bytes_per_relu"] + r["ot_ext_client_setup_bytes_per_relu"]
            for r in runs),
        "online_label_bytes_per_relu": statistics.median(
            r["online_server_label_bytes_per_relu"] for r in runs),
    }


def build_calibration(delphi_dir: pathlib.Path | None = None) -> dict:
    """Fit every constant on the reference data; returns the ``calibration.json`` content."""
    layers = load_layer_timings(delphi_dir)
    he = fit_he(layers)
    mac_a, mac_b = fit_per_mac(layers)
    return {
        "provenance": {
            "command": "python -m hybrenet_jax.cost.calibrate",
            "reference_files_sha256": file_digests(delphi_dir),
            "timing_field": TIMING_KEY,
            "layers": len(layers),
        },
        "he": {
            "device": "epyc",
            "threads": 1,
            "seconds_per": he,
            "fit_report": error_report(layers, he_predictor(he)),
            "leave_one_network_out": leave_one_out(layers, lambda l: l.network),
            "leave_one_run_out": leave_one_out(layers, lambda l: l.run),
            "per_mac_baseline": {
                "seconds_per_mac": mac_a, "seconds_per_layer": mac_b,
                "fit_report": error_report(
                    layers, lambda l: mac_a * macs_at_input_resolution(l) + mac_b),
            },
        },
        "client_he": fit_client(layers),
        "ciphertext_bytes": fit_ciphertext_bytes(layers),
        "gc": fit_gc(load_gc_benchmarks(delphi_dir)),
    }


def summary(cal: dict) -> str:
    """Human-readable fit summary (what the script prints)."""
    he = cal["he"]
    lines = ["server HE seconds per: " + ", ".join(
        f"{k}={v:.6g}" for k, v in he["seconds_per"].items())]
    rep = he["fit_report"]
    lines.append(f"per-layer |error|: median {rep['median_abs_layer_error_percent']}%, "
                 f"max {rep['max_abs_layer_error_percent']}%")
    for run, r in rep["per_network"].items():
        lines.append(f"  {run:22s} measured {r['measured_seconds']:9.2f} s  predicted "
                     f"{r['predicted_seconds']:9.2f} s  total error "
                     f"{r['total_error_percent']:+.2f}%  median layer |error| "
                     f"{r['median_abs_layer_error_percent']:.2f}%")
    lines.append("leave-one-network-out (held-out network refitted without it):")
    for held, r in he["leave_one_network_out"].items():
        totals = ", ".join(f"{run} {v['total_error_percent']:+.2f}%"
                           for run, v in r["per_network"].items())
        lines.append(f"  {held:9s} {totals}; median layer |error| "
                     f"{r['median_abs_layer_error_percent']:.2f}%")
    base = he["per_mac_baseline"]["fit_report"]
    lines.append(f"per-MAC baseline: median layer |error| "
                 f"{base['median_abs_layer_error_percent']}%, max total error "
                 f"{base['max_abs_total_error_percent']}%")
    return "\n".join(lines)


#: Relative tolerance of ``--check``: a least-squares fit is reproducible to the last bits
#: only on the same BLAS kernels; another processor moves the 15th-16th digit.
CHECK_RTOL = 1e-9


def same_fit(a: object, b: object, rtol: float = CHECK_RTOL) -> bool:
    """Whether two calibrations are equal: same structure and text, numbers within ``rtol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_fit(a[k], b[k], rtol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_fit(x, y, rtol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=rtol, abs_tol=1e-300))
    return a == b


def main(argv: Sequence[str] | None = None) -> int:
    """Fit and write (or with ``--check``, compare against) ``calibration.json``."""
    parser = argparse.ArgumentParser(prog="python -m hybrenet_jax.cost.calibrate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--delphi-dir", type=pathlib.Path, default=default_delphi_dir(),
                        help="folder with delphi_layer_timings.json and gc_benchmarks.json")
    parser.add_argument("--out", type=pathlib.Path, default=CALIBRATION_PATH,
                        help=f"where to write the JSON (default: {CALIBRATION_PATH})")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if --out differs from a fresh fit")
    args = parser.parse_args(argv)
    cal = build_calibration(args.delphi_dir)
    text = json.dumps(cal, indent=1, sort_keys=True) + "\n"
    print(summary(cal))
    if args.check:
        same = args.out.is_file() and same_fit(json.loads(args.out.read_text()),
                                               json.loads(text))
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from a fresh fit'}")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
