"""CIFAR through tfds (mocked, no download) and our TinyImageNet builder on a fake release."""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from hybrenet_jax.data import DatasetError, eval_batches, load_dataset, train_batches
from hybrenet_jax.data import tinyimagenet_files
from hybrenet_jax.dataset_info import DATASETS

tfds = pytest.importorskip("tensorflow_datasets")

WNIDS = ["n09999999", "n01443537", "n02124075"]  # unsorted on purpose: labels use sorted order
TRAIN_PER_CLASS = 3
VAL_WNIDS = ["n02124075", "n09999999", "n01443537", "n09999999", "n02124075"]


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch):
    """tfds leaves an empty ``mkdtemp("tfds")`` folder per unprepared builder; keep it here."""
    scratch = tmp_path / "system_tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


@pytest.mark.parametrize("name,classes", [("cifar100", 100), ("cifar10", 10)])
def test_cifar_through_mocked_tfds(name, classes, tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        train = load_dataset(name, "train", data_dir=str(tmp_path))
        test = load_dataset(name, "eval", data_dir=str(tmp_path))
    size = DATASETS[name].input_size
    assert train.images.shape == (40, size, size, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int32
    assert 0 <= train.labels.min() <= train.labels.max() < classes
    assert train.num_classes == classes and train.name == name
    assert test.split == "test" and len(test) == 40
    batch = next(train_batches(train, 16, seed=0, epoch=0))  # dataset's own constants
    assert batch["image"].shape == (16, size, size, 3) and batch["image"].dtype == np.float32
    assert abs(float(batch["image"].mean())) < 1.5


def test_cifar_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not prepared"):
        load_dataset("cifar100", "train", data_dir=str(tmp_path), download=False)


def write_release(root: pathlib.Path) -> dict[str, np.ndarray]:
    """Write a tiny fake ``tiny-imagenet-200`` folder; return the images PIL decodes from it."""
    rng = np.random.default_rng(0)
    decoded = {}

    def save(path: pathlib.Path, gray: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (64, 64) if gray else (64, 64, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path, "JPEG")
        decoded[path.relative_to(root).as_posix()] = np.asarray(Image.open(path).convert("RGB"))

    (root).mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for w in WNIDS:
        for i in range(TRAIN_PER_CLASS):
            save(root / "train" / w / "images" / f"{w}_{i}.JPEG", gray=(i == 0))
        (root / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
    lines = []
    for i, w in enumerate(VAL_WNIDS):
        save(root / "val" / "images" / f"val_{i}.JPEG", gray=(i == 1))
        lines.append(f"val_{i}.JPEG\t{w}\t1\t2\t30\t40")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return decoded


def zip_release(folder: pathlib.Path, target: pathlib.Path) -> None:
    with zipfile.ZipFile(target, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, pathlib.Path("tiny-imagenet-200") / p.relative_to(folder))


def load_tiny(split, tmp_path, manual):
    return load_dataset("tinyimagenet", split, data_dir=str(tmp_path / "tfds"),
                        manual_dir=str(manual))


@pytest.fixture
def release(tmp_path):
    manual = tmp_path / "manual"
    decoded = write_release(manual / "tiny-imagenet-200")
    return manual, decoded


def check_tinyimagenet(data_dir, manual, decoded):
    sorted_wnids = sorted(WNIDS)
    train = load_dataset("tinyimagenet", "train", data_dir=str(data_dir), manual_dir=str(manual))
    assert train.images.shape == (len(WNIDS) * TRAIN_PER_CLASS, 64, 64, 3)
    assert train.num_classes == DATASETS["tinyimagenet"].classes == 200
    # Stored order is path order: train/<wnid>/images/<wnid>_<i>.JPEG, wnids sorted.
    np.testing.assert_array_equal(train.labels, np.repeat(np.arange(3), TRAIN_PER_CLASS))
    for k, w in enumerate(sorted_wnids):
        for i in range(TRAIN_PER_CLASS):
            got = train.images[k * TRAIN_PER_CLASS + i]
            np.testing.assert_array_equal(got, decoded[f"train/{w}/images/{w}_{i}.JPEG"])
    val = load_dataset("tinyimagenet", "eval", data_dir=str(data_dir))  # prepared: no manual dir
    assert val.split == "validation"
    np.testing.assert_array_equal(val.labels, [sorted_wnids.index(w) for w in VAL_WNIDS])
    for i in range(len(VAL_WNIDS)):
        np.testing.assert_array_equal(val.images[i], decoded[f"val/images/val_{i}.JPEG"])
    mask = np.concatenate([b["mask"] for b in eval_batches(val, 4)])
    assert mask.sum() == len(VAL_WNIDS)


def test_tinyimagenet_from_folder(release, tmp_path):
    manual, decoded = release
    check_tinyimagenet(tmp_path / "tfds", manual, decoded)


def test_tinyimagenet_from_zip(release, tmp_path):
    manual, decoded = release
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    zip_release(manual / "tiny-imagenet-200", zipped / "tiny-imagenet-200.zip")
    check_tinyimagenet(tmp_path / "tfds", zipped, decoded)


def test_tinyimagenet_manual_dir_may_be_the_release_folder(release, tmp_path):
    manual, _ = release
    tree = tinyimagenet_files.open_release(manual / "tiny-imagenet-200")
    index = tinyimagenet_files.index_release(tree)
    assert len(index["train"]) == 9 and len(index["validation"]) == 5


def test_tinyimagenet_missing_manual_dir(tmp_path):
    with pytest.raises(DatasetError, match="needs manual_dir"):
        load_dataset("tinyimagenet", "train", data_dir=str(tmp_path / "tfds"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"tiny-imagenet-200\.zip or its extracted folder"):
        load_tiny("train", tmp_path, empty)
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset("tinyimagenet", "train", data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path / "absent"))


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: (r / "val" / "val_annotations.txt").unlink(), "missing val/val_annotations.txt"),
        (lambda r: shutil.rmtree(r / "train" / WNIDS[1]), f"no JPEGs in train/{WNIDS[1]}/images"),
        (lambda r: (r / "wnids.txt").write_text(""), "wnids.txt is empty"),
        (lambda r: (r / "val" / "images" / "val_3.JPEG").unlink(),
         "missing image val/images/val_3"),
        (lambda r: (r / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000000\n"),
         "line 1"),
        (lambda r: (r / "val" / "images" / "val_2.JPEG").write_bytes(b"not a jpeg"),
         "val_2.JPEG is not a readable image"),
    ],
)
def test_tinyimagenet_corrupt_release(release, tmp_path, damage, message):
    manual, _ = release
    damage(manual / "tiny-imagenet-200")
    with pytest.raises(DatasetError, match=message):
        load_tiny("train", tmp_path, manual)


def test_tinyimagenet_corrupt_zip(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "tiny-imagenet-200.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match="not a readable zip archive"):
        load_tiny("train", tmp_path, manual)


def test_tinyimagenet_wrong_split(release, tmp_path):
    manual, _ = release
    with pytest.raises(DatasetError, match="train, validation"):
        load_tiny("test", tmp_path, manual)


# -- no network (issue 16, case 7): fail fast, one line, nothing left behind ---------------
@pytest.fixture
def offline(monkeypatch):
    """Every proxy variable at 127.0.0.1:9 (the discard port: nothing listens, so connections
    are refused at once, deterministically, with no real network access)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")


def test_offline_download_into_an_existing_data_dir_changes_nothing(tmp_path, offline):
    data_dir = tmp_path / "tfds"
    (data_dir / "downloads").mkdir(parents=True)
    (data_dir / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError) as caught:
        load_dataset("cifar100", "train", data_dir=str(data_dir))
    message = str(caught.value)
    assert "\n" not in message and f"not prepared in data_dir {data_dir}" in message
    assert f"{data_dir / 'downloads' / 'manual'}" in message and "connection refused" in message
    assert sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")) == [
        "downloads", "keep.txt"]


def test_offline_failure_during_the_download_is_the_same_one_line_error(tmp_path, offline,
                                                                         monkeypatch):
    """When the probe passes but the download itself fails (the network went away), tfds's
    exception becomes the same error and its half-made folders are removed."""
    from tensorflow_datasets.core.download import downloader

    from hybrenet_jax.data import tfds_loader

    monkeypatch.setattr(tfds_loader, "_probe", lambda url: None)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)  # tfds's own retries: not under test
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    (data_dir / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="cannot be downloaded .*connection refused"):
        load_dataset("cifar10", "train", data_dir=str(data_dir))
    assert [p.name for p in data_dir.iterdir()] == ["keep.txt"]  # no downloads/, no cifar10/


def test_a_manual_download_is_used_without_probing_the_network(tmp_path, offline,
                                                               monkeypatch):
    """tfds takes a file in ``downloads/manual`` instead of fetching it: no probe, no network
    error (the stand-in file then fails tfds's own checks, which is not a download error)."""
    from hybrenet_jax.data import tfds_loader

    probed = []
    monkeypatch.setattr(tfds_loader, "_probe", lambda url: probed.append(url))
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "cifar-100-binary.tar.gz").write_bytes(b"stand-in")
    with pytest.raises(Exception) as caught:
        load_dataset("cifar100", "train", data_dir=str(tmp_path))
    assert probed == [] and "cannot be downloaded" not in str(caught.value)


def test_the_probe_fails_fast_on_a_refused_connection(offline):
    from hybrenet_jax.data import tfds_loader

    start = time.monotonic()
    assert tfds_loader._probe("https://example.invalid/x.tar.gz") == "connection refused"
    assert time.monotonic() - start < 5
