"""oat_tf: once-for-all adversarial training in Keras 3 / TensorFlow.

Importing the package chooses TensorFlow's CPU kernels before TensorFlow loads
(oneDNN on x86-64 CPUs with AVX2; see `oat_tf.cpu_kernels`). Set
`TF_ENABLE_ONEDNN_OPTS=0` or `=1` in the environment to decide yourself.
"""

from oat_tf import cpu_kernels as _cpu_kernels

__version__ = "0.1.0"

_cpu_kernels.configure_on_import()
