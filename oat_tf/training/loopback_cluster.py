"""A multi-worker cluster on one machine: free loopback ports and each worker's `TF_CONFIG`.

Two `python -m oat_tf.train --strategy=multi_worker` processes on 127.0.0.1
check a multi-worker set-up before it goes to several machines (the tests and
`benchmarks/multi_worker_loopback.py` do so):

```python
ports = loopback_cluster.free_ports(2)
env = dict(os.environ, TF_CONFIG=loopback_cluster.tf_config(ports, index=0))
```
"""

from __future__ import annotations

import json
import socket
from typing import List, Sequence


def free_ports(count: int) -> List[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (the OS picks them).

    The sockets are closed before returning, so another process could take a
    port in between; collisions are rare and show as a failure to start.

    Args:
        count: int, how many ports.

    Returns:
        list of int.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"`count` must be a positive int. Received: count={count!r}")
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    """The `TF_CONFIG` of worker `index` of a cluster of workers on 127.0.0.1.

    Args:
        ports: the workers' ports, worker 0 (the chief) first.
        index: int, this worker's index in `ports`.

    Returns:
        str, JSON: `{"cluster": {"worker": ["127.0.0.1:P0", ...]}, "task":
        {"type": "worker", "index": index}}`.
    """
    if not 0 <= index < len(ports):
        raise ValueError(f"`index` must be in [0, {len(ports)}). Received: index={index!r}")
    cluster = {"worker": [f"127.0.0.1:{int(port)}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": int(index)}})
