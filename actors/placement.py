"""Connecting to Ray and reserving resources for the actor groups, with errors that say what is missing."""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

logger = logging.getLogger(__name__)


class ResourcesUnavailable(RuntimeError):
    pass


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, runtime_env: Optional[dict] = None) -> None:
    """Join the cluster at `address` / RAY_ADDRESS (e.g. under `ray job submit`), or start a local one.

    A local cluster is kept on loopback. Idempotent: does nothing when Ray is already initialised.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        return
    start_local_cluster(num_cpus, runtime_env=runtime_env)


def start_local_cluster(num_cpus: Optional[int] = None, runtime_env: Optional[dict] = None,
                        log_to_driver: bool = True) -> None:
    """A new single-machine Ray whose every port (GCS, raylet, object manager, workers, dashboard agent, runtime
    env agent, metrics) listens on 127.0.0.1 only; no dashboard.

    Ray 2.60 replaces a loopback `_node_ip_address` with the machine's network address, unless its
    single-machine mode is on (the switch Ray names RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; Ray reads it when it is
    imported, hence the module attribute too). With the network address, its servers listen on that address or
    on all interfaces. A local cluster is single-machine by definition, so the switch is set for this process
    and the processes it starts; `connect(address)` to a real cluster never sets it.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    logger.info("starting a local Ray on 127.0.0.1 (num_cpus=%s)", num_cpus)
    # address="local": always a new cluster (a bare ray.init() would join any cluster this machine runs).
    ray.init(address="local", num_cpus=num_cpus, num_gpus=0 if _no_gpus() else None, _node_ip_address="127.0.0.1",
             include_dashboard=False, runtime_env=runtime_env, log_to_driver=log_to_driver)


def _no_gpus() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:
        return True


def describe_missing(bundles: list[dict]) -> str:
    """What the cluster lacks for `bundles`, compared with its totals and what is free now."""
    need: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            need[key] = need.get(key, 0.0) + value
    total, free = ray.cluster_resources(), ray.available_resources()
    lines = []
    for key, value in sorted(need.items()):
        have_total, have_free = total.get(key, 0.0), free.get(key, 0.0)
        flag = "MISSING" if have_total < value else ("busy" if have_free < value else "ok")
        lines.append(f"  {key}: need {value:g}, cluster total {have_total:g}, free now {have_free:g} [{flag}]")
    return "\n".join(lines)


def reserve(name: str, bundles: list[dict], timeout_s: float, strategy: str = "PACK") -> PlacementGroup:
    """A placement group for `bundles`, waiting at most `timeout_s`; then an error listing what is missing."""
    group = placement_group(bundles, strategy=strategy, name=name)
    start = time.monotonic()
    ready = group.ready()
    done, _ = ray.wait([ready], timeout=timeout_s)
    if not done:
        remove_placement_group(group)
        raise ResourcesUnavailable(
            f"could not place {name!r} within {timeout_s:.0f} s ({len(bundles)} bundles {bundles[0]} ...):\n"
            f"{describe_missing(bundles)}\n"
            "Lower the request in the config (e.g. rollout.num_workers, rollout.gpus_per_worker, "
            "learner.num_workers, scorer.num_workers) or add nodes."
        )
    logger.info("placed %s (%d bundles) in %.1f s", name, len(bundles), time.monotonic() - start)
    return group


def in_bundle(group: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    return PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
