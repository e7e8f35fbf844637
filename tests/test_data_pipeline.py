"""Input pipeline: determinism in (seed, epoch), process slicing, eval padding, augmentation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hybrenet_jax.data import (
    ArraySplit,
    AugmentParams,
    DatasetError,
    Normalization,
    crop_and_flip,
    eval_batches,
    num_eval_batches,
    prefetch,
    sample_params,
    steps_per_epoch,
    train_batches,
)
from hybrenet_jax.data.pipeline import train_stream
from hybrenet_jax.data.prefetch import default_workers, ordered_map

IDENTITY = Normalization(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))  # x -> x


def indexed(n: int = 100, size: int = 8) -> ArraySplit:
    """Images whose pixels are random, labels equal to the example index (to recover order)."""
    rng = np.random.default_rng(123)
    return ArraySplit(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        labels=np.arange(n, dtype=np.int32),
        num_classes=n,
        name="indexed",
        split="train",
    )


def collect(it):
    return [{k: v.copy() for k, v in b.items()} for b in it]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_same_seed_and_epoch_give_identical_batches():
    data = indexed()
    kw = dict(seed=7, epoch=3, normalization=IDENTITY)
    first = collect(train_batches(data, 16, **kw))
    assert_same_batches(first, collect(train_batches(data, 16, **kw)))


def test_different_epoch_or_seed_changes_order():
    data = indexed()
    order = lambda **kw: np.concatenate(  # noqa: E731
        [b["label"] for b in train_batches(data, 16, normalization=IDENTITY, **kw)]
    )
    e0, e1, s1 = order(seed=7, epoch=0), order(seed=7, epoch=1), order(seed=8, epoch=0)
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, s1)
    # Remainder dropped: 100 // 16 = 6 batches of distinct examples.
    assert e0.size == 96 == np.unique(e0).size


def test_epoch_covers_examples_and_drops_remainder():
    data = indexed(100)
    batches = collect(train_batches(data, 32, seed=0, epoch=0, normalization=IDENTITY))
    assert len(batches) == steps_per_epoch(100, 32) == 3
    assert all(b["image"].shape == (32, 8, 8, 3) for b in batches)
    assert all(b["image"].dtype == np.float32 for b in batches)
    assert all(b["label"].dtype == np.int32 for b in batches)
    with pytest.raises(DatasetError, match="exceeds"):
        next(train_batches(data, 128, seed=0, epoch=0, normalization=IDENTITY))


@pytest.mark.parametrize("processes", [2, 4])
def test_process_slices_concatenate_to_global_batch(processes):
    data = indexed()
    kw = dict(seed=5, epoch=2, normalization=IDENTITY)
    whole = collect(train_batches(data, 16, **kw))
    parts = [
        collect(train_batches(data, 16, process_index=p, process_count=processes, **kw))
        for p in range(processes)
    ]
    for i, batch in enumerate(whole):
        for k in batch:
            local = [part[i][k] for part in parts]
            assert all(x.shape[0] == 16 // processes for x in local)
            np.testing.assert_array_equal(np.concatenate(local), batch[k])


def test_resume_mid_epoch_sees_the_same_batches():
    data = indexed()
    kw = dict(seed=1, epoch=4, normalization=IDENTITY)
    full = collect(train_batches(data, 8, **kw))
    assert_same_batches(collect(train_batches(data, 8, start_batch=5, **kw)), full[5:])


def test_bad_process_arguments():
    data = indexed()
    with pytest.raises(DatasetError, match="multiple of the process count"):
        next(train_batches(data, 10, seed=0, epoch=0, process_count=4, normalization=IDENTITY))
    with pytest.raises(DatasetError, match="process_index"):
        next(eval_batches(data, 8, process_index=2, process_count=2, normalization=IDENTITY))


@pytest.mark.parametrize(
    "n,batch,processes", [(100, 16, 1), (100, 16, 4), (10, 16, 2), (32, 16, 2)]
)
def test_eval_visits_every_example_exactly_once(n, batch, processes):
    data = indexed(n)
    per_process = [
        collect(eval_batches(data, batch, process_index=p, process_count=processes,
                             normalization=IDENTITY))
        for p in range(processes)
    ]
    expected_batches = num_eval_batches(n, batch)
    assert expected_batches == -(-n // batch)
    assert all(len(b) == expected_batches for b in per_process)
    real, padding = [], 0
    for i in range(expected_batches):
        for p in range(processes):
            b = per_process[p][i]
            assert b["mask"].shape == (batch // processes,) and b["mask"].dtype == np.float32
            assert set(np.unique(b["mask"])) <= {0.0, 1.0}
            real.append(b["label"][b["mask"] == 1])
            padding += int((b["mask"] == 0).sum())
            # Eval images are the stored images, normalised, not augmented.
            keep = b["mask"] == 1
            np.testing.assert_array_equal(b["image"][keep], data.images[b["label"][keep]])
    np.testing.assert_array_equal(np.concatenate(real), np.arange(n))  # once, in order
    assert padding == expected_batches * batch - n


def test_normalization_is_exact():
    data = indexed(16)
    norm = Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    b = next(eval_batches(data, 16, normalization=norm))
    want = (data.images.astype(np.float64) / 255 - norm.mean) / norm.std
    np.testing.assert_allclose(b["image"], want, atol=1e-5)


def hand_image() -> np.ndarray:
    """A 1x6x5x2 image whose every value is distinct and non-zero."""
    return (np.arange(6 * 5 * 2).reshape(1, 6, 5, 2) + 1).astype(np.uint8)


def params(dy, dx, flip):
    return AugmentParams(np.array([dy]), np.array([dx]), np.array([flip]))


def test_crop_without_shift_and_flip_is_identity():
    img = hand_image()
    np.testing.assert_array_equal(crop_and_flip(img, params(2, 2, False), 2), img)
    np.testing.assert_array_equal(crop_and_flip(img, params(0, 0, False), 0), img)


def test_crop_offsets_shift_in_zero_padding():
    img = hand_image()
    out = crop_and_flip(img, params(0, 0, False), 2)[0]  # window starts 2 px above/left
    assert (out[:2] == 0).all() and (out[:, :2] == 0).all()
    np.testing.assert_array_equal(out[2:, 2:], img[0, :-2, :-2])
    out = crop_and_flip(img, params(4, 3, False), 2)[0]  # 2 px down, 1 px right
    np.testing.assert_array_equal(out[:-2, :-1], img[0, 2:, 1:])
    assert (out[-2:] == 0).all() and (out[:, -1:] == 0).all()


def test_flip_mirrors_columns_after_cropping():
    img = hand_image()
    np.testing.assert_array_equal(crop_and_flip(img, params(2, 2, True), 2)[0], img[0, :, ::-1])
    out = crop_and_flip(img, params(2, 3, True), 2)[0]
    np.testing.assert_array_equal(out, crop_and_flip(img, params(2, 3, False), 2)[0, :, ::-1])


def test_crop_and_flip_matches_naive_loop():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (64, 10, 10, 3), dtype=np.uint8)
    p = sample_params(rng, 64, 4, True)
    got = crop_and_flip(imgs, p, 4)
    for i in range(64):
        padded = np.pad(imgs[i], ((4, 4), (4, 4), (0, 0)))
        want = padded[p.dy[i]:p.dy[i] + 10, p.dx[i]:p.dx[i] + 10]
        np.testing.assert_array_equal(got[i], want[:, ::-1] if p.flip[i] else want)


def test_augmentation_draws_cover_offsets_and_flips():
    p = sample_params(np.random.default_rng(0), 20_000, 4, True)
    assert set(np.unique(p.dy)) == set(range(9)) == set(np.unique(p.dx))
    assert 0.47 < p.flip.mean() < 0.53
    assert not sample_params(np.random.default_rng(0), 100, 4, False).flip.any()


def test_train_batches_apply_documented_augmentation():
    data = indexed(64, size=8)
    seed, epoch = 3, 1
    batch = next(train_batches(data, 32, seed=seed, epoch=epoch, normalization=IDENTITY))
    p = sample_params(np.random.default_rng([seed, epoch, 1, 0]), 32, 4, True)
    want = crop_and_flip(data.images[batch["label"]], p, 4)
    np.testing.assert_array_equal(batch["image"], want.astype(np.float32))
    plain = next(train_batches(data, 32, seed=seed, epoch=epoch, normalization=IDENTITY,
                               augment=False))
    np.testing.assert_array_equal(plain["label"], batch["label"])
    np.testing.assert_array_equal(plain["image"], data.images[batch["label"]].astype(np.float32))


def test_prefetch_keeps_order_and_reraises():
    assert list(prefetch(iter(range(50)), size=3)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("source failed")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="source failed"):
        next(it)


def test_prefetch_stops_its_thread_when_closed():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    it = prefetch(endless(), size=2)
    assert [next(it) for _ in range(5)] == list(range(5))
    it.close()
    assert threading.active_count() == before
    assert len(produced) <= 5 + 2 + 1  # bounded read-ahead


def test_prefetch_with_train_batches_is_unchanged():
    data = indexed()
    kw = dict(seed=9, epoch=0, normalization=IDENTITY)
    assert_same_batches(collect(prefetch(train_batches(data, 16, **kw))),
                        collect(train_batches(data, 16, **kw)))


def test_unknown_dataset_needs_explicit_normalization():
    with pytest.raises(DatasetError, match="pass normalization"):
        next(train_batches(indexed(), 16, seed=0, epoch=0))


# -- parallel batch preparation --------------------------------------------------------------
def data_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("hybrenet-data",
                                                                    "hybrenet-prefetch"))]


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_give_the_batches_of_one_thread(workers):
    data = indexed(100)
    norm = Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for epoch in range(3):
        for kw in (dict(), dict(start_batch=4), dict(augment=False), dict(crop_padding=0),
                   dict(flip=False)):
            kw = dict(seed=11, epoch=epoch, normalization=norm, **kw)
            assert_same_batches(collect(train_batches(data, 16, workers=workers, **kw)),
                                collect(train_batches(data, 16, workers=1, **kw)))
        for p in range(2):
            kw = dict(seed=11, epoch=epoch, normalization=norm, process_index=p,
                      process_count=2)
            assert_same_batches(collect(train_batches(data, 16, workers=workers, **kw)),
                                collect(train_batches(data, 16, workers=1, **kw)))


def test_default_workers_give_the_same_batches():
    assert 1 <= default_workers() <= 8
    data = indexed()
    kw = dict(seed=2, epoch=1, normalization=IDENTITY)
    assert_same_batches(collect(train_batches(data, 16, **kw)),
                        collect(train_batches(data, 16, workers=1, **kw)))
    assert_same_batches(collect(train_batches(data, 16, workers=0, **kw)),
                        collect(train_batches(data, 16, workers=1, **kw)))


@pytest.mark.parametrize("workers", [1, 3])
def test_stream_across_epochs_is_the_epochs_batches(workers):
    data = indexed(100)  # 6 batches of 16 per epoch
    kw = dict(seed=4, normalization=IDENTITY)
    epochs = [b for e in range(4) for b in collect(train_batches(data, 16, epoch=e, **kw))]
    assert_same_batches(collect(train_stream(data, 16, stop_step=24, workers=workers, **kw)),
                        epochs)
    # Resume mid-epoch and stop mid-epoch, with process slicing.
    got = collect(train_stream(data, 16, start_step=5, stop_step=15, workers=workers,
                               process_index=1, process_count=2, **kw))
    want = [b for e in range(3) for b in collect(train_batches(
        data, 16, epoch=e, process_index=1, process_count=2, **kw))][5:15]
    assert_same_batches(got, want)
    endless = train_stream(data, 16, start_step=22, workers=workers, **kw)
    assert_same_batches([next(endless) for _ in range(4)][:2], epochs[22:24])
    endless.close()


class CountingNormalization(Normalization):
    """IDENTITY that records its calls and fails at call ``fail_at`` (if given)."""

    def __init__(self, calls: list, fail_at: int | None = None):
        super().__init__(mean=IDENTITY.mean, std=IDENTITY.std)
        object.__setattr__(self, "calls", calls)
        object.__setattr__(self, "fail_at", fail_at)

    def apply(self, images):
        self.calls.append(1)
        if len(self.calls) == self.fail_at:
            raise RuntimeError("worker failed")
        return super().apply(images)


@pytest.mark.parametrize("workers", [1, 3])
def test_error_in_a_worker_reaches_the_consumer_and_stops_the_threads(workers):
    before = data_threads()
    norm = CountingNormalization([], fail_at=3)
    it = prefetch(train_batches(indexed(), 16, seed=0, epoch=0, normalization=norm,
                                workers=workers))
    assert next(it)["image"].shape == (16, 8, 8, 3)
    with pytest.raises(RuntimeError, match="worker failed"):
        for _ in range(10):
            next(it)
    it.close()
    assert data_threads() == before


@pytest.mark.parametrize("wrapped", [False, True])
def test_closing_the_generator_stops_the_worker_threads(wrapped):
    made: list = []
    before = data_threads()
    it = train_stream(indexed(1000, size=4), 10, seed=0, normalization=CountingNormalization(made),
                      workers=4, ahead=6)  # endless
    if wrapped:  # as the training loop feeds the step
        it = prefetch(it, size=2)
    for _ in range(5):
        next(it)
    assert any(t.name.startswith("hybrenet-data") for t in threading.enumerate())
    it.close()
    assert data_threads() == before
    assert len(made) <= 5 + 6 + (2 + 1 if wrapped else 0)  # bounded read-ahead


def test_training_feed_is_the_same_for_every_worker_count():
    import jax

    from hybrenet_jax.config import base_config
    from hybrenet_jax.train.setup import make_mesh, train_feed

    data = indexed(100)
    mesh = make_mesh()
    config = base_config()
    config.batch_size = 8 * jax.device_count()
    feeds = {}
    for workers in (1, 3):
        config.data_workers = workers
        before = data_threads()
        feed = train_feed(data, config, mesh, 9, 31, normalization=IDENTITY)  # 3 epochs
        feeds[workers] = [jax.device_get(b) for b in feed]
        assert data_threads() == before
    assert len(feeds[1]) == 22
    assert_same_batches(feeds[3], feeds[1])
    spe = steps_per_epoch(100, config.batch_size)
    epochs = {e: collect(train_batches(data, config.batch_size, seed=0, epoch=e,
                                       normalization=IDENTITY)) for e in range(31 // spe + 1)}
    assert_same_batches(feeds[1], [epochs[s // spe][s % spe] for s in range(9, 31)])


def test_ordered_map_keeps_order_bounds_lookahead_and_reraises():
    import time

    def slow_first(i):
        time.sleep(0.002 * (i % 3 == 0))  # later items often finish first
        return i * i

    assert list(ordered_map(slow_first, range(40), workers=4)) == [i * i for i in range(40)]
    started = []
    it = ordered_map(lambda i: started.append(i) or i, range(1000), workers=2, ahead=3)
    assert [next(it) for _ in range(4)] == [0, 1, 2, 3]
    assert len(started) <= 4 + 3
    it.close()

    def broken(i):
        if i == 2:
            raise ValueError("item 2")
        return i

    it = ordered_map(broken, range(10), workers=3)
    assert next(it) == 0 and next(it) == 1
    with pytest.raises(ValueError, match="item 2"):
        next(it)
    with pytest.raises(ValueError, match="workers"):
        next(ordered_map(abs, range(3), workers=0))


def test_bad_worker_count():
    with pytest.raises(DatasetError, match="workers"):
        next(train_batches(indexed(), 16, seed=0, epoch=0, normalization=IDENTITY, workers=-1))


# -- the fast crop and normalisation equal their definitions ----------------------------------
def test_normalization_equals_the_broadcast_float32_formula():
    norm = Normalization(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
    std = np.asarray(norm.std, np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    shift = (np.asarray(norm.mean, np.float32) / std).astype(np.float32)
    every_value = np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 16, 16, 3)
    rng = np.random.default_rng(1)
    for x in (every_value, rng.integers(0, 256, (5, 7, 9, 3), dtype=np.uint8),
              every_value[:0], every_value[0, 0], every_value[:, ::2, ::-1]):
        want = x.astype(np.float32) * scale - shift  # two float32 roundings, as always
        got = norm.apply(x)
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,padding", [((16, 8, 8, 3), 4), ((9, 5, 7, 2), 2),
                                           ((4, 6, 6, 1), 0), ((8, 3, 4, 3), 5)])
def test_crop_and_flip_matches_padded_windows(shape, padding):
    rng = np.random.default_rng(sum(shape))
    imgs = rng.integers(0, 256, shape, dtype=np.uint8)
    for flips in (None, True, False):
        p = sample_params(rng, shape[0], padding, True)
        if flips is not None:
            p = AugmentParams(p.dy, p.dx, np.full(shape[0], flips))
        for x in (imgs, imgs.astype(np.float32)):
            got = crop_and_flip(x, p, padding)
            assert got.dtype == x.dtype and got.shape == x.shape
            for i in range(shape[0]):
                padded = np.pad(x[i], ((padding, padding), (padding, padding), (0, 0)))
                want = padded[p.dy[i]:p.dy[i] + shape[1], p.dx[i]:p.dx[i] + shape[2]]
                np.testing.assert_array_equal(got[i], want[:, ::-1] if p.flip[i] else want)
