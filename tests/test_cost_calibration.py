"""Calibration of the HE constants on the Delphi reference data (log-corrected timings)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from hybrenet_jax.cost import calibrate
from hybrenet_jax.cost.constants import CALIBRATION_PATH, load_calibration
from hybrenet_jax.cost.reference import file_digests, load_gc_benchmarks, load_layer_timings
from hybrenet_jax import reference_data

CIPHERTEXT_BYTES = 524_400  # one serialized SEAL ciphertext (reference README)


@pytest.fixture(scope="module")
def delphi_dir():
    return reference_data.delphi_dir()


@pytest.fixture(scope="module")
def layers(delphi_dir):
    return load_layer_timings(delphi_dir)


def _leaves(data, prefix=""):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}/{key}")
    else:
        yield prefix, data


def test_stored_constants_match_a_fresh_fit(delphi_dir):
    fresh = json.loads(json.dumps(calibrate.build_calibration(delphi_dir)))
    stored = json.loads(CALIBRATION_PATH.read_text())
    fresh_leaves, stored_leaves = dict(_leaves(fresh)), dict(_leaves(stored))
    assert fresh_leaves.keys() == stored_leaves.keys()
    for key, value in fresh_leaves.items():
        if isinstance(value, float):
            assert stored_leaves[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key
        else:
            assert stored_leaves[key] == value, key


def test_provenance_names_the_reference_files(delphi_dir):
    stored = json.loads(CALIBRATION_PATH.read_text())
    assert stored["provenance"]["reference_files_sha256"] == file_digests(delphi_dir)
    assert stored["provenance"]["timing_field"] == "he_eval_seconds_logs_corrected"


def test_ciphertext_counts_match_reference_bytes(layers):
    assert len(layers) == 132
    for layer in layers:
        ops = layer.ops()
        where = f"{layer.run} layer {layer.index}"
        assert round(layer.client_write_bytes / CIPHERTEXT_BYTES) == ops.input_ciphertexts, where
        assert round(layer.server_write_bytes / CIPHERTEXT_BYTES) == ops.output_ciphertexts, where


def test_fitted_ciphertext_size(layers):
    assert calibrate.fit_ciphertext_bytes(layers) == pytest.approx(CIPHERTEXT_BYTES, rel=1e-3)


def test_model_reproduces_reference_networks(layers):
    cal = load_calibration()
    runs = {}
    errors = []
    for layer in layers:
        predicted = cal.he_seconds(layer.ops())
        errors.append(abs(predicted - layer.seconds) / layer.seconds)
        measured_sum, predicted_sum = runs.get(layer.run, (0.0, 0.0))
        runs[layer.run] = (measured_sum + layer.seconds, predicted_sum + predicted)
    assert len(runs) == 6
    for run, (measured, predicted) in runs.items():
        assert abs(predicted - measured) / measured <= 0.03, run
    assert statistics.median(errors) <= 0.03


def test_leave_one_network_out(layers):
    report = calibrate.leave_one_out(layers, lambda l: l.network)
    assert sorted(report) == ["resnet18", "resnet32", "vgg16"]
    for held, result in report.items():
        assert result["median_abs_layer_error_percent"] <= 3.0, held
        for run, r in result["per_network"].items():
            assert run.startswith(held)
            assert abs(r["total_error_percent"]) <= 3.0, run


def test_per_mac_model_is_not_enough(layers):
    a, b = calibrate.fit_per_mac(layers)
    report = calibrate.error_report(
        layers, lambda l: a * calibrate.macs_at_input_resolution(l) + b)
    assert report["median_abs_layer_error_percent"] > 3.0


def test_nnls_keeps_coefficients_non_negative():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 10, size=(40, 3))
    y = x @ np.array([2.0, 0.5, 0.0]) - 0.3 * x[:, 2]  # best unconstrained third coef < 0
    coef = calibrate.nnls(x, y)
    assert np.all(coef >= 0)
    assert coef[2] == 0.0
    unconstrained, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert unconstrained[2] < 0


def test_gc_profiles_match_reference_fits(delphi_dir):
    gc = load_gc_benchmarks(delphi_dir)
    fitted = calibrate.fit_gc(gc)["devices"]
    ref = gc["linear_fit_per_relu"]
    for device, (_, garble, evaluate) in calibrate.DEVICE_BENCHMARKS.items():
        assert fitted[device]["garble_seconds_per_relu"] == pytest.approx(
            ref[garble]["slope_s_per_relu"], rel=1e-9)
        assert fitted[device]["evaluate_seconds_per_relu"] == pytest.approx(
            ref[evaluate]["slope_s_per_relu"], rel=1e-9)


def test_calibrate_check_mode(delphi_dir, capsys):
    assert calibrate.main(["--delphi-dir", str(delphi_dir), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_the_check_tolerates_the_last_digits_of_another_blas_not_a_changed_fit():
    a = {"he": {"layers": 0.009715906311537164, "n": 3, "name": "x"}, "l": [1.0, 2.0]}
    b = {"he": {"layers": 0.009715906311537162, "n": 3, "name": "x"}, "l": [1.0, 2.0]}
    assert calibrate.same_fit(a, b)
    assert not calibrate.same_fit(a, {**b, "he": {**b["he"], "layers": 0.0097159063}})
    assert not calibrate.same_fit(a, {**b, "he": {**b["he"], "name": "y"}})
    assert not calibrate.same_fit(a, {**b, "l": [1.0]})
