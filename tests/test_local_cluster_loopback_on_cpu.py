"""A local run stays private: every port that the local Ray cluster and the project's process groups open
listens on loopback only (GCS, raylet, object manager, workers, dashboard agent, runtime-env agent, metrics, the
torch.distributed rendezvous and gloo's pairs)."""
from __future__ import annotations

import ipaddress
import os
import socket

import psutil
import pytest

from rl.process_group import bind_rendezvous, is_loopback, tcp_store

pytestmark = pytest.mark.ray


def _listening(pids: set[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of `pids`."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                continue
            out.append((name, conn.laddr.ip, conn.laddr.port))
    return out


def _tree() -> set[int]:
    """This process and every process it started (the local cluster's GCS and raylet, and through the raylet
    the workers and agents)."""
    me = psutil.Process(os.getpid())
    return {me.pid} | {p.pid for p in me.children(recursive=True)}


def _on_loopback(address: str) -> bool:
    address = address.split("%")[0]
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class _GroupMember:
    """A Ray actor that joins a gloo group the way the learner and the weight-sync group do."""

    def __init__(self):
        self.group = None
        self.sock = None

    def address(self):
        import ray

        host = ray.util.get_node_ip_address()
        self.sock = bind_rendezvous(host)
        return host, self.sock.getsockname()[1]

    def join(self, host: str, port: int, rank: int, world: int) -> int:
        from actors.weight_sync import CollectiveGroup

        self.group = CollectiveGroup("gloo", host, port, rank, world, timeout_s=60, listen=self.sock if rank == 0 else None)
        import torch

        t = torch.full((4,), float(rank))
        self.group.broadcast(t)  # the group works: everyone gets rank 0's values
        return int(t.sum())

    def default_group(self) -> bool:
        """DeepSpeed's default process group as the learner makes it (world size 1 here)."""
        import ray
        import torch
        import torch.distributed as dist

        from rl.process_group import init_default_group

        init_default_group("gloo", 0, 1, ray.util.get_node_ip_address(), 0)
        t = torch.ones(2)
        dist.all_reduce(t)
        return bool(t.sum() == 2)

    def pid(self) -> int:
        return os.getpid()


def test_local_cluster_and_process_groups_listen_on_loopback_only(ray_cluster):
    ray = ray_cluster
    import sys

    # the workers cannot import this test module: ship the actor class by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    node_ip = ray.util.get_node_ip_address()
    assert is_loopback(node_ip), f"the local cluster advertises {node_ip}, not a loopback address"

    member = ray.remote(num_cpus=0)(_GroupMember)
    a, b = member.remote(), member.remote()
    host, port = ray.get(a.address.remote())
    assert is_loopback(host)
    sums = ray.get([a.join.remote(host, port, 0, 2), b.join.remote(host, port, 1, 2)])
    assert sums == [0, 0]  # rank 1 received rank 0's zeros
    c = member.remote()
    assert ray.get(c.default_group.remote())

    actor_pids = set(ray.get([x.pid.remote() for x in (a, b, c)]))
    tree = _tree()
    assert actor_pids <= tree
    sockets = _listening(tree)
    names = {name for name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, names  # the scan sees the cluster's own servers
    assert len(_listening(actor_pids)) >= 3  # the store and gloo pairs of the groups above
    exposed = [s for s in sockets if not _on_loopback(s[1])]
    assert exposed == [], f"listening beyond loopback: {exposed}"
    for x in (a, b, c):
        ray.kill(x)


def test_rendezvous_store_serves_on_the_bound_socket_only():
    listen = bind_rendezvous("127.0.0.1")
    port = listen.getsockname()[1]
    store = tcp_store("127.0.0.1", port, 0, 1, listen=listen)
    store.set("key", "value")
    assert store.get("key") == b"value"
    mine = [s for s in _listening({os.getpid()}) if s[2] == port]
    assert [s[1] for s in mine] == ["127.0.0.1"]
    with pytest.raises(OSError):  # the port is held: nothing else can take it in between
        socket.create_server(("127.0.0.1", port))
