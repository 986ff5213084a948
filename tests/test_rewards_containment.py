"""The reward registry contains whatever a plug-in does (sys.exit, KeyboardInterrupt), checks every plan, and
`pdms` scores each plan of a group on its own merits."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from rewards.builtin import pdms
from rewards.pdm import PDMScorer
from rewards.registry import INVALID_PLAN, CompositeReward, RewardTerm, ScoringInput, in_ray_worker, register_reward

from pdm_builders import road_scene, straight_plan


@register_reward("test_exits")
def exits(batch):
    sys.exit(3)


@register_reward("test_interrupts")
def interrupts(batch):
    raise KeyboardInterrupt("pressed inside a plug-in")


@register_reward("test_half_scorable")
def half_scorable(batch):
    return [{"reward": 1.0} if i % 2 == 0 else {"error": "no lead vehicle"} for i in range(len(batch))]


def items(scene, plans, interval_s=0.5):
    cache: dict = {}
    return [ScoringInput(scene, np.asarray(p, dtype=np.float64), interval_s=interval_s, cache=cache) for p in plans]


def test_a_plugin_calling_sys_exit_makes_its_samples_unscorable():
    scene = road_scene()
    reward = CompositeReward([RewardTerm("test_exits"), RewardTerm("pdms")])
    outcomes = reward(items(scene, [straight_plan(), straight_plan(8.0)]))
    assert [o.total for o in outcomes] == [None, None]
    assert outcomes[0].error == "test_exits: raised SystemExit: 3"
    assert reward.failures == {"test_exits": 2, "pdms": 0}
    # the composite still works afterwards
    assert CompositeReward([RewardTerm("pdms")])(items(scene, [straight_plan()]))[0].total > 0.9


def test_keyboard_interrupt_is_contained_in_workers_and_stops_a_driver():
    scene = road_scene()
    batch = items(scene, [straight_plan()])
    contained = CompositeReward([RewardTerm("test_interrupts")], contain_interrupts=True)
    [outcome] = contained(batch)
    assert outcome.total is None
    assert outcome.error == "test_interrupts: raised KeyboardInterrupt: pressed inside a plug-in"
    assert contained.failures == {"test_interrupts": 1}
    assert not in_ray_worker()  # this test process is a driver: by default Ctrl-C must stop it
    with pytest.raises(KeyboardInterrupt, match="pressed inside a plug-in"):
        CompositeReward([RewardTerm("test_interrupts")])(batch)


def test_a_scorer_actor_survives_plugins_that_exit_or_interrupt(ray_cluster, tmp_path):
    """A real Ray scorer actor loads the plug-ins by file path; a plug-in's sys.exit() or KeyboardInterrupt
    makes the samples unscorable and the actor keeps serving."""
    from actors.scorer import ScoreRequest, ScorerWorker
    from rl.config import RewardTermConfig, ScorerConfig

    ray = ray_cluster
    plugin = tmp_path / "rude_plugins.py"
    plugin.write_text(textwrap.dedent('''
        import sys

        def rude(batch, how="exit"):
            if how == "exit":
                sys.exit("leaving")
            raise KeyboardInterrupt("interrupted")
    '''))
    terms = [RewardTermConfig(f"{plugin}:rude", kwargs={"how": "interrupt"}, label="interrupting"),
             RewardTermConfig("pdms", label="pdms")]
    worker = ray.remote(num_cpus=0, max_restarts=0)(ScorerWorker).remote(0, ScorerConfig(rewards=terms))
    exiting = ray.remote(num_cpus=0, max_restarts=0)(ScorerWorker).remote(
        1, ScorerConfig(rewards=[RewardTermConfig(f"{plugin}:rude")]))
    scene = road_scene()
    request = ScoreRequest(scene, np.stack([straight_plan(), straight_plan(5.0)]), ["", ""], ["fast", "fast"])
    for _ in range(2):  # the second call proves the actor is still alive
        scores = ray.get(worker.score.remote(request), timeout=120)
        assert np.isnan(scores.totals).all()
        assert scores.errors == ["interrupting: raised KeyboardInterrupt: interrupted"] * 2
        assert scores.failures_by_term == {"interrupting": 2}
    scores = ray.get(exiting.score.remote(request), timeout=120)
    assert scores.errors == ["rude: raised SystemExit: leaving"] * 2
    assert ray.get(exiting.ready.remote(), timeout=60) == 1
    for actor in (worker, exiting):
        ray.kill(actor)


def test_invalid_plans_are_unscorable_before_any_function_runs():
    scene = road_scene()
    nan_plan = straight_plan()
    nan_plan[4, 1] = np.nan
    batch = items(scene, [straight_plan(), straight_plan()[:7], nan_plan, np.zeros((2000, 3))])
    reward = CompositeReward([RewardTerm("pdms"), RewardTerm("test_half_scorable")])
    outcomes = reward(batch)
    alone = PDMScorer("v1").score(PDMScorer("v1").prepare(road_scene()), straight_plan())[0]["PDMS"]
    assert outcomes[0].total == pytest.approx(alone + 1.0)
    assert outcomes[1].total is None
    assert outcomes[1].error == "sample 1 (road): trajectory: expected 8 poses at 0.5 s (t = 0.5 ... 4 s), got 7"
    assert outcomes[2].error == "sample 2 (road): trajectory pose 4 is not finite: [25.0, nan, 0.0]"
    assert outcomes[3].error.endswith("got 2000")
    assert reward.failures == {"pdms": 0, "test_half_scorable": 0, INVALID_PLAN: 3}


def test_an_error_result_names_why_one_sample_is_unscorable():
    scene = road_scene()
    reward = CompositeReward([RewardTerm("test_half_scorable")])
    outcomes = reward(items(scene, [straight_plan()] * 3))
    assert [o.total for o in outcomes] == [1.0, None, 1.0]
    assert outcomes[1].error == "test_half_scorable: unscorable: no lead vehicle"
    assert reward.failures == {"test_half_scorable": 1}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pdms_scores_the_valid_plans_of_a_group_with_bad_ones(version):
    """One non-finite plan, one that overflows NAVSIM's float32 poses (it passes the plan check and spoils
    the vectorised call) and one of 7 poses: only those three are unscorable; the others get exactly the
    score they get alone."""
    scene = road_scene()
    good = [straight_plan(10.0), straight_plan(6.0), straight_plan(12.0, y=-3.5)]
    nan_plan = straight_plan()
    nan_plan[0, 0] = np.inf
    overflow = straight_plan()
    overflow[5, 1] = 1e39
    batch = items(scene, [good[0], nan_plan, good[1], overflow, straight_plan()[:7], good[2]])
    out = pdms(batch, version=version)
    key = "PDMS" if version == "v1" else "EPDMS"
    scorer = PDMScorer(version)
    prepared = scorer.prepare(road_scene())
    for i, plan in zip((0, 2, 5), good):
        assert out[i]["reward"] == scorer.score(prepared, plan)[0][key]
    assert out[1] == {"error": "trajectory pose 0 is not finite: [inf, 0.0, 0.0]"}
    assert out[3]["error"].startswith("PlanError: plans[0] pose 5 overflows float32")
    assert out[4] == {"error": "trajectory: expected 8 poses at 0.5 s (t = 0.5 ... 4 s), got 7"}
    # through the registry, the overflowing plan is unscorable and counted against pdms, the rest scored
    reward = CompositeReward([RewardTerm("pdms", kwargs={"version": version})])
    outcomes = reward(items(scene, [good[0], overflow, good[1]]))
    assert outcomes[0].total == out[0]["reward"] and outcomes[2].total == out[2]["reward"]
    assert outcomes[1].total is None and "overflows float32" in outcomes[1].error
    assert reward.failures == {"pdms": 1}


def test_pdms_fails_only_the_plans_of_a_scene_that_cannot_be_prepared():
    good_scene = road_scene(token="good")
    no_route = road_scene(token="no_route")
    for lane in no_route.map.lanes:
        lane.on_route = False
    batch = items(good_scene, [straight_plan()]) + items(no_route, [straight_plan(), straight_plan(5.0)])
    out = pdms(batch, version="v2")
    assert out[0]["reward"] > 0.9
    assert out[1]["error"].startswith("scene 'no_route': ValueError: scene 'no_route': the map has no on-route lane")
    assert out[2] == out[1]
