"""tf.data pipelines of oat_tf: in-memory splits and deterministic batches."""

from oat_tf.data.datasets import ArraySplit
from oat_tf.data.datasets import DatasetSplits
from oat_tf.data.datasets import eval_dataset
from oat_tf.data.datasets import load_splits
from oat_tf.data.datasets import pad_crop_flip
from oat_tf.data.datasets import random_augmentation
from oat_tf.data.datasets import steps_per_epoch
from oat_tf.data.datasets import train_dataset
