"""The reward plug-in contract: loading three ways, weighted totals, failures as unscorable; shaping terms."""
import math
import textwrap
import time

import numpy as np
import pytest

from rewards.registry import CompositeReward, RewardError, RewardTerm, ScoringInput, register_reward, resolve_reward
from rewards.shaping import average_displacement, bounded_l2_shaping, reasoning_length_penalty
from sim.scene import Agent, EgoState, Lane, MapArea, MapData, Scene
from sim.conventions import AGENT_TIMES_S


def straight_scene(sample_type="pos", speed=10.0, lead_gap=None):
    road = np.array([[-50.0, -1.75], [200.0, -1.75], [200.0, 1.75], [-50.0, 1.75]])
    lane = Lane("lane0", "lane", road, baseline=np.array([[-50.0, 0.0], [200.0, 0.0]]), on_route=True)
    history = [EgoState(speed * t, 0.0, 0.0, speed) for t in (-1.5, -1.0, -0.5, 0.0)]
    future = np.stack([np.arange(1, 11) * 0.5 * speed, np.zeros(10), np.zeros(10)], -1)
    agents = []
    if lead_gap is not None:
        poses = np.stack([lead_gap + speed * AGENT_TIMES_S, np.zeros(14), np.zeros(14)], -1)
        agents.append(Agent("lead", "vehicle", 4.5, 2.0, 1.6, poses, np.tile([speed, 0.0], (14, 1))))
    scene = Scene(
        token=f"straight-{sample_type}",
        ego_history=history,
        driving_command=1,
        map=MapData([MapArea("rb0", "roadblock", road)], [lane], np.array([[-50.0, 0.0], [200.0, 0.0]]), 15.0),
        agents=agents,
        future=future,
        sample_type=sample_type,
    )
    if sample_type == "neg":
        scene.negative_trajectory = future * np.array([0.5, 1.0, 1.0])
    if sample_type == "rec":
        scene.recovery_trajectory = future.copy()
    return scene.validate()


def item(scene, plan, **kw):
    return ScoringInput(scene=scene, trajectory=np.asarray(plan, dtype=np.float64), **kw)


def test_bounded_l2_shaping_at_inside_and_beyond_the_threshold():
    ref = np.zeros((8, 3))
    assert bounded_l2_shaping(ref, ref, 1.7) == 1.0
    inside = ref + np.array([0.85, 0.0, 0.0])
    assert bounded_l2_shaping(inside, ref, 1.7) == pytest.approx(0.5)
    assert bounded_l2_shaping(ref + np.array([1.7, 0.0, 0.0]), ref, 1.7) == 0.0
    assert bounded_l2_shaping(ref + np.array([0.0, 5.0, 0.0]), ref, 1.7) == 0.0
    assert average_displacement(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]])) == 5.0


def test_reasoning_length_penalty_is_autovla_sigmoid():
    assert reasoning_length_penalty(400) == pytest.approx(0.15)
    assert reasoning_length_penalty(0) == pytest.approx(0.3 / (1 + math.exp(0.8)))
    assert reasoning_length_penalty(10_000) == pytest.approx(0.3, abs=1e-6)


def test_negative_shaping_only_applies_to_negative_samples():
    neg, pos = straight_scene("neg"), straight_scene("pos")
    on_negative = neg.negative_trajectory[:8]
    shaping = resolve_reward("negative_l2")
    out = shaping([item(neg, on_negative), item(pos, on_negative), item(neg, neg.future[:8])], threshold_m=1.7)
    assert out[0]["reward"] == pytest.approx(1.0)
    assert out[1] == {"reward": 0.0}
    assert out[2]["reward"] == 0.0  # the ground truth is far (> 1.7 m ADE) from the hesitant negative


def test_recovery_shaping_compares_on_the_plans_time_grid():
    rec = straight_scene("rec")
    plan_10hz = np.stack([np.arange(1, 41) * 0.1 * 10.0, np.zeros(40), np.zeros(40)], -1)
    # region "fixed": this correction is the naive continuation itself, so a separation region would be empty
    out = resolve_reward("recovery_l2")([item(rec, plan_10hz, interval_s=0.1)], region="fixed")
    assert out[0]["reward"] == pytest.approx(1.0)


def test_composite_reward_weights_components_and_keeps_diagnostics():
    scene = straight_scene("neg")
    reward = CompositeReward([RewardTerm("negative_l2", -5.0, {"threshold_m": 1.7}), RewardTerm("recovery_l2", 1.0)])
    [outcome] = reward([item(scene, scene.negative_trajectory[:8])])
    assert outcome.total == pytest.approx(-5.0)
    assert outcome.components["negative_l2"] == pytest.approx(1.0)
    assert outcome.components["negative_l2/ade_m"] == pytest.approx(0.0)


def test_plugins_load_by_registry_name_module_path_and_file_path(tmp_path):
    @register_reward("test_constant")
    def constant(batch, value=0.25):
        return [{"reward": value} for _ in batch]

    assert resolve_reward("test_constant") is constant
    by_module = resolve_reward("rewards.plugins.time_headway:time_headway")
    plugin = tmp_path / "my_reward.py"
    plugin.write_text(textwrap.dedent('''
        def progress(batch, scale=1.0):
            return [{"reward": scale * float(x.trajectory[-1, 0])} for x in batch]
    '''))
    by_file = resolve_reward(f"{plugin}:progress")
    scene = straight_scene()
    assert by_file([item(scene, scene.future[:8])], scale=0.1)[0]["reward"] == pytest.approx(4.0)
    close = by_module([item(straight_scene(lead_gap=8.0), straight_scene().future[:8])])[0]
    free = by_module([item(scene, scene.future[:8])])[0]
    assert free["reward"] == 1.0 and close["reward"] < 0.5


def test_unknown_reward_specs_name_what_is_wrong(tmp_path):
    with pytest.raises(RewardError, match="not a registered name"):
        resolve_reward("no_such_reward")
    with pytest.raises(RewardError, match="not found"):
        resolve_reward(f"{tmp_path}/missing.py:fn")
    with pytest.raises(RewardError, match="no callable 'nope'"):
        resolve_reward("rewards.shaping:nope")


def test_failing_plugins_make_samples_unscorable_never_zero():
    @register_reward("test_raises")
    def raises(batch):
        raise RuntimeError("map missing")

    @register_reward("test_nan")
    def nan(batch):
        return [{"reward": float("nan")}, {"reward": 1.0}]

    @register_reward("test_slow")
    def slow(batch):
        time.sleep(2.0)
        return [{"reward": 1.0} for _ in batch]

    scene = straight_scene()
    batch = [item(scene, scene.future[:8]), item(scene, scene.future[:8])]
    outcomes = CompositeReward([RewardTerm("recovery_l2"), RewardTerm("test_raises")])(batch)
    assert [o.total for o in outcomes] == [None, None]
    assert "map missing" in outcomes[0].error
    reward = CompositeReward([RewardTerm("test_nan")])
    outcomes = reward(batch)
    assert outcomes[0].total is None and outcomes[1].total == 1.0
    assert reward.failures == {"test_nan": 1}
    timed = CompositeReward([RewardTerm("test_slow")], timeout_s=0.2)
    start = time.perf_counter()
    outcomes = timed(batch)
    assert time.perf_counter() - start < 1.5
    assert outcomes[0].total is None and "CallTimeout" in outcomes[0].error
