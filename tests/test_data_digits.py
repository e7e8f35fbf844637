"""The embedded digits dataset: shapes, split sizes, stratification, determinism, values."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from hybrenet_jax.data import DatasetError, load_dataset, normalization_for
from hybrenet_jax.data import digits
from hybrenet_jax.dataset_info import DATASETS

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def splits():
    return {s: load_dataset("digits", s) for s in ("train", "test")}


def test_shapes_classes_and_sizes(splits):
    info = DATASETS["digits"]
    assert len(splits["train"]) == digits.TRAIN_SIZE == 1438
    assert len(splits["test"]) == digits.TEST_SIZE == 359
    for s in splits.values():
        assert s.images.shape[1:] == (info.input_size, info.input_size, 3)
        assert s.images.dtype == np.uint8 and s.labels.dtype == np.int32
        assert s.num_classes == info.classes == 10
        assert set(np.unique(s.labels)) == set(range(10))
        assert s.name == "digits"


def test_eval_alias(splits):
    ev = load_dataset("digits", "eval")
    assert ev.split == "test"
    np.testing.assert_array_equal(ev.labels, splits["test"].labels)


def test_split_is_stratified_disjoint_and_complete():
    labels = load_digits().target
    idx = digits.split_indices(labels, digits.TEST_FRACTION, digits.SPLIT_SEED)
    assert np.intersect1d(idx["train"], idx["test"]).size == 0
    np.testing.assert_array_equal(np.sort(np.r_[idx["train"], idx["test"]]), np.arange(1797))
    per_class = np.bincount(labels)
    np.testing.assert_array_equal(
        np.bincount(labels[idx["test"]]), np.rint(0.2 * per_class).astype(int)
    )


def test_split_is_fixed():
    labels = load_digits().target
    a = digits.split_indices(labels, digits.TEST_FRACTION, digits.SPLIT_SEED)["test"]
    b = digits.split_indices(labels, digits.TEST_FRACTION, digits.SPLIT_SEED)["test"]
    np.testing.assert_array_equal(a, b)
    # Pinned so that a change of algorithm (or of numpy's generator) cannot pass unnoticed.
    np.testing.assert_array_equal(a[:8], [10, 27, 29, 30, 31, 38, 40, 51])
    assert int(a.sum()) == 322611


def test_images_are_the_sklearn_digits_upscaled_bilinearly(splits):
    raw = load_digits()
    idx = digits.split_indices(raw.target, digits.TEST_FRACTION, digits.SPLIT_SEED)["train"]
    small = raw.images[idx[:20]] / 16.0
    ref = np.asarray(jax.image.resize(jnp.asarray(small), (20, 32, 32), "bilinear")) * 255
    got = splits["train"].images[:20].astype(np.float64)
    assert np.abs(got[..., 0] - ref).max() <= 0.5 + 1e-4  # only uint8 rounding
    np.testing.assert_array_equal(got[..., 0], got[..., 1])
    np.testing.assert_array_equal(got[..., 0], got[..., 2])
    np.testing.assert_array_equal(splits["train"].labels[:20], raw.target[idx[:20]])


def test_value_range_and_normalization(splits):
    train = splits["train"].images
    assert train.min() == 0 and train.max() == 255
    norm = normalization_for("digits")
    x = norm.apply(train)
    assert x.dtype == np.float32
    x64 = x.astype(np.float64)  # float32 reductions over 1.5M values drift by ~1e-3
    np.testing.assert_allclose(x64.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(x64.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    np.testing.assert_allclose(norm.mean, 0.30595, atol=1e-4)
    np.testing.assert_allclose(norm.std, 0.32415, atol=1e-4)


def test_arrays_are_read_only(splits):
    with pytest.raises(ValueError):
        splits["train"].images[0, 0, 0, 0] = 1


def test_unknown_split_and_dataset():
    with pytest.raises(DatasetError, match="train, test"):
        load_dataset("digits", "validation")
    with pytest.raises(DatasetError, match="accepted: cifar100, cifar10, tinyimagenet, digits"):
        load_dataset("mnist", "train")


def test_digits_path_does_not_import_tensorflow():
    code = (
        "import sys, hybrenet_jax.data as d\n"
        "b = next(d.train_batches(d.load_dataset('digits', 'train'), 64, seed=0, epoch=0))\n"
        "assert b['image'].shape == (64, 32, 32, 3)\n"
        "tf = ('tensorflow', 'tensorflow_datasets')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in tf]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)


def test_registry_agrees_with_dataset_info():
    from hybrenet_jax.data import LOADABLE, eval_split

    assert set(LOADABLE) <= set(DATASETS)
    assert eval_split("digits") == "test" and eval_split("TinyImageNet") == "validation"
    for name in LOADABLE:
        norm = normalization_for(name)
        assert len(norm.mean) == len(norm.std) == 3
