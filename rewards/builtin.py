"""The reward functions that ship with the project, registered by name (see `rewards.registry`)."""
from __future__ import annotations

from rewards.registry import ScoringInput, register_reward
from rewards.shaping import average_displacement, bounded_l2_shaping, reasoning_length_penalty


def _resampled(item: ScoringInput, reference):
    """The reference trajectory on the plan's time grid (references are 0.5 s; plans may use another rate)."""
    import numpy as np

    from sim.conventions import future_times

    plan_times = future_times(len(item.trajectory), item.interval_s)
    # Trajectories start at the ego (the origin) at t = 0.
    ref_times = np.concatenate([[0.0], future_times(len(reference))])
    ref = np.concatenate([np.zeros((1, 3)), np.asarray(reference, dtype=np.float64)])
    usable = plan_times <= ref_times[-1] + 1e-9
    xy = np.stack([np.interp(plan_times[usable], ref_times, ref[:, i]) for i in range(2)], -1)
    return item.trajectory[usable], xy


def _closeness(batch: list[ScoringInput], sample_type: str, reference: str, threshold_m: float) -> list[dict]:
    """Bounded closeness of each plan to the scene's `reference` trajectory attribute, for samples of
    `sample_type` (0 for the others)."""
    out = []
    for item in batch:
        if item.sample_type != sample_type:
            out.append({"reward": 0.0})
            continue
        plan, ref = _resampled(item, getattr(item.scene, reference))
        out.append({"reward": bounded_l2_shaping(plan, ref, threshold_m), "ade_m": average_displacement(plan, ref)})
    return out


@register_reward("negative_l2")
def negative_l2(batch: list[ScoringInput], threshold_m: float = 1.7) -> list[dict]:
    """r_neg: bounded closeness to the scene's negative trajectory (0 for samples that are not `neg`).
    Configure it with a negative weight (-w_N)."""
    return _closeness(batch, "neg", "negative_trajectory", threshold_m)


@register_reward("recovery_l2")
def recovery_l2(batch: list[ScoringInput], threshold_m: float = 1.7) -> list[dict]:
    """r_rec: bounded closeness to the scene's recovery trajectory (0 for samples that are not `rec`)."""
    return _closeness(batch, "rec", "recovery_trajectory", threshold_m)


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
    gives it alone."""
    import numpy as np

    from rewards.pdm import PDMScorer

    if version not in _PDM_KEYS:
        raise ValueError(f"pdms: version must be 'v1' or 'v2', got {version!r}")
    scorer = _SCORERS.setdefault(version, PDMScorer(version))
    total_key, sub_keys = _PDM_KEYS[version]
    out: list = [None] * len(batch)
    by_scene: dict = {}
    for i, item in enumerate(batch):
        by_scene.setdefault((item.scene_token, item.trajectory.shape, item.interval_s), []).append(i)
    for (_, _, interval_s), indices in by_scene.items():
        first = batch[indices[0]]
        prepared = first.cache.get(f"pdm/{version}")
        if prepared is None:
            prepared = first.cache[f"pdm/{version}"] = scorer.prepare(first.scene)
        plans = np.stack([batch[i].trajectory for i in indices])
        for i, result in zip(indices, scorer.score(prepared, plans, interval_s=interval_s)):
            out[i] = {"reward": result[total_key], **{k: result[k] for k in sub_keys}}
    return out
