"""Free loopback ports and the TF_CONFIG of each worker."""

import json
import socket

import pytest

from oat_tf.training import loopback_cluster


def test_free_ports_are_distinct_and_bindable():
    ports = loopback_cluster.free_ports(3)
    assert len(set(ports)) == 3 and all(1024 <= p <= 65535 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_tf_config_names_the_cluster_and_the_task():
    config = json.loads(loopback_cluster.tf_config([2001, 2002], 1))
    assert config == {
        "cluster": {"worker": ["127.0.0.1:2001", "127.0.0.1:2002"]},
        "task": {"type": "worker", "index": 1},
    }


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_bad_port_counts_are_refused(count):
    with pytest.raises(ValueError, match="`count` must be a positive int"):
        loopback_cluster.free_ports(count)


@pytest.mark.parametrize("index", [-1, 2])
def test_worker_index_outside_the_cluster_is_refused(index):
    with pytest.raises(ValueError, match=r"`index` must be in \[0, 2\)"):
        loopback_cluster.tf_config([1, 2], index)
