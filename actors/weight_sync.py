"""Weight synchronisation from the learner to the rollout workers, behind one interface.

The learner packs the weights the rollout copies need (by name) into byte buckets and pushes them with a
policy version; each rollout worker pulls them into its own model. Backends (a small registry):

- `object_store`: buckets are numpy uint8 arrays put in Ray's object store (zero-copy reads on each node);
  works everywhere; the CPU default.
- `collective`: a torch.distributed process group between learner rank 0 and the rollout workers (NCCL on
  GPUs, gloo on CPU) over which rank 0 broadcasts the buckets; the choice for GPU clusters. It is a separate
  group from the learner's own DeepSpeed group.

`auto` picks `collective` with NCCL when learner rank 0 and every rollout worker hold GPUs of their own,
`object_store` otherwise (no GPUs, or fractional GPUs that ranks may share: NCCL rejects two ranks on one
device); see `resolve_backend` for the table.
Weights travel as raw bytes, so any dtype (bf16 included) arrives bit-identical.

`WeightSyncManager` (at the end) is the one owner in a run: it pushes versions through the chosen transport and
re-syncs a rollout worker that replaced a dead one; the driver only calls `push(version)`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass
class TensorSpec:
    name: str
    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]
    bucket: int
    offset: int  # byte offset in the bucket
    nbytes: int


@dataclass
class WeightsManifest:
    """Where each named tensor lies in the byte buckets, and the policy version they carry."""

    version: int
    specs: list[TensorSpec]
    bucket_sizes: list[int]

    @property
    def num_bytes(self) -> int:
        return int(sum(self.bucket_sizes))


@dataclass
class WeightsPayload:
    """What travels from the learner to the workers: the manifest and, for the object store, bucket refs."""

    manifest: WeightsManifest
    bucket_refs: list = field(default_factory=list)  # ray.ObjectRef per bucket (object_store backend)


def plan_buckets(named: dict[str, torch.Tensor], version: int, bucket_bytes: int) -> WeightsManifest:
    """Assign tensors, in name order, to buckets of at most `bucket_bytes` (a larger tensor gets its own)."""
    specs, sizes = [], [0]
    for name in sorted(named):
        t = named[name]
        if t.numel() == 0:
            raise ValueError(f"weight sync: {name} is empty (shape {tuple(t.shape)}); a partitioned parameter "
                             "must be gathered before it is sent")
        nbytes = t.numel() * t.element_size()
        if sizes[-1] > 0 and sizes[-1] + nbytes > bucket_bytes:
            sizes.append(0)
        specs.append(TensorSpec(name, str(t.dtype).replace("torch.", ""), tuple(t.shape), len(sizes) - 1, sizes[-1], nbytes))
        sizes[-1] += nbytes
    return WeightsManifest(version=version, specs=specs, bucket_sizes=sizes)


def pack_buckets(named: dict[str, torch.Tensor], manifest: WeightsManifest) -> list[torch.Tensor]:
    """The tensors' bytes laid out per the manifest: one flat uint8 tensor per bucket (on the tensors' device)."""
    device = next(iter(named.values())).device if named else torch.device("cpu")
    buckets = [torch.empty(size, dtype=torch.uint8, device=device) for size in manifest.bucket_sizes]
    for spec in manifest.specs:
        flat = named[spec.name].detach().contiguous().reshape(-1).view(torch.uint8)
        if flat.numel() != spec.nbytes:
            raise ValueError(f"weight sync: {spec.name} has {flat.numel()} bytes, the manifest {spec.nbytes}")
        buckets[spec.bucket][spec.offset : spec.offset + spec.nbytes].copy_(flat)
    return buckets


def unpack_buckets(buckets: list, manifest: WeightsManifest) -> dict[str, torch.Tensor]:
    """Inverse of `pack_buckets`: name -> tensor views into the buckets (numpy or torch uint8)."""
    out = {}
    with warnings.catch_warnings():
        # Object-store buckets are read-only numpy views (zero-copy); they are only read, then copied.
        warnings.simplefilter("ignore", UserWarning)
        torch_buckets = [b if isinstance(b, torch.Tensor) else torch.from_numpy(np.asarray(b)) for b in buckets]
    for spec in manifest.specs:
        raw = torch_buckets[spec.bucket][spec.offset : spec.offset + spec.nbytes]
        out[spec.name] = raw.view(getattr(torch, spec.dtype)).reshape(spec.shape)
    return out


def load_into_module(module: torch.nn.Module, named: dict[str, torch.Tensor]) -> None:
    """Copy `named` tensors into the module's parameters/buffers of the same names; a name the module lacks
    or a shape mismatch is an error (the learner and the rollout copy must be the same architecture)."""
    own = dict(module.named_parameters())
    own.update(dict(module.named_buffers()))
    missing = [n for n in named if n not in own]
    if missing:
        raise KeyError(f"weight sync: the rollout model has no tensors named {missing[:5]} (of {len(missing)})")
    with torch.no_grad():
        for name, value in named.items():
            target = own[name]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"weight sync: {name} has shape {tuple(target.shape)} here, {tuple(value.shape)} sent")
            target.copy_(value.to(target.device, target.dtype))


# --- backends --------------------------------------------------------------------------------------------------


class ObjectStoreSender:
    """Learner side of the object-store backend."""

    name = "object_store"

    def __init__(self, bucket_mb: float = 64.0):
        self.bucket_bytes = int(bucket_mb * 2**20)

    def push(self, named: dict[str, torch.Tensor], version: int) -> WeightsPayload:
        import ray

        manifest = plan_buckets(named, version, self.bucket_bytes)
        buckets = pack_buckets(named, manifest)
        refs = [ray.put(b.cpu().numpy()) for b in buckets]
        return WeightsPayload(manifest=manifest, bucket_refs=refs)


class ObjectStoreReceiver:
    """Worker side of the object-store backend."""

    name = "object_store"

    def pull(self, payload: WeightsPayload) -> dict[str, torch.Tensor]:
        import ray

        buckets = ray.get(payload.bucket_refs)
        return unpack_buckets(buckets, payload.manifest)


class CollectiveGroup:
    """A torch.distributed process group of its own (not the default group), built from a TCP store.

    Rank 0 is the learner; ranks 1..M are rollout workers. backend: "nccl" (GPUs) or "gloo" (CPU).
    """

    def __init__(self, backend: str, master_addr: str, master_port: int, rank: int, world_size: int, timeout_s: float = 300.0,
                 listen=None):
        """Rank 0 serves the rendezvous on master_addr:master_port (on `listen`, the socket bound when the port was
        handed out, if given); nothing listens beyond the rendezvous network (rl/process_group.py)."""
        import ray
        import torch.distributed as dist

        from rl.process_group import gloo_device, is_loopback, tcp_store

        self.backend, self.rank, self.world_size = backend, rank, world_size
        timeout = timedelta(seconds=timeout_s)
        store = tcp_store(master_addr, master_port, rank, world_size, timeout, listen if rank == 0 else None)
        prefixed = dist.PrefixStore("weight_sync", store)
        if backend == "gloo":
            own_host = master_addr if rank == 0 or is_loopback(master_addr) else ray.util.get_node_ip_address()
            options = dist.ProcessGroupGloo._Options()
            options._timeout = timeout
            options._devices = [gloo_device(own_host)]
            self.group = dist.ProcessGroupGloo(prefixed, rank, world_size, options)
        elif backend == "nccl":
            self.group = dist.ProcessGroupNCCL(prefixed, rank, world_size)
        else:
            raise ValueError(f"collective weight sync backend must be 'nccl' or 'gloo', got {backend!r}")
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor, 0).wait()


class CollectiveSender:
    """Learner side of the collective backend: broadcasts each bucket from rank 0."""

    name = "collective"

    def __init__(self, group: CollectiveGroup, bucket_mb: float = 64.0):
        self.group = group
        self.bucket_bytes = int(bucket_mb * 2**20)

    def push(self, named: dict[str, torch.Tensor], version: int) -> WeightsPayload:
        on_device = {k: v.to(self.group.device) for k, v in named.items()}
        manifest = plan_buckets(on_device, version, self.bucket_bytes)
        for bucket in pack_buckets(on_device, manifest):
            self.group.broadcast(bucket)
        return WeightsPayload(manifest=manifest)


class CollectiveReceiver:
    """Worker side of the collective backend: receives the buckets the manifest announces."""

    name = "collective"

    def __init__(self, group: CollectiveGroup):
        self.group = group

    def pull(self, payload: WeightsPayload) -> dict[str, torch.Tensor]:
        buckets = []
        for size in payload.manifest.bucket_sizes:
            bucket = torch.empty(size, dtype=torch.uint8, device=self.group.device)
            self.group.broadcast(bucket)
            buckets.append(bucket)
        return unpack_buckets(buckets, payload.manifest)


SYNC_BACKENDS = ("auto", "object_store", "collective")


def may_share_gpu(learner_gpus: float, rollout_gpus: float, rollout_workers: int) -> bool:
    """Whether Ray may put two ranks of the sync group (learner rank 0 and the rollout workers) on one GPU:
    fractional requests are packed onto a GPU while they fit (e.g. learner 0.5 + rollout 0.5, or two rollout
    workers at 0.5); a whole-GPU request never shares."""
    learner_shares = 0 < learner_gpus < 1 and 0 < rollout_gpus < 1 and learner_gpus + rollout_gpus <= 1
    rollouts_share = 0 < rollout_gpus <= 0.5 and rollout_workers >= 2
    return learner_shares or rollouts_share


def resolve_backend(backend: str, learner_gpus: float, rollout_gpus: float,
                    rollout_workers: int = 1) -> tuple[str, Optional[str]]:
    """(backend, collective transport) for `weight_sync.backend` and the placement: GPUs per learner rank
    (`learner.gpus_per_worker`), per rollout worker (`rollout.gpus_per_worker`), `rollout.num_workers`.
    A pure function of those numbers:

    | placement                                   | auto                 | collective        |
    |---------------------------------------------|----------------------|-------------------|
    | no GPU on one side or both                  | object_store         | collective, gloo  |
    | GPUs on both, no two sync ranks on one GPU  | collective, nccl     | collective, nccl  |
    | GPUs on both, ranks may share a GPU (< 1)   | object_store         | error             |

    NCCL refuses two ranks on one device, so ranks that share a GPU exchange weights through the object store
    (host memory; CUDA IPC is not implemented). `object_store` is always accepted. Raises ValueError naming the
    keys for an unknown backend, a negative GPU count, a fraction above 1 (Ray takes whole GPUs there), or
    `collective` where ranks may share a GPU.
    """
    if backend not in SYNC_BACKENDS:
        raise ValueError(f"weight_sync.backend must be one of {SYNC_BACKENDS}, got {backend!r}")
    for key, value in (("learner.gpus_per_worker", learner_gpus), ("rollout.gpus_per_worker", rollout_gpus)):
        if value < 0 or (value > 1 and value != int(value)):
            raise ValueError(f"{key}={value:g}: expected 0, a fraction of one GPU, or a whole number of GPUs")
    if rollout_workers < 1:
        raise ValueError(f"rollout.num_workers={rollout_workers}: must be >= 1")
    if backend == "object_store":
        return "object_store", None
    gpus = learner_gpus > 0 and rollout_gpus > 0
    shared = gpus and may_share_gpu(learner_gpus, rollout_gpus, rollout_workers)
    if backend == "auto":
        return ("collective", "nccl") if gpus and not shared else ("object_store", None)
    if shared:
        raise ValueError(
            f"weight_sync.backend=collective with learner.gpus_per_worker={learner_gpus:g}, rollout.gpus_per_worker="
            f"{rollout_gpus:g} and rollout.num_workers={rollout_workers}: Ray may place two sync ranks on one GPU, "
            "which NCCL rejects; use weight_sync.backend=auto (the object store there) or whole GPUs per worker")
    return "collective", ("nccl" if gpus else "gloo")


class WeightSyncManager:
    """The one owner of weight synchronisation in a run: the transport, the policy version the rollout workers
    hold, and the re-sync of a rollout worker that replaced a dead one.

        learner rank 0                WeightSyncManager.push(version)                 rollout workers 1..M
        sync_tensors() ──► object_store: buckets put in Ray's object store ──► load_weights(payload) -> version
                           collective:   broadcast over NCCL / gloo         ──►   (every version checked)
        RolloutPool replaced a worker ──► resync(worker):
            object_store: the payload the other workers hold (the same version, even while a step is sampled ahead)
            collective:   re-form the group with the new worker, push the current version again (refused while
                          a step is sampled ahead: the learner's weights are newer than the step's version)

    learner_rank0: the learner's rank-0 actor handle; rollouts: the `actors.rollout.RolloutPool`;
    backend, transport: from `resolve_backend` ("object_store", None) or ("collective", "nccl" | "gloo").
    """

    def __init__(self, learner_rank0, rollouts, backend: str, transport: Optional[str]):
        if backend not in ("object_store", "collective"):
            raise ValueError(f"weight sync backend {backend!r}: resolve it with resolve_backend first")
        self.learner_rank0, self.rollouts = learner_rank0, rollouts
        self.backend, self.transport = backend, transport
        self.version = 0
        self._payload: Optional[WeightsPayload] = None  # the object store's latest payload (for replacements)
        self._ahead = 0  # > 0 while a step is sampled ahead of the learner
        rollouts.on_replace = self.resync
        if backend == "collective":
            self._form_group()

    def push(self, version: int) -> int:
        """Learner rank 0 -> every rollout worker at `version`; returns the bytes sent. Raises RuntimeError when a
        worker reports another version."""
        import ray

        self.version = version
        if self.backend == "object_store":
            payload = ray.get(self.learner_rank0.push_weights.remote(version))
            versions = self.rollouts.load_weights(payload)
            self._payload = payload
        else:
            # A broadcast needs every rank at once: the workers get the (fixed) manifest up front and receive
            # while rank 0 sends.
            manifest = ray.get(self.learner_rank0.sync_manifest.remote(version))
            sending = self.learner_rank0.push_weights.remote(version)
            versions = self.rollouts.load_weights(WeightsPayload(manifest))
            payload = ray.get(sending)
        if any(v != version for v in versions):
            raise RuntimeError(f"weight sync: workers report versions {versions}, expected {version}")
        return payload.manifest.num_bytes

    def resync(self, worker) -> None:
        """Bring a rollout worker that replaced a dead one to the version the others hold."""
        import ray

        if self.backend == "object_store":
            if self._payload is not None:
                ray.get(worker.load_weights.remote(self._payload))
            return
        if self._ahead:
            raise RuntimeError(
                "a rollout worker died while the next step was sampled ahead (grpo.max_staleness=1) with collective "
                "weight sync: re-forming the group would hand the replacement newer weights than the step's. "
                "Resubmit the job to resume from its checkpoint, or use weight_sync.backend=object_store or "
                "grpo.max_staleness=0")
        self._form_group()
        self.push(self.version)

    @contextmanager
    def sampling_ahead(self):
        """While a step is sampled with an older version than the learner's (asynchronous rollouts)."""
        self._ahead += 1
        try:
            yield
        finally:
            self._ahead -= 1

    def _form_group(self) -> None:
        """A process group between learner rank 0 (its node's address) and every rollout worker."""
        import ray

        address, port = ray.get(self.learner_rank0.address.remote())
        world = 1 + len(self.rollouts.handles)
        refs = [self.learner_rank0.setup_collective.remote(self.transport, address, port, world)]
        refs += [w.setup_collective.remote(self.transport, address, port, world) for w in self.rollouts.handles]
        ray.get(refs)
