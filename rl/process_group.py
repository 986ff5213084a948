"""torch.distributed rendezvous that listens on one address only, never on all interfaces.

torch's default `env://` rendezvous starts a TCPStore that listens on every interface of the machine, and gloo
picks its interface from the host name. A local run (the demo, the tests, SFT on a laptop) must stay on
loopback, and a cluster run should listen only on the node's own address. So rank 0 binds the store's socket
itself, to the rendezvous host, and hands it to torch (`master_listen_fd`); gloo's pairs are created on the same
host. Used by the DeepSpeed learner group, SFT, and the collective weight-sync group.

    listen = bind_rendezvous("127.0.0.1")        # rank 0, before telling the others the port
    port = listen.getsockname()[1]
    store = tcp_store("127.0.0.1", port, rank, world_size, listen=listen if rank == 0 else None)
"""
from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta
from typing import Optional

import torch.distributed as dist

DEFAULT_TIMEOUT = timedelta(minutes=30)


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_rendezvous(host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket on `host` (port 0: a free one): the store's server socket, bound before anyone
    connects, so the port cannot be taken in between and nothing listens beyond `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (prefer `bind_rendezvous`, which keeps it)."""
    with bind_rendezvous(host) as sock:
        return sock.getsockname()[1]


def tcp_store(host: str, port: int, rank: int, world_size: int, timeout: timedelta = DEFAULT_TIMEOUT,
              listen: Optional[socket.socket] = None) -> dist.TCPStore:
    """The rendezvous store: rank 0 serves it on `listen` (bound with `bind_rendezvous(host)`; host:port is bound
    here when None), the other ranks connect to host:port."""
    if rank == 0:
        if listen is None:
            listen = bind_rendezvous(host, port)
        port = listen.getsockname()[1]
        # detach: the store owns the descriptor from now on (the socket object would close it when collected)
        return dist.TCPStore(host, port, world_size, True, timeout, master_listen_fd=listen.detach())
    return dist.TCPStore(host, port, world_size, False, timeout)


def gloo_device(host: str):
    """A gloo device whose pairs listen on `host` (this process's own address on the rendezvous network)."""
    return dist.ProcessGroupGloo.create_device(hostname=host)


def use_loopback_for_gloo() -> None:
    """Point gloo's default device at the loopback interface (the default process group builds its device from
    GLOO_SOCKET_IFNAME, or else from the host name, which may resolve to a network address)."""
    if "GLOO_SOCKET_IFNAME" in os.environ:
        return
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and is_loopback(a.address) for a in addresses):
            os.environ["GLOO_SOCKET_IFNAME"] = name
            return


def init_default_group(backend: str, rank: int, world_size: int, host: str, port: int,
                       listen: Optional[socket.socket] = None, timeout: timedelta = DEFAULT_TIMEOUT) -> None:
    """Initialise torch.distributed's default group (DeepSpeed's) from a store that listens on `host` only."""
    if backend == "gloo" and is_loopback(host):
        use_loopback_for_gloo()
    store = tcp_store(host, port, rank, world_size, timeout, listen)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
