"""oat_tf: once-for-all adversarial training in Keras 3 / TensorFlow."""

__version__ = "0.1.0"
