"""Rollout workers: inference copies of the policy that sample whole groups, and the pool that feeds them.

All G samples of a scene go to one worker (one prefill, G samplings). Each group carries its own sampling
seed, derived from the run seed, the step and the group's index, so which worker samples it - or whether the
worker died and the group was re-sent to its replacement - does not change the result.
"""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import ray
from ray.exceptions import RayActorError

from actors.weight_sync import CollectiveGroup, CollectiveReceiver, ObjectStoreReceiver, WeightsPayload, load_into_module
from rl.config import LoRAConfig, RolloutConfig
from rl.policy.config import GROUP_REASONING
from rl.records import GroupRequest, GroupRollout  # noqa: F401  (the records this actor takes and returns)
from sim.scene import Scene

logger = logging.getLogger(__name__)


@dataclass
class FaultInjection:
    """Tests kill a worker mid-sampling: at `step`, the worker of `rank` exits once (a marker file remembers)."""

    step: int = -1
    rank: int = 0
    marker_dir: Optional[str] = None


class RolloutWorker:
    """Holds an inference copy of the policy (same structure as the learner's, LoRA included) and samples groups."""

    def __init__(self, rank: int, policy_dir: str, rollout: RolloutConfig, group_size: int,
                 lora: Optional[LoRAConfig] = None, fault: Optional[FaultInjection] = None, num_threads: int = 1,
                 bf16: bool = False):
        """Built from the run's typed sections: `rollout` (temperature, top_p, flow noise, action source),
        `group_size` (grpo.group_size), `lora` (learner.lora: the same adapters as the learner's). bf16: hold the
        VLM in bf16 as the learner does under `learner.bf16` (the expert stays fp32), so the recorded
        log-probabilities are the learner's. `rollout.group_reasoning` must be resolved (sampled | greedy):
        "auto" depends on the train target, which the launcher knows (`TrainConfig.group_reasoning`)."""
        import torch

        if rollout.group_reasoning not in GROUP_REASONING:
            raise ValueError(f"rollout.group_reasoning={rollout.group_reasoning!r}: a worker samples with one of "
                             f"{GROUP_REASONING} (resolve 'auto' with TrainConfig.group_reasoning())")

        from rl.policy import SpanVLAPolicy
        from rl.policy.lora import apply_lora

        torch.set_num_threads(num_threads)
        self.rank = rank
        self.rollout, self.group_size = rollout, group_size
        self.fault = fault or FaultInjection()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.policy = SpanVLAPolicy.load(policy_dir, device=device).set_precision(bf16)
        if rollout.pace_std > 0:
            self.policy.add_pace_head()  # the learner's, drawn from the same seed
        if lora is not None and lora.enabled:
            apply_lora(self.policy, asdict(lora))
        # After the adapters exist: their dropout modules are created in training mode, and a sample must come
        # from the same (dropout-free) distribution whose log-probabilities it records.
        self.policy.eval()
        self.policy_version = 0
        self._receiver = ObjectStoreReceiver()

    def ready(self) -> int:
        return self.rank

    def setup_collective(self, backend: str, master_addr: str, master_port: int, world_size: int) -> bool:
        """Join the weight-sync group as rank 1 + self.rank (the learner is rank 0)."""
        self._receiver = CollectiveReceiver(CollectiveGroup(backend, master_addr, master_port, 1 + self.rank, world_size))
        return True

    def load_weights(self, payload: WeightsPayload) -> int:
        """Pull the pushed weights into the model; returns the new policy version."""
        named = self._receiver.pull(payload)
        load_into_module(self.policy, named)
        self.policy_version = payload.manifest.version
        return self.policy_version

    def version(self) -> int:
        return self.policy_version

    def tensors(self, names: list[str]) -> dict[str, np.ndarray]:
        """Copies of named parameters (float32 numpy) - for checking weight sync."""
        params = dict(self.policy.named_parameters())
        return {n: params[n].detach().float().cpu().numpy().copy() for n in names}

    def sample(self, request: GroupRequest) -> GroupRollout:
        start = time.perf_counter()
        self._maybe_die(request.step)
        s = self.rollout
        group = self.policy.sample_group(
            request.scene, self.group_size, temperature=s.temperature, top_p=s.top_p, flow_noise=s.flow_noise,
            action_source=s.action_source, seed=request.seed, group_reasoning=s.group_reasoning,
            flow_start=s.flow_start, pace_std=s.pace_std,
        )
        return GroupRollout(request.step, request.group_id, request.scene.token, request.scene.sample_type,
                            self.policy_version, self.rank, group, time.perf_counter() - start)

    def plan(self, scenes: list[Scene], action_source: Optional[str] = None) -> object:
        """Deterministic plans (`rl.policy.PlanResult`) for evaluation."""
        return self.policy.plan(scenes, action_source=action_source or self.rollout.action_source)

    def _maybe_die(self, step: int) -> None:
        f = self.fault
        if f.step != step or f.rank != self.rank or f.marker_dir is None:
            return
        marker = Path(f.marker_dir) / f"killed_rollout_{self.rank}_step_{step}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("killed on purpose\n")
        logger.warning("fault injection: rollout worker %d exits at step %d", self.rank, step)
        os._exit(1)


@dataclass
class _WorkerSlot:
    rank: int
    handle: object
    in_flight: dict = field(default_factory=dict)  # ObjectRef -> GroupRequest


class RolloutPool:
    """M rollout workers. `sample` streams groups back as they finish; a worker that dies is replaced and its
    groups are re-sent (at most `max_retries` times per group).

    Weights and samples do not interleave: `load_weights` refuses to run while a `sample` stream is open (a
    load queued on a worker behind its sample calls would run between two groups of one step, and the step
    would mix policy versions). Callers, such as the driver's asynchronous mode, finish the stream first. The
    one exception is a replacement's own load inside the stream, which brings the new worker to the version
    every other worker holds."""

    def __init__(self, make_worker, num_workers: int, max_retries: int = 2, max_in_flight: int = 2):
        """make_worker(rank) -> an actor handle (placed by the caller)."""
        self._make_worker = make_worker
        self.slots = [_WorkerSlot(rank, make_worker(rank)) for rank in range(num_workers)]
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self.replacements = 0
        self._open_streams = 0  # `sample` generators not yet exhausted or closed
        self._replacing = False
        # on_replace(worker): brings a replacement to the version the others hold (`WeightSyncManager.resync`).
        self.on_replace = None
        ray.get([s.handle.ready.remote() for s in self.slots])

    @property
    def handles(self) -> list:
        return [s.handle for s in self.slots]

    def load_weights(self, payload: WeightsPayload) -> list[int]:
        """Load `payload` into every worker and wait; returns their versions. Raises RuntimeError while a `sample`
        stream is open (outside a replacement)."""
        if self._open_streams and not self._replacing:
            raise RuntimeError("weights pushed to the rollout workers while groups are being sampled: finish the "
                               "step's sampling first, or its groups would mix policy versions")
        return ray.get([s.handle.load_weights.remote(payload) for s in self.slots])

    def _replace(self, slot: _WorkerSlot) -> None:
        logger.warning("rollout worker %d died; starting a replacement", slot.rank)
        try:
            ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone
            pass
        slot.handle = self._make_worker(slot.rank)
        ray.get(slot.handle.ready.remote())
        self.replacements += 1
        self._replacing = True
        try:
            if self.on_replace is not None:
                self.on_replace(slot.handle)
            else:
                logger.warning("rollout worker %d was replaced with no weight sync attached: it holds the initial "
                               "weights", slot.rank)
        finally:
            self._replacing = False

    def sample(self, requests: list[GroupRequest]) -> Iterator[GroupRollout]:
        """Yield a `GroupRollout` per request, in completion order."""
        self._open_streams += 1
        try:
            yield from self._stream(requests)
        finally:
            self._open_streams -= 1

    def _stream(self, requests: list[GroupRequest]) -> Iterator[GroupRollout]:
        pending = deque(requests)
        retries = {r.group_id: 0 for r in requests}
        remaining = len(requests)
        while remaining:
            for slot in self.slots:  # keep every worker busy (round robin over free capacity)
                while pending and len(slot.in_flight) < self.max_in_flight:
                    request = pending.popleft()
                    slot.in_flight[slot.handle.sample.remote(request)] = request
            refs = [ref for slot in self.slots for ref in slot.in_flight]
            done, _ = ray.wait(refs, num_returns=1)
            ref = done[0]
            slot = next(s for s in self.slots if ref in s.in_flight)
            request = slot.in_flight.pop(ref)
            try:
                rollout = ray.get(ref)
            except RayActorError:
                lost = [request] + list(slot.in_flight.values())
                slot.in_flight.clear()
                for r in lost:
                    retries[r.group_id] += 1
                    if retries[r.group_id] > self.max_retries:
                        raise RuntimeError(
                            f"group {r.group_id} of step {r.step} (scene {r.scene.token}) failed on "
                            f"{self.max_retries + 1} rollout workers in a row"
                        ) from None
                self._replace(slot)
                pending.extendleft(reversed(lost))
                continue
            remaining -= 1
            yield rollout

    def plan(self, scenes: list[Scene], batch_size: int, action_source: Optional[str] = None) -> list:
        """Deterministic plans for evaluation, spread over the workers in batches; results in scene order."""
        batches = [scenes[i : i + batch_size] for i in range(0, len(scenes), batch_size)]
        refs = [self.slots[i % len(self.slots)].handle.plan.remote(b, action_source) for i, b in enumerate(batches)]
        return ray.get(refs)

    def shutdown(self) -> None:
        for slot in self.slots:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:
                pass


def group_seed(run_seed: int, step: int, group_id: int) -> int:
    """The sampling seed of one group: independent of the worker that samples it."""
    return int(np.random.SeedSequence([run_seed, step, group_id]).generate_state(1)[0])
