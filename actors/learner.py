"""The learner group: N Ray actors forming one DeepSpeed job that applies GRPO updates to the policy.

Each rank holds the policy (LoRA adapters injected when configured), a DeepSpeed engine over the parameters
`rl.train_target` trains, and the reference policy of the KL term (a frozen copy, or the same model with its
adapters switched off). Rank 0 also exports weights for the rollout workers and the policy for evaluation.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np
import ray

from actors.weight_sync import CollectiveGroup, CollectiveSender, ObjectStoreSender, WeightsPayload
from rl.config import GRPOConfig, LearnerConfig, RolloutConfig, WeightSyncConfig
from rl.grpo.objective import (ObjectiveConfig, batch_normalisers, micro_batch_loss, micro_batch_prefix,
                               prefix_cache_applies)
from rl.records import TrainingSample

logger = logging.getLogger(__name__)


def check_zero_stage(stage: int) -> None:
    """The learner runs ZeRO stages 0-2. Stage 3 partitions parameters and gathers them only inside module
    forwards, while the policy reads some outside one (the expert's velocity field and waypoint embedding) and
    holds bf16 and fp32 parameters together, which stage 3 does not support; it is refused up front."""
    if stage not in (0, 1, 2):
        raise ValueError(f"learner.zero_stage={stage}: the GRPO learner supports ZeRO stages 0, 1 and 2 (stage 3 "
                         "partitions the weights that weight sync and export read); use learner.zero_stage=2")


class Learner:
    """One rank of the DeepSpeed learner job."""

    def __init__(self, rank: int, world_size: int, policy_dir: str, grpo: GRPOConfig, learner: LearnerConfig,
                 rollout: Optional[RolloutConfig] = None, weight_sync: Optional[WeightSyncConfig] = None,
                 seed: int = 0, num_threads: int = 1):
        """Built from the run's typed config sections (`rl.config`; their defaults are the only ones): `grpo` (the
        objective, optimiser and step structure), `learner` (ZeRO stage, precision, LoRA, reference), `rollout`
        (the sampling temperature the log-probs are taken under), `weight_sync` (bucket size)."""
        import torch

        from rl.policy import SpanVLAPolicy
        from rl.policy.lora import apply_lora

        rollout = rollout or RolloutConfig()
        weight_sync = weight_sync or WeightSyncConfig()
        torch.set_num_threads(num_threads)
        torch.manual_seed(seed + rank)
        self.rank, self.world_size = rank, world_size
        self.grpo, self.settings = grpo, learner
        self.objective = ObjectiveConfig(grpo.train_target, rollout.temperature, grpo.kl_beta, grpo.kl_estimator,
                                         grpo.clip_low, grpo.clip_high, flow_ratio=grpo.flow_ratio,
                                         cache_prefix=learner.cache_prefix)
        objective = self.objective
        self.micro_batch_size = grpo.micro_batch_size
        self.updates_per_step = grpo.updates_per_step
        device = "cuda" if torch.cuda.is_available() else "cpu"
        check_zero_stage(learner.zero_stage)
        # The precision contract (SpanVLAPolicy): the VLM in bf16 under learner.bf16, the expert in fp32; set
        # before the reference copy and the adapters so they share it (the rollout copies do the same).
        self.policy = SpanVLAPolicy.load(policy_dir, device=device).set_precision(learner.bf16)
        if rollout.pace_std > 0:
            self.policy.add_pace_head()  # before the reference copy: the reference drives every plan as it is
        target = objective.train_target
        lora, reference = asdict(learner.lora), learner.reference
        self.lora_enabled = bool(learner.lora.enabled)
        self._frozen_expert = None
        self.reference_policy = None
        if objective.kl_beta > 0 and (reference == "frozen_copy" or not self.lora_enabled):
            self.reference_policy = copy.deepcopy(self.policy).eval().requires_grad_(False)
        elif objective.kl_beta > 0 and target in ("expert", "joint"):
            self._frozen_expert = copy.deepcopy(self.policy.expert).eval().requires_grad_(False)
        for p in self.policy.parameters():
            p.requires_grad_(False)
        if target in ("vlm", "joint"):
            if self.lora_enabled:
                apply_lora(self.policy, lora)  # adapters are the only trainable VLM parameters
            else:
                for p in self.policy.parameter_groups()["language"]:
                    p.requires_grad_(True)
        elif self.lora_enabled:
            apply_lora(self.policy, lora)  # same structure as the rollout copies; adapters stay frozen
            for name, p in self.policy.named_parameters():
                if ".lora_" in name:
                    p.requires_grad_(False)
        if target in ("expert", "joint"):
            for p in self.policy.expert.parameters():
                p.requires_grad_(True)
        # Dropout off (eval mode) in the learner's log-prob forward too: it then equals the sampler's, so the
        # first update's ratio is exactly 1 (LoRA dropout is a no-op in GRPO; peft applies it in train mode).
        self.policy.eval()
        self.bucket_mb = weight_sync.bucket_mb
        self.engine = None
        self._rendezvous_sockets: dict = {}  # port -> listening socket handed out by `address`
        self._sender = ObjectStoreSender(self.bucket_mb)
        self.updates = 0

    def address(self) -> tuple[str, int]:
        """This node's address and a port listening on it alone (rank 0's become a rendezvous: the DeepSpeed
        group's, or the weight-sync group's). The socket is kept until the group that uses the port is made."""
        from rl.process_group import bind_rendezvous

        host = ray.util.get_node_ip_address()
        sock = bind_rendezvous(host)
        port = sock.getsockname()[1]
        self._rendezvous_sockets[port] = sock
        return host, port

    def init_engine(self, master_addr: str, master_port: int) -> int:
        """Join the DeepSpeed job (every rank at once: the rendezvous waits for all of them)."""
        from rl.deepspeed_engine import create_engine

        g, l = self.grpo, self.settings
        pace_head = self.policy.expert.pace_head
        self.engine = create_engine(
            self.policy, self.policy.parameters(), lr=g.lr, weight_decay=g.weight_decay,
            zero_stage=l.zero_stage, micro_batch_size=self.micro_batch_size,
            grad_clip=g.grad_clip, bf16=l.bf16, managed_accumulation=False,
            rank=self.rank, world_size=self.world_size, master_addr=master_addr, master_port=master_port,
            listen_socket=self._rendezvous_sockets.pop(master_port, None),
            own_lr=[(list(pace_head.parameters()), g.pace_lr)] if pace_head is not None else (),
        )
        return self.rank

    # --- reference ----------------------------------------------------------------------------------------
    @contextmanager
    def _reference(self):
        if self.reference_policy is not None:
            yield self.reference_policy
            return
        from rl.policy.lora import lora_disabled

        expert = self.policy.expert
        # peft's enable_adapters(True) marks every adapter trainable again; frozen adapters (train_target expert)
        # must stay frozen: they are left out of weight sync, and the cached prefix relies on them not moving.
        adapter_flags = [(p, p.requires_grad) for n, p in self.policy.named_parameters() if ".lora_" in n]
        if self._frozen_expert is not None:
            self.policy.expert = self._frozen_expert
        try:
            with lora_disabled(self.policy) as ref:
                yield ref
        finally:
            self.policy.expert = expert
            for p, flag in adapter_flags:
                p.requires_grad_(flag)

    # --- update -------------------------------------------------------------------------------------------
    def update(self, shard: list[TrainingSample], normalisers: dict[str, float]) -> dict[str, float]:
        """`updates_per_step` optimizer steps over this rank's shard (each over every micro-batch); the ratio to
        the sampling policy moves away from 1 after the first, and the clip bounds it. Returns the loss metrics
        averaged over every pass (e.g. the clip fraction is the share of sample steps clipped across the step's
        updates; the first pass of an on-policy step clips nothing)."""
        import torch

        start = time.perf_counter()
        micro = [shard[i : i + self.micro_batch_size] for i in range(0, len(shard), self.micro_batch_size)]
        # expert: the frozen VLM runs once per sample this step; its sparse K/V serve the policy's and the
        # reference's flow log-probs in every update, and are dropped when the step ends (nothing is shipped).
        prefixes = [None] * len(micro)
        cached = prefix_cache_applies(self.objective)
        if cached:
            from rl.policy.training import check_vlm_frozen

            check_vlm_frozen(self.policy)  # policy and reference then read the same VLM (LoRA adapters are zero)
            prefixes = [micro_batch_prefix(self.policy, chunk) for chunk in micro]
        prefix_s = time.perf_counter() - start
        prefix_mb = sum(p.nbytes for p in prefixes if p is not None) / 2**20
        sums: dict[str, float] = {}
        for _ in range(self.updates_per_step):
            for chunk, prefix in zip(micro, prefixes):
                loss, metrics = micro_batch_loss(self.policy, chunk, self.objective, normalisers, self.world_size,
                                                 self._reference, prefix=prefix)
                self.engine.backward(loss, scale_wrt_gas=False)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value * len(chunk)
            self.engine.step()
            self.updates += 1
        del prefixes
        grad_norm = self.engine.get_global_grad_norm()
        out = {f"train/{k}": v / max(len(shard) * self.updates_per_step, 1) for k, v in sums.items()}
        out["train/grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        out["train/micro_batches"] = float(len(micro))
        out["train/optimizer_steps"] = float(self.updates_per_step)
        out["train/prefix_cached"] = float(cached)
        out["train/prefix_cache_mb"] = prefix_mb
        out["timing/prefix_s"] = prefix_s if cached else 0.0
        out["timing/learner_rank_s"] = time.perf_counter() - start
        if torch.cuda.is_available():
            out["train/gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return out

    # --- weights ------------------------------------------------------------------------------------------
    def sync_tensors(self) -> dict:
        """The tensors rollout copies need: every parameter the learner trains (adapters, expert, LM). A
        partitioned (ZeRO-3) parameter is an error, never an empty tensor sent (see `check_zero_stage`)."""
        named = {name: p for name, p in self.policy.named_parameters() if p.requires_grad}
        for name, p in named.items():
            full = getattr(p, "ds_numel", p.numel())
            if full != p.numel() or p.numel() == 0:
                raise RuntimeError(f"weight sync: {name} holds {p.numel()} of its {full} elements on this rank "
                                   "(partitioned parameters; learner.zero_stage must be 0, 1 or 2)")
        return {name: p.detach() for name, p in named.items()}

    def setup_collective(self, backend: str, master_addr: str, master_port: int, world_size: int) -> bool:
        group = CollectiveGroup(backend, master_addr, master_port, 0, world_size,
                                listen=self._rendezvous_sockets.pop(master_port, None))
        self._sender = CollectiveSender(group, self.bucket_mb)
        return True

    def sync_manifest(self, version: int):
        """Where each synced tensor lies in the buckets (fixed for a run: names and shapes do not change)."""
        from actors.weight_sync import plan_buckets

        return plan_buckets(self.sync_tensors(), version, self._sender.bucket_bytes)

    def push_weights(self, version: int) -> WeightsPayload:
        """Pack the trainable tensors (object store: put them; collective: broadcast them) for `version`."""
        return self._sender.push(self.sync_tensors(), version)

    def perturb_for_test(self, scale: float) -> None:
        """Add a deterministic offset to every trainable tensor (tests of weight sync need weights that moved)."""
        import torch

        with torch.no_grad():
            for i, p in enumerate(t for t in self.policy.parameters() if t.requires_grad):
                p.add_(scale * (i + 1))

    def trainable_state(self) -> dict[str, np.ndarray]:
        """Copies of the trainable tensors (float32 numpy) - for tests comparing runs."""
        return {k: v.float().cpu().numpy().copy() for k, v in self.sync_tensors().items()}

    # --- checkpoints --------------------------------------------------------------------------------------
    def save(self, step_dir: str) -> None:
        """DeepSpeed state of every rank under step_dir/learner; rank 0 also writes step_dir/policy."""
        self.engine.save_checkpoint(os.path.join(step_dir, "learner"), tag="state",
                                    client_state={"updates": self.updates}, save_latest=False)
        if self.rank == 0:
            self.export_policy(os.path.join(step_dir, "policy"))

    def export_policy(self, path: str) -> None:
        from rl.policy.lora import has_lora, merged_policy

        policy = merged_policy(self.policy) if has_lora(self.policy) else self.policy
        policy.save(path)

    def load(self, step_dir: str) -> int:
        path = os.path.join(step_dir, "learner")
        if not Path(path, "state").is_dir():
            raise FileNotFoundError(f"{path}/state: no DeepSpeed learner state in this checkpoint")
        _, client = self.engine.load_checkpoint(path, tag="state")
        self.updates = int((client or {}).get("updates", 0))
        return self.updates


class LearnerGroup:
    """N learner ranks in one DeepSpeed job; `update` shards a batch over them and returns rank 0's metrics."""

    def __init__(self, make_learner, num_workers: int):
        """make_learner(rank, world_size) -> an actor handle (placed by the caller)."""
        self.actors = [make_learner(rank, num_workers) for rank in range(num_workers)]
        master_addr, master_port = ray.get(self.actors[0].address.remote())
        ray.get([a.init_engine.remote(master_addr, master_port) for a in self.actors])

    @property
    def rank0(self):
        return self.actors[0]

    def update(self, samples: list[TrainingSample]) -> dict[str, float]:
        """Spread samples round robin over the ranks (each gets at least one: padding has weight 0)."""
        n = len(self.actors)
        shards = [samples[r::n] for r in range(n)]
        for shard in shards:
            if not shard:
                pad = copy.copy(samples[0])
                pad.weight = 0.0
                shard.append(pad)
        normalisers = batch_normalisers(samples)
        try:
            results = ray.get([a.update.remote(s, normalisers) for a, s in zip(self.actors, shards)])
        except ray.exceptions.RayActorError as err:
            raise RuntimeError(
                "a learner rank died during the update; the job stops here. Resubmit it: with checkpoint.resume=auto "
                f"it continues from the latest checkpoint. ({err})"
            ) from err
        return results[0]

    def save(self, step_dir: str) -> None:
        ray.get([a.save.remote(step_dir) for a in self.actors])

    def load(self, step_dir: str) -> None:
        ray.get([a.load.remote(step_dir) for a in self.actors])

    def shutdown(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
