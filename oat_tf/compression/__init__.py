"""Compression of plain networks: the tf_keras rebuild TFMOT needs, sparsity and effective MACs.

`oat_tf.compress` (the command line) prunes with TFMOT in its own process;
nothing here imports TFMOT.
"""
