"""`weight_sync.backend` resolved from the placement alone: NCCL only where every sync rank owns its GPUs, the
object store where ranks may share a GPU, and an error naming the keys for what cannot work."""
from __future__ import annotations

import pytest

from actors.weight_sync import may_share_gpu, resolve_backend

# (backend, learner.gpus_per_worker, rollout.gpus_per_worker, rollout.num_workers) -> (backend, transport)
TABLE = [
    ("auto", 0, 0, 1, ("object_store", None)),  # CPU only
    ("auto", 1, 0, 2, ("object_store", None)),  # GPU learner, CPU rollouts
    ("auto", 0, 1, 2, ("object_store", None)),
    ("auto", 1, 1, 1, ("collective", "nccl")),  # whole GPUs everywhere
    ("auto", 1, 1, 4, ("collective", "nccl")),
    ("auto", 2, 1, 4, ("collective", "nccl")),
    ("auto", 0.5, 0.5, 1, ("object_store", None)),  # learner and rollout on one GPU
    ("auto", 1, 0.5, 2, ("object_store", None)),  # two rollout workers on one GPU
    ("auto", 1, 0.5, 1, ("collective", "nccl")),  # one half-GPU rollout worker beside a whole-GPU learner
    ("auto", 0.6, 0.6, 1, ("collective", "nccl")),  # 0.6 + 0.6 > 1: never packed on one GPU
    ("auto", 0.25, 1, 3, ("collective", "nccl")),
    ("collective", 0, 0, 2, ("collective", "gloo")),
    ("collective", 1, 0, 1, ("collective", "gloo")),
    ("collective", 1, 1, 4, ("collective", "nccl")),
    ("object_store", 1, 1, 4, ("object_store", None)),
    ("object_store", 0.5, 0.5, 1, ("object_store", None)),
]


@pytest.mark.parametrize("backend, learner_gpus, rollout_gpus, workers, expected", TABLE)
def test_the_backend_follows_the_placement(backend, learner_gpus, rollout_gpus, workers, expected):
    assert resolve_backend(backend, learner_gpus, rollout_gpus, workers) == expected


def test_gpu_sharing_is_decided_by_fractions_and_worker_count():
    assert may_share_gpu(0.5, 0.5, 1) and may_share_gpu(1, 0.5, 2) and may_share_gpu(0.3, 0.7, 1)
    assert not may_share_gpu(1, 1, 8) and not may_share_gpu(1, 0.5, 1) and not may_share_gpu(0, 0.5, 1)


@pytest.mark.parametrize("args, message", [
    (("collective", 0.5, 0.5, 1), r"weight_sync.backend=collective with learner.gpus_per_worker=0.5, "
                                   r"rollout.gpus_per_worker=0.5 and rollout.num_workers=1: .*NCCL rejects"),
    (("collective", 1, 0.5, 2), r"rollout.num_workers=2: .*NCCL rejects"),
    (("auto", 1.5, 1, 1), r"learner.gpus_per_worker=1.5: expected 0, a fraction of one GPU, or a whole number"),
    (("auto", 1, -1, 1), r"rollout.gpus_per_worker=-1"),
    (("nccl", 1, 1, 1), r"weight_sync.backend must be one of"),
])
def test_combinations_that_cannot_work_are_errors_naming_the_keys(args, message):
    with pytest.raises(ValueError, match=message):
        resolve_backend(*args)


def test_the_launcher_refuses_such_a_placement_before_it_starts_anything(tmp_path, monkeypatch):
    import actors.launch as launch
    from rl.config import TrainConfig
    from rl.config_io import load_config

    started = []
    monkeypatch.setattr(launch, "connect", lambda *a, **k: started.append(a))
    cfg = load_config(TrainConfig, "configs/tiny.yaml", [
        "weight_sync.backend=collective", "learner.gpus_per_worker=0.5", "rollout.gpus_per_worker=0.5"])
    with pytest.raises(ValueError, match="weight_sync.backend=collective"):
        launch.ActorGroups.launch(cfg, tmp_path)
    assert started == []
