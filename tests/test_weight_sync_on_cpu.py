"""Weight sync between a real DeepSpeed learner and real rollout workers on a local Ray: bit-identical
weights and the policy version on arrival, for the object-store and the collective (gloo on CPU) backends."""
import numpy as np
import pytest
import ray

from actors.launch import ActorGroups
from rl.config import TrainConfig
from rl.config_io import load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.mark.parametrize("backend", ["object_store", "collective"])
def test_pushed_weights_arrive_bit_identical_with_their_version(ray_cluster, tiny_grpo_assets, tmp_path, backend):
    cfg = load_config(TrainConfig, "configs/tiny.yaml", [
        f"policy_init={tiny_grpo_assets['policy']}", f"weight_sync.backend={backend}", "rollout.num_workers=2",
        "grpo.train_target=joint", "rollout.pace_std=0", "weight_sync.bucket_mb=0.25",
    ])
    groups = ActorGroups.launch(cfg, tmp_path)
    try:
        learner = groups.learner.rank0
        # Move the learner's weights away from the rollout copies so the push has something to carry.
        state = ray.get(learner.trainable_state.remote())
        assert len(state) > 10
        ray.get(learner.perturb_for_test.remote(0.01))
        changed = ray.get(learner.trainable_state.remote())
        num_bytes = groups.push_weights(version=7)
        assert num_bytes == sum(v.nbytes for v in changed.values())
        for worker in groups.rollouts.handles:
            got = ray.get(worker.tensors.remote(list(changed)))
            for name, value in changed.items():
                assert np.array_equal(got[name].view(np.uint32), value.view(np.uint32)), name
            assert ray.get(worker.version.remote()) == 7
        assert any(not np.array_equal(state[n], changed[n]) for n in state)
    finally:
        groups.shutdown()


def test_placement_gives_up_after_its_timeout_and_names_the_missing_resource(ray_cluster):
    from actors.placement import ResourcesUnavailable, reserve

    with pytest.raises(ResourcesUnavailable, match=r"GPU: need 2, cluster total 0, free now 0 \[MISSING\]"):
        reserve("rollout", [{"CPU": 1, "GPU": 1}] * 2, timeout_s=2)
