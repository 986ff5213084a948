"""The negative and recovery L2 terms' regions: the paper's fixed 1.7 m and the separation-scaled region,
on hand-written trajectories along a straight road (ego at 10 m/s along +x)."""
import numpy as np
import pytest

from data_scene_builders import ego_history, straight_road_map
from rewards.registry import CompositeReward, RewardTerm, ScoringInput, resolve_reward
from rewards.shaping import constant_velocity_plan, region_l2_shaping, shaping_region
from sim import conventions as C
from sim.scene import Scene

TIMES = C.future_times(10)  # the references' 0.5 s grid, 10 poses
PLAN_TIMES = C.future_times(8)  # a plan: 8 poses at 0.5 s


def line(y: float, times=TIMES) -> np.ndarray:
    """Poses at 10 m/s along +x, `y` metres to the left of the ego's line (an ADE of |y| to the ego's line)."""
    return np.stack([10.0 * times, np.full(len(times), y), np.zeros(len(times))], -1)


def scene(sample_type: str, future: np.ndarray, negative=None, recovery=None) -> Scene:
    return Scene(token=f"hand-{sample_type}", ego_history=ego_history(10.0), driving_command=1, map=straight_road_map(),
                 future=future, sample_type=sample_type, negative_trajectory=negative, recovery_trajectory=recovery)


def score(term: str, s: Scene, plans: list[np.ndarray], **kwargs) -> list[dict]:
    return resolve_reward(term)([ScoringInput(s, p) for p in plans], **kwargs)


def test_separation_region_negative_is_0_at_the_expert_1_at_the_mistake_and_half_way_between():
    # the expert keeps its lane; the mistake drifts 2 m to the left (ADE(expert, negative) = 2 m)
    neg = scene("neg", line(0.0), negative=line(2.0))
    # plans at the expert, at the mistake, half way between, and 1 m beyond the expert (away from the mistake)
    plans = [line(y, PLAN_TIMES) for y in (0.0, 2.0, 1.0, -1.0)]
    out = score("negative_l2", neg, plans, region="separation")
    assert [o["reward"] for o in out] == pytest.approx([0.0, 1.0, 0.5, 0.0])
    assert [o["region_m"] for o in out] == pytest.approx([2.0] * 4)
    assert [o["ade_m"] for o in out] == pytest.approx([2.0, 0.0, 1.0, 3.0])
    assert [o["inside_share"] for o in out] == [0.0, 1.0, 1.0, 0.0]  # the expert itself is on the border
    assert [o["on_neg"] for o in out] == pytest.approx([0.0, 1.0, 0.5, 0.0])


def test_the_fixed_region_is_the_papers_1_7_m_whatever_the_expert_does():
    neg = scene("neg", line(0.0), negative=line(4.0))
    out = score("negative_l2", neg, [line(0.0, PLAN_TIMES), line(3.15, PLAN_TIMES), line(4.0, PLAN_TIMES)],
                region="fixed", threshold_m=1.7)
    assert [o["reward"] for o in out] == pytest.approx([0.0, 0.5, 1.0])
    assert [o["inside_share"] for o in out] == [0.0, 1.0, 1.0]
    assert out[0]["region_m"] == 1.7
    # the same plans with the separation region: d = 4 m, the plan 0.85 m from the mistake is at 1 - 0.85 / 4
    sep = score("negative_l2", neg, [line(3.15, PLAN_TIMES)])
    assert sep[0]["reward"] == pytest.approx(1.0 - 0.85 / 4.0) and sep[0]["region_m"] == pytest.approx(4.0)


def test_separation_region_recovery_is_1_on_the_correction_and_0_for_not_correcting():
    # ego at 10 m/s straight ahead; the correction steers to 1 m right of the naive continuation's line
    rec = scene("rec", line(-1.0), recovery=line(-1.0))
    naive = constant_velocity_plan(10.0, 0.0, PLAN_TIMES)
    np.testing.assert_allclose(naive, line(0.0, PLAN_TIMES))
    out = score("recovery_l2", rec, [line(-1.0, PLAN_TIMES), naive, line(-0.5, PLAN_TIMES)], region="separation")
    assert [o["reward"] for o in out] == pytest.approx([1.0, 0.0, 0.5])
    assert [o["region_m"] for o in out] == pytest.approx([1.0] * 3)
    assert [o["inside_share"] for o in out] == [1.0, 0.0, 1.0]
    fixed = score("recovery_l2", rec, [naive], region="fixed", threshold_m=1.7)
    assert fixed[0]["reward"] == pytest.approx(1.0 - 1.0 / 1.7)  # the fixed region rewards not correcting


def test_a_negative_indistinguishable_from_the_expert_has_no_region():
    neg = scene("neg", line(0.0), negative=line(0.01))
    out = score("negative_l2", neg, [line(0.01, PLAN_TIMES), line(0.0, PLAN_TIMES)], region="separation",
                min_separation_m=0.05)
    assert [o["reward"] for o in out] == [0.0, 0.0] and out[0]["region_m"] == 0.0 and out[0]["inside_share"] == 0.0


def test_the_terms_leave_other_sample_types_alone_and_are_compared_on_the_plans_time_grid():
    pos = scene("pos", line(0.0))
    assert score("negative_l2", pos, [line(0.0, PLAN_TIMES)]) == [{"reward": 0.0}]
    assert score("recovery_l2", pos, [line(0.0, PLAN_TIMES)]) == [{"reward": 0.0}]
    # a negative drifting left at 0.5 m/s (linear from the origin, so resampling to 10 Hz is exact)
    drift = line(0.0) + np.stack([np.zeros(10), 0.5 * TIMES, np.zeros(10)], -1)
    neg = scene("neg", line(0.0), negative=drift)
    t10 = C.future_times(40, 0.1)
    plan_10hz = line(0.0, t10) + np.stack([np.zeros(40), 0.25 * t10, np.zeros(40)], -1)
    [out] = resolve_reward("negative_l2")([ScoringInput(neg, plan_10hz, interval_s=0.1)])
    assert out["reward"] == pytest.approx(0.5) and out["region_m"] == pytest.approx(0.5 * t10.mean())


def test_shaping_region_and_region_l2_on_their_own():
    ref = line(2.0, PLAN_TIMES)
    assert shaping_region(ref, "fixed", 1.7) == 1.7
    assert shaping_region(ref, "separation", anchor=line(0.0, PLAN_TIMES)) == pytest.approx(2.0)
    assert region_l2_shaping(line(1.5, PLAN_TIMES), ref, 2.0) == pytest.approx(0.75)
    assert region_l2_shaping(ref, ref, 0.0) == 0.0
    with pytest.raises(ValueError, match="anchor"):
        shaping_region(ref, "separation")
    with pytest.raises(ValueError, match="region must be one of"):
        shaping_region(ref, "elliptic")


def test_a_bad_region_or_a_scene_without_the_experts_plan_makes_samples_unscorable_with_the_reason():
    neg = scene("neg", line(0.0), negative=line(2.0))
    reward = CompositeReward([RewardTerm("negative_l2", -5.0, {"region": "elliptic"})])
    [outcome] = reward([ScoringInput(neg, line(1.0, PLAN_TIMES))])
    assert outcome.total is None and "region must be one of ('fixed', 'separation'), got 'elliptic'" in outcome.error
    no_expert = scene("neg", None, negative=line(2.0))
    reward = CompositeReward([RewardTerm("negative_l2", -5.0, {"region": "separation"})])
    [outcome] = reward([ScoringInput(no_expert, line(1.0, PLAN_TIMES))])
    assert outcome.total is None and "needs the expert's plan (Scene.future)" in outcome.error
    assert reward.failures == {"negative_l2": 1}


def test_a_config_with_an_unknown_region_is_refused_naming_the_key():
    from rl.config import TrainConfig
    from rl.config_io import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"scorer.rewards\[1\] \(negative_l2\): kwargs.region='elliptic': expected one of \('fixed', 'separation'\)"):
        load_config(TrainConfig, "configs/tiny.yaml",
                    ["scorer.rewards=[{name: pdms}, {name: negative_l2, weight: -5.0, kwargs: {region: elliptic}}]"])
    cfg = load_config(TrainConfig, "configs/tiny.yaml", [])
    regions = {t.name: t.kwargs.get("region") for t in cfg.scorer.rewards}
    assert regions["negative_l2"] == "separation" and regions["recovery_l2"] == "separation"
    assert {t.name: t.kwargs.get("region") for t in TrainConfig().scorer.rewards}["negative_l2"] == "separation"


def test_measured_on_the_plan_a_negative_term_ignores_the_pace_that_drove_it_slower():
    # the mistake drives the expert's lane too fast (15 m/s against 10): a plan at the mistake, driven at 2/3 of its
    # speed, lands on the expert's trajectory; measured as driven it escapes the term, measured as planned it does not
    neg = scene("neg", line(0.0), negative=1.5 * line(0.0))
    planned = 1.5 * line(0.0, PLAN_TIMES)
    driven = line(0.0, PLAN_TIMES)
    item = ScoringInput(neg, driven, plan=planned)
    [as_driven] = resolve_reward("negative_l2")([item], region="separation")
    [as_planned] = resolve_reward("negative_l2")([item], region="separation", measure="plan")
    assert as_driven["reward"] == pytest.approx(0.0) and as_planned["reward"] == pytest.approx(1.0)
    # without a pace (no plan) both measure the trajectory
    [unpaced] = resolve_reward("negative_l2")([ScoringInput(neg, planned)], region="separation", measure="plan")
    assert unpaced["reward"] == pytest.approx(1.0)


def test_a_config_with_an_unknown_measure_is_refused_naming_the_key():
    from rl.config import TrainConfig
    from rl.config_io import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"scorer.rewards\[2\] \(recovery_l2\): kwargs.measure='both': expected one of \('driven', 'plan'\)"):
        load_config(TrainConfig, "configs/tiny.yaml",
                    ["scorer.rewards=[{name: pdms}, {name: negative_l2, weight: -5.0}, "
                     "{name: recovery_l2, weight: 1.0, kwargs: {measure: both}}]"])


def test_the_scorer_worker_hands_each_samples_plan_before_its_pace_to_the_terms():
    from actors.scorer import ScorerWorker
    from rl.config import RewardTermConfig, ScorerConfig
    from rl.records import ScoreRequest

    neg = scene("neg", line(0.0), negative=1.5 * line(0.0))
    driven, planned = line(0.0, PLAN_TIMES)[None], 1.5 * line(0.0, PLAN_TIMES)[None]
    worker = ScorerWorker(0, ScorerConfig(rewards=[
        RewardTermConfig("negative_l2", -1.0, {"region": "separation", "measure": "plan"})]))
    with_plans = worker.score(ScoreRequest(neg, driven, [""], ["fast"], 0.5, planned))
    without = worker.score(ScoreRequest(neg, driven, [""], ["fast"], 0.5))
    assert with_plans.totals.tolist() == pytest.approx([-1.0]) and without.totals.tolist() == pytest.approx([0.0])
