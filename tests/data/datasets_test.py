"""Tests of oat_tf.data.datasets: sources, splits, order, resume, augmentation."""

import os
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from oat_tf.config import DataConfig
from oat_tf.data import datasets
from tests import testing

_SHARED_MNIST = os.path.join(testing.SHARED_DATA_DIR, "mnist.npz")


# === Helpers ===


def _index_split(num_examples, height=8, width=8, channels=3, seed=0):
    """Random images; label i is the example's index, so order is observable."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_examples, height, width, channels), dtype=np.uint8)
    return datasets.ArraySplit(images=images, labels=np.arange(num_examples, dtype=np.int64))


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def _as_float(images):
    return images.astype(np.float32) / np.float32(255.0)


def _write_npz(path, **overrides):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, size=(12, 6, 5, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 4, size=(12,)).astype(np.int64),
        "x_test": rng.integers(0, 256, size=(7, 6, 5, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 4, size=(7,)).astype(np.int64),
    }
    arrays["y_train"][0] = 3  # num_classes is inferred as max label + 1.
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez_compressed(path, **arrays)
    return arrays


def _prepared():
    """Lets the mocked tfds builders pass the offline `is_prepared` check."""
    return mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True)


# === Sources ===


def test_npz_round_trip(tmp_path):
    path = str(tmp_path / "toy.npz")
    arrays = _write_npz(path)
    splits = datasets.load_splits(DataConfig(dataset=f"npz:{path}"), seed=3)

    assert splits.name == f"npz:{path}"
    assert splits.validation is None
    assert splits.augment is False
    assert splits.num_classes == 4
    assert splits.image_shape == (6, 5, 3)
    np.testing.assert_array_equal(splits.train.images, arrays["x_train"])
    np.testing.assert_array_equal(splits.train.labels, arrays["y_train"])
    assert splits.train.labels.dtype == np.int64
    np.testing.assert_array_equal(splits.test.images, arrays["x_test"])

    batches = _batches(datasets.eval_dataset(splits.test, batch_size=3))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(images, _as_float(arrays["x_test"]))  # exact.
    np.testing.assert_array_equal(labels, arrays["y_test"])


def test_npz_validation_is_the_end_of_train_and_truncation(tmp_path):
    path = str(tmp_path / "toy.npz")
    arrays = _write_npz(path)
    config = DataConfig(
        dataset=f"npz:{path}",
        validation_size=4,
        num_train_examples=5,
        num_eval_examples=2,
        augment=True,
    )
    splits = datasets.load_splits(config)
    np.testing.assert_array_equal(splits.validation.images, arrays["x_train"][8:10])
    np.testing.assert_array_equal(splits.train.images, arrays["x_train"][:5])
    np.testing.assert_array_equal(splits.test.labels, arrays["y_test"][:2])
    assert splits.augment is True


def test_shared_mnist_npz():
    if not os.path.isfile(_SHARED_MNIST):
        pytest.skip(f"{_SHARED_MNIST} is absent")
    splits = datasets.load_splits(DataConfig(dataset=f"npz:{_SHARED_MNIST}"))
    assert splits.train.images.shape == (60000, 28, 28, 1)
    assert splits.test.images.shape == (10000, 28, 28, 1)
    assert splits.train.images.dtype == np.uint8
    assert splits.num_classes == 10
    assert splits.image_shape == (28, 28, 1)
    assert splits.validation is None and splits.augment is False
    np.testing.assert_array_equal(np.unique(splits.test.labels), np.arange(10))


def test_embedded_split_is_fixed():
    first = datasets.load_splits(DataConfig(dataset="embedded"), seed=0)
    second = datasets.load_splits(DataConfig(dataset="embedded"), seed=123)
    assert first.train.images.shape == (4000, 28, 28, 1)
    assert first.test.images.shape == (1000, 28, 28, 1)
    assert first.validation is None and first.augment is False
    assert first.num_classes == 10
    for split in (first.train, first.test):
        assert split.labels.min() == 0 and split.labels.max() == 9
    # Shuffled once: not the file's order, and the same for any run seed.
    assert len(set(first.test.labels.tolist())) == 10
    np.testing.assert_array_equal(first.train.images, second.train.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)

    held_out = datasets.load_splits(DataConfig(dataset="embedded", validation_size=500))
    assert held_out.train.num_examples == 3500
    np.testing.assert_array_equal(held_out.validation.images, first.train.images[3500:])


def test_tfds_cifar10_mock():
    config = DataConfig(dataset="cifar10", validation_size=10, data_dir="/nonexistent")
    with _prepared(), tfds.testing.mock_data(num_examples=40):
        splits = datasets.load_splits(config)
        with pytest.raises(ValueError, match="Received: validation_size=5000"):
            # The default validation split of CIFAR-10 is 5,000 examples.
            datasets.load_splits(DataConfig(dataset="cifar10"))
    assert splits.train.num_examples == 30
    assert splits.validation.num_examples == 10
    assert splits.test.num_examples == 40
    assert splits.image_shape == (32, 32, 3)
    assert splits.num_classes == 10
    assert splits.augment is True
    assert splits.train.images.dtype == np.uint8
    np.testing.assert_array_equal(splits.validation.images, splits.test.images[30:40])


def test_tfds_stl10_and_svhn_defaults_mock():
    with _prepared(), tfds.testing.mock_data(num_examples=6):
        stl10 = datasets.load_splits(DataConfig(dataset="stl10"))
        svhn = datasets.load_splits(DataConfig(dataset="svhn_cropped", validation_size=2))
        with pytest.raises(ValueError, match="Received: validation_size=5000"):
            datasets.load_splits(DataConfig(dataset="svhn_cropped"))
    assert stl10.validation is None and stl10.augment is True
    assert stl10.image_shape == (96, 96, 3)
    assert svhn.augment is False and svhn.validation.num_examples == 2


def test_tfds_not_prepared_offline(tmp_path):
    config = DataConfig(dataset="mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError) as info:
        datasets.load_splits(config)
    message = str(info.value)
    for part in ("'mnist'", str(tmp_path), "--download", "npz:"):
        assert part in message


# === Pipelines ===


def test_steps_per_epoch():
    assert datasets.steps_per_epoch(10, 3) == 3
    assert datasets.steps_per_epoch(9, 3) == 3
    with pytest.raises(ValueError, match="Received: batch_size=11"):
        datasets.steps_per_epoch(10, 11)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        datasets.steps_per_epoch(10, 0)


@pytest.mark.parametrize("num_examples", [20, 22])
def test_train_epochs_are_permutations(num_examples):
    split = _index_split(num_examples)
    dataset = datasets.train_dataset(split, batch_size=4, seed=7, augment=False, epochs=3)
    assert dataset.element_spec[0].shape.as_list() == [4, 8, 8, 3]
    assert int(dataset.cardinality()) == 15
    batches = _batches(dataset)
    assert len(batches) == 15
    epochs = [np.concatenate([y for _, y in batches[e * 5 : (e + 1) * 5]]) for e in range(3)]
    for order in epochs:
        assert len(order) == 20 and len(set(order.tolist())) == 20
        assert set(order.tolist()) <= set(range(num_examples))
    if num_examples == 20:
        for order in epochs:
            assert sorted(order.tolist()) == list(range(20))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    # Without augmentation the images are the split's, exactly.
    for images, labels in batches:
        np.testing.assert_array_equal(images, _as_float(split.images[labels]))


def test_train_same_seed_same_batches():
    split = _index_split(10)
    kwargs = dict(batch_size=3, augment=True, epochs=2)
    first = _batches(datasets.train_dataset(split, seed=1, **kwargs))
    second = _batches(datasets.train_dataset(split, seed=1, **kwargs))
    other = _batches(datasets.train_dataset(split, seed=2, **kwargs))
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, other))


@pytest.mark.parametrize("augment", [True, False])
def test_resume_matches_uninterrupted_run(augment):
    split = _index_split(10)
    kwargs = dict(batch_size=3, seed=5, augment=augment, epochs=3)  # 3 steps/epoch.
    full = _batches(datasets.train_dataset(split, **kwargs))
    assert len(full) == 9
    # Mid-epoch 0, an epoch boundary, mid-epoch 1 past the boundary, the end.
    for start_step in (2, 3, 4, 8, 9):
        resumed = datasets.train_dataset(split, start_step=start_step, **kwargs)
        assert int(resumed.cardinality()) == 9 - start_step
        resumed = _batches(resumed)
        assert len(resumed) == 9 - start_step
        for (x1, y1), (x2, y2) in zip(full[start_step:], resumed):
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_array_equal(x1, x2)


def _pad_crop_flip_candidates(image, padding=4):
    """Every crop offset / flip of the zero-padded image."""
    height, width = image.shape[:2]
    padded = np.pad(image, [(padding, padding), (padding, padding), (0, 0)])
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            crop = padded[dy : dy + height, dx : dx + width]
            yield crop
            yield crop[:, ::-1]


def test_augmentation_is_pad_crop_flip():
    split = _index_split(12, height=6, width=6, channels=1)
    dataset = datasets.train_dataset(split, batch_size=4, seed=0, augment=True, epochs=2)
    assert dataset.element_spec[0].shape.as_list() == [4, 6, 6, 1]
    transforms = {}  # (epoch, example index) -> which crop/flip was applied.
    for step, (images, labels) in enumerate(_batches(dataset)):
        assert images.shape == (4, 6, 6, 1)
        assert images.min() >= 0.0 and images.max() <= 1.0
        for image, label in zip(images, labels):
            candidates = [_as_float(c) for c in _pad_crop_flip_candidates(split.images[label])]
            matches = [i for i, c in enumerate(candidates) if np.array_equal(image, c)]
            assert matches, "not a zero-padded crop (maybe flipped) of the original"
            transforms[(step // 3, int(label))] = matches[0]
    identity = 2 * (4 * 9 + 4)  # Offset (4, 4), not flipped.
    assert sum(t != identity for t in transforms.values()) > 12
    # Each example draws its own crop and flip, and draws again each epoch.
    assert len({transforms[(0, i)] for i in range(12)}) > 3
    assert sum(transforms[(0, i)] != transforms[(1, i)] for i in range(12)) > 3


def test_pad_crop_flip_matches_numpy():
    images = _index_split(6, height=5, width=7, channels=2).images
    offsets = np.array([[0, 0], [8, 8], [4, 4], [1, 7], [8, 0], [3, 2]], np.int32)
    flips = np.array([0, 1, 0, 1, 0, 1], np.int32)
    result = datasets.pad_crop_flip(images, offsets, flips).numpy()
    assert result.dtype == np.uint8
    for image, (dy, dx), flip, actual in zip(images, offsets, flips, result):
        padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
        expected = padded[dy : dy + 5, dx : dx + 7]
        np.testing.assert_array_equal(actual, expected[:, ::-1] if flip else expected)
    np.testing.assert_array_equal(result[2], images[2])  # Offset (4, 4): identity.

    offsets, flips = datasets.random_augmentation(500, np.array([1, 2], np.int64))
    assert set(np.unique(offsets.numpy()).tolist()) == set(range(9))
    assert set(np.unique(flips.numpy()).tolist()) == {0, 1}


def test_augmentation_depends_on_example_not_batch():
    split = _index_split(12)
    small = _batches(datasets.train_dataset(split, batch_size=2, seed=4, augment=True, epochs=1))
    large = _batches(datasets.train_dataset(split, batch_size=4, seed=4, augment=True, epochs=1))
    by_label = {int(y): x for images, labels in small for x, y in zip(images, labels)}
    for images, labels in large:
        for image, label in zip(images, labels):
            np.testing.assert_array_equal(image, by_label[int(label)])


def test_eval_dataset_in_order_with_remainder():
    split = _index_split(7)
    batches = _batches(datasets.eval_dataset(split, batch_size=3))
    assert [len(y) for _, y in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(7))
    np.testing.assert_array_equal(
        np.concatenate([x for x, _ in batches]), _as_float(split.images)
    )
    assert len(_batches(datasets.eval_dataset(split, batch_size=100))) == 1


# === Errors ===


def test_unknown_dataset():
    with pytest.raises(ValueError, match="Received: dataset='imagenet'"):
        datasets.load_splits(DataConfig(dataset="imagenet"))


def test_missing_npz(tmp_path):
    path = str(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="Received: dataset='npz:"):
        datasets.load_splits(DataConfig(dataset=f"npz:{path}"))


@pytest.mark.parametrize("content", ["garbage", "truncated", "npy"])
def test_corrupt_npz(tmp_path, content):
    path = str(tmp_path / "bad.npz")
    if content == "garbage":
        with open(path, "wb") as stream:
            stream.write(b"\x00not a numpy file at all" * 10)
    elif content == "truncated":
        _write_npz(path)
        with open(path, "rb") as stream:
            data = stream.read()
        with open(path, "wb") as stream:
            stream.write(data[: len(data) // 2])
    else:
        with open(path, "wb") as stream:
            np.save(stream, np.zeros(3))
    with pytest.raises(ValueError, match="valid compressed npz.*Received: dataset='npz:"):
        datasets.load_splits(DataConfig(dataset=f"npz:{path}"))


def test_npz_missing_array(tmp_path):
    path = str(tmp_path / "partial.npz")
    _write_npz(path, y_test=None)
    with pytest.raises(ValueError, match=r"\['y_test'\] are missing"):
        datasets.load_splits(DataConfig(dataset=f"npz:{path}"))


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"x_train": np.zeros((12, 6, 5, 3), np.float32)}, "`x_train`.*uint8"),
        ({"x_test": np.zeros((7, 6, 5), np.uint8)}, "`x_test`.*uint8"),
        ({"y_train": np.zeros((11,), np.int64)}, "`y_train`.*one per image"),
    ],
)
def test_npz_bad_arrays(tmp_path, overrides, pattern):
    path = str(tmp_path / "bad_arrays.npz")
    _write_npz(path, **overrides)
    with pytest.raises(ValueError, match=pattern):
        datasets.load_splits(DataConfig(dataset=f"npz:{path}"))


def test_array_split_validation():
    images = np.zeros((3, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match="`images`.*Received: images="):
        datasets.ArraySplit(images=images.astype(np.float32), labels=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="`labels`.*Received: labels="):
        datasets.ArraySplit(images=images, labels=np.zeros(2, np.int64))


def test_validation_size_too_large(tmp_path):
    path = str(tmp_path / "toy.npz")
    _write_npz(path)
    with pytest.raises(ValueError, match="Received: validation_size=12"):
        datasets.load_splits(DataConfig(dataset=f"npz:{path}", validation_size=12))


def test_train_dataset_argument_errors():
    split = _index_split(5)
    with pytest.raises(ValueError, match="Received: batch_size=6"):
        datasets.train_dataset(split, batch_size=6, seed=0, augment=False, epochs=1)
    with pytest.raises(ValueError, match="Received: start_step=11"):
        datasets.train_dataset(split, batch_size=2, seed=0, augment=False, epochs=5, start_step=11)
    with pytest.raises(ValueError, match="Received: epochs=0"):
        datasets.train_dataset(split, batch_size=2, seed=0, augment=False, epochs=0)


def test_random_bytes_are_reported_as_not_an_npz_archive(tmp_path):
    path = str(tmp_path / "random.npz")
    with open(path, "wb") as stream:
        stream.write(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a zip archive") as error:
        datasets.load_splits(DataConfig(dataset=f"npz:{path}"))
    assert "pickled" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"y_train": np.array([0, 1, 2, 3, -1, 0, 1, 2, 3, 0, 1, 2])}, r"`y_train`.*>= 0.*minimum -1 in .*labels\.npz"),
        ({"y_test": np.array([0, 1, 2, -4, 0, 1, 2])}, r"`y_test`.*minimum -4 in .*labels\.npz"),
        ({"x_train": np.zeros((0, 6, 5, 3), np.uint8), "y_train": np.zeros((0,), np.int64)}, r"`x_train`.*at least one image.*labels\.npz"),
        # 200 among 0–3 would otherwise build a 201-class model.
        ({"y_train": np.array([0, 1, 2, 3, 200, 0, 1, 2, 3, 0, 1, 2])}, r"0 … K-1.*maximum 200.*missing classes \[4, 5, 6"),
        ({"y_train": np.zeros(12, np.int64), "y_test": np.zeros(7, np.int64)}, r"0 … K-1.*at least 2"),
    ],
)
def test_npz_labels_are_checked_naming_file_and_array(tmp_path, overrides, pattern):
    path = str(tmp_path / "labels.npz")
    _write_npz(path, **overrides)
    with pytest.raises(ValueError, match=pattern):
        datasets.load_splits(DataConfig(dataset=f"npz:{path}", validation_size=0))
