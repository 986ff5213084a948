"""The reward functions that ship with the project, registered by name (see `rewards.registry`)."""
from __future__ import annotations

from rewards.registry import ScoringInput, register_reward
from rewards.shaping import reasoning_length_penalty


def _plan_times(item: ScoringInput):
    from sim.conventions import future_times

    return future_times(len(item.trajectory), item.interval_s)


def _resampled(item: ScoringInput, reference, measure: str = "driven"):
    """The plan's poses and the reference's (x, y) on the plan's time grid, over the times the reference covers
    (references are 0.5 s; plans may use another rate). measure "driven": the trajectory as driven; "plan": the
    policy's plan before its pace (`ScoringInput.planned`)."""
    import numpy as np

    from sim.conventions import future_times

    plan_times = _plan_times(item)
    # Trajectories start at the ego (the origin) at t = 0.
    ref_times = np.concatenate([[0.0], future_times(len(reference))])
    ref = np.concatenate([np.zeros((1, 3)), np.asarray(reference, dtype=np.float64)])
    usable = plan_times <= ref_times[-1] + 1e-9
    xy = np.stack([np.interp(plan_times[usable], ref_times, ref[:, i]) for i in range(2)], -1)
    return (item.planned if measure == "plan" else item.trajectory)[usable], xy


def _anchor(item: ScoringInput, sample_type: str, num_poses: int):
    """What the reference is contrasted with in region "separation", on the plan's time grid (first
    `num_poses` plan times): for `neg`, the expert's plan (Scene.future); for `rec`, the perturbed start's
    naive continuation (its current velocity kept: no correction)."""
    from rewards.shaping import constant_velocity_plan

    if sample_type == "neg":
        if item.scene.future is None:
            raise ValueError(f"scene {item.scene_token}: region 'separation' needs the expert's plan (Scene.future)")
        return _resampled(item, item.scene.future)[1][:num_poses]
    ego = item.scene.ego
    return constant_velocity_plan(ego.vx, ego.vy, _plan_times(item)[:num_poses])


def _closeness(batch: list[ScoringInput], sample_type: str, reference: str, region: str, threshold_m: float,
               min_separation_m: float, measure: str = "driven") -> list[dict]:
    """Bounded closeness of each plan to the scene's `reference` trajectory attribute, for samples of
    `sample_type` (0 for the others), inside a region of radius d (see `rewards.shaping.shaping_region`).
    measure "driven" measures the trajectory as driven, "plan" the flow's plan before its pace: the pace then
    gets none of the term, so a term cannot be met by driving every scene slower.

    Diagnostics per sample of `sample_type` (logged as means over those samples): `ade_m` (ADE to the
    reference), `region_m` (d), `inside_share` (1 when the plan is inside the region: the term acts on it),
    `on_<type>` (the term's value, so that its mean over the samples it applies to is logged)."""
    from rewards.shaping import MEASURES, REGIONS, average_displacement, region_l2_shaping, shaping_region

    if region not in REGIONS:  # the config check names the key; this guards direct calls
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    out = []
    for item in batch:
        if item.sample_type != sample_type:
            out.append({"reward": 0.0})
            continue
        plan, ref = _resampled(item, getattr(item.scene, reference), measure)
        anchor = _anchor(item, sample_type, len(ref)) if region == "separation" else None
        d = shaping_region(ref, region, threshold_m, anchor, min_separation_m)
        ade = average_displacement(plan, ref)
        value = region_l2_shaping(plan, ref, d)
        out.append({"reward": value, "ade_m": ade, "region_m": d, "inside_share": float(ade < d),
                    f"on_{sample_type}": value})
    return out


@register_reward("negative_l2")
def negative_l2(batch: list[ScoringInput], region: str = "separation", threshold_m: float = 1.7,
                min_separation_m: float = 0.05, measure: str = "driven") -> list[dict]:
    """r_neg: bounded closeness to the scene's negative trajectory (0 for samples that are not `neg`).
    Configure it with a negative weight (-w_N).

    region "separation" (default): d = ADE(expert's plan, negative) on the plan's time grid, so a plan is
    penalised only while it is closer to the mistake than the expert is (1 on the mistake, 0 at the expert);
    no region when the two are closer than `min_separation_m`. region "fixed": d = `threshold_m` (the paper's
    1.7 m). On this project's world a fixed 1.7 m is out of reach (the negatives lie a median 4.45 m from the
    expert's plan, the policy's samples a median 4.4 m from the negatives), so the term would hardly act.
    measure: "driven" (default) or "plan" (before the pace; see `_closeness`)."""
    return _closeness(batch, "neg", "negative_trajectory", region, threshold_m, min_separation_m, measure)


@register_reward("recovery_l2")
def recovery_l2(batch: list[ScoringInput], region: str = "separation", threshold_m: float = 1.7,
                min_separation_m: float = 0.05, measure: str = "driven") -> list[dict]:
    """r_rec: bounded closeness to the scene's recovery trajectory (0 for samples that are not `rec`).

    region "separation" (default): d = ADE(naive continuation, correction) on the plan's time grid, the naive
    continuation keeping the perturbed start's velocity (no correction), so a plan is rewarded only while it
    is closer to the correction than not correcting at all (1 on the correction, 0 for not correcting). A
    fixed region would also reward not correcting wherever the perturbation is mild (on this project's
    world the naive continuation is within 1.7 m of the correction in about a quarter of recovery scenes).
    region "fixed": d = `threshold_m` (the paper's 1.7 m). measure: as `negative_l2`."""
    return _closeness(batch, "rec", "recovery_trajectory", region, threshold_m, min_separation_m, measure)


@register_reward("cot_length")
def cot_length(
    batch: list[ScoringInput],
    scale: float = 0.3,
    slope: float = 0.002,
    offset_chars: float = 400.0,
    inconsistency_penalty: float = 1.0,
    check_consistency: bool = True,
) -> list[dict]:
    """r_CoT: AutoVLA's length penalty on slow-mode reasoning, replaced by `inconsistency_penalty` when the
    reasoning's stated decision disagrees with the trajectory. Configure it with a negative weight (-lambda_C)."""
    from rewards.reasoning_check import check_reasoning

    out = []
    for item in batch:
        length = reasoning_length_penalty(len(item.reasoning), scale, slope, offset_chars)
        value = length if item.reasoning_mode == "slow" else 0.0
        consistent = True
        if check_consistency and item.reasoning_mode == "slow":
            consistent = check_reasoning(item.reasoning, item.trajectory, item.scene, item.interval_s).consistent
            if not consistent:
                value = inconsistency_penalty
        out.append({"reward": value, "chars": float(len(item.reasoning)), "consistent": float(consistent)})
    return out


_SCORERS: dict = {}
_PDM_KEYS = {"v1": ("PDMS", ("NC", "DAC", "TTC", "EP", "C")), "v2": ("EPDMS", ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC"))}


@register_reward("pdms")
def pdms(batch: list[ScoringInput], version: str = "v1") -> list[dict]:
    """r_drive: NAVSIM's PDMS (version v1) or EPDMS (v2) of each plan, with its sub-scores as diagnostics.

    Plans of the same scene are scored in one vectorised call that shares the scene's prepared geometry and
    PDM-Closed reference, kept in the scene's scorer cache across calls. Each plan's score is the one NAVSIM
    gives it alone, and so is its failure: a plan that is not a NAVSIM plan (`sim.conventions.check_plan`) is
    left out of the group call, and when the group call fails every plan is scored alone, so only the plans
    that fail get {"error": ...} (unscorable); a scene that cannot be prepared fails its own plans only."""
    import numpy as np

    from rewards.pdm import PDMScorer
    from sim.conventions import check_plan

    if version not in _PDM_KEYS:
        raise ValueError(f"pdms: version must be 'v1' or 'v2', got {version!r}")
    scorer = _SCORERS.setdefault(version, PDMScorer(version))
    total_key, sub_keys = _PDM_KEYS[version]
    out: list = [None] * len(batch)
    by_scene: dict = {}
    for i, item in enumerate(batch):
        try:
            check_plan(item.trajectory, item.interval_s, where="trajectory")
        except ValueError as err:
            out[i] = {"error": str(err)}
            continue
        by_scene.setdefault((item.scene_token, item.trajectory.shape, item.interval_s), []).append(i)

    def row(result: dict) -> dict:
        return {"reward": result[total_key], **{k: result[k] for k in sub_keys}}

    for (token, _, interval_s), indices in by_scene.items():
        first = batch[indices[0]]
        try:
            prepared = scorer.prepare_cached(first.scene, first.cache)
        except Exception as err:  # the scene, not a plan, is at fault: its own plans are unscorable
            for i in indices:
                out[i] = {"error": f"scene {token!r}: {type(err).__name__}: {err}"}
            continue
        plans = np.stack([batch[i].trajectory for i in indices])
        try:
            for i, result in zip(indices, scorer.score(prepared, plans, interval_s=interval_s)):
                out[i] = row(result)
        except Exception:  # one plan spoilt the vectorised call: score each alone
            for i in indices:
                try:
                    out[i] = row(scorer.score(prepared, batch[i].trajectory, interval_s=interval_s)[0])
                except Exception as err:
                    out[i] = {"error": f"{type(err).__name__}: {err}"}
    return out
