"""Score simulated proposals with one NAVSIM version (PDMScorer.score_proposals) and aggregate them.

`submetrics` computes every per-proposal sub-metric of a version; `aggregate` turns the sub-metrics of
the proposals scored together into NAVSIM's per-proposal score, normalising ego progress over exactly
those proposals (in evaluation: [PDM-Closed, plan]).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from sim.conventions import NUM_SIM_STATES

from rewards.pdm import comfort, metrics
from rewards.pdm.boxes import ego_coords, polygons
from rewards.pdm.drivable import DrivableMap
from rewards.pdm.observation import Occupancy
from rewards.pdm.path import Path

PROGRESS_FLOOR_M = 5.0
V1_WEIGHTS = {"EP": 5.0, "TTC": 5.0, "C": 2.0, "DDC": 0.0}
V2_WEIGHTS = {"EP": 5.0, "TTC": 5.0, "LK": 2.0, "HC": 2.0, "EC": 2.0}
V2_TTC_LAST_STEP = (NUM_SIM_STATES - 1) - max(metrics.TTC_STEPS)  # 31: the last 0.9 s are not checked


def submetrics(
    states: np.ndarray,
    occ: Occupancy,
    drivable: DrivableMap,
    centerline: Path,
    version: str,
    history: Optional[np.ndarray] = None,
) -> dict:
    """Per-proposal sub-metrics of states (P, 41, 11) for "v1" or "v2".

    Keys: NC, DAC, DDC, EP_raw (m), TTC, collision_idx / ttc_idx (first infraction step, inf if none),
    v1: C; v2: TLC, LK, HC (history comfort: `history` (H, 11) states in front, HC = 1 without history).
    """
    coords = ego_coords(states[..., :3])
    polys = polygons(coords)
    areas = drivable.ego_areas(coords)
    out = {}
    out["NC"], out["collision_idx"] = metrics.no_at_fault_collisions(states, coords, polys, areas, occ)
    out["DAC"] = metrics.drivable_area_compliance(areas)
    out["DDC"] = metrics.driving_direction_compliance(coords, areas, drivable, skip_intersections=version == "v2")
    out["EP_raw"] = metrics.raw_progress(coords, centerline.line)
    last = states.shape[1] - 1 if version == "v1" else V2_TTC_LAST_STEP
    out["TTC"], out["ttc_idx"] = metrics.time_to_collision(states, coords, areas, drivable, occ, last)
    if version == "v2":
        out["TLC"] = metrics.traffic_light_compliance(coords, polys, occ)
        out["LK"] = metrics.lane_keeping(coords, drivable, centerline.line)
    if version == "v1":
        out["C"] = comfort.is_comfortable(states, "v1")
    elif history is None:
        out["HC"] = np.ones(len(states))
    else:
        out["HC"] = comfort.is_comfortable(comfort.history_padded(states, history), "v2")
    return out


def multiplier(sub: dict, version: str) -> np.ndarray:
    """Product of the multiplicative metrics (NAVSIM's MultiMetricIndex order)."""
    if version == "v1":
        return sub["NC"] * sub["DAC"]
    return ((sub["NC"] * sub["DAC"]) * sub["TLC"]) * sub["DDC"]


def normalised_progress(raw: np.ndarray, product: np.ndarray, version: str) -> np.ndarray:
    """EP of proposals scored together: progress over the best progress of a proposal with product > 0."""
    masked = raw * product
    best = np.max(masked)
    if best > PROGRESS_FLOOR_M:
        return masked / best if version == "v1" else np.clip(raw / best, 0.0, 1.0)
    ones = np.ones(len(raw), dtype=np.float64)
    if version == "v1":
        ones[product == 0.0] = 0.0
    return ones


def aggregate(sub: dict, version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(EP, multiplier, score) of proposals scored together. v2's score is PDMScorer's `pdm_score`
    (EC excluded: M * (5 EP + 5 TTC + 2 LK + 2 HC) / 14); v1's is the PDMS."""
    product = multiplier(sub, version)
    ep = normalised_progress(sub["EP_raw"], product, version)
    if version == "v1":
        w = V1_WEIGHTS
        weighted = (((ep * w["EP"] + sub["TTC"] * w["TTC"]) + sub["C"] * w["C"]) + sub["DDC"] * w["DDC"])
        weighted = weighted / (w["EP"] + w["TTC"] + w["C"] + w["DDC"])
    else:
        w = V2_WEIGHTS
        weighted = ((ep * w["EP"] + sub["TTC"] * w["TTC"]) + sub["LK"] * w["LK"]) + sub["HC"] * w["HC"]
        weighted = weighted / (w["EP"] + w["TTC"] + w["LK"] + w["HC"])
    return ep, product, product * weighted


def epdms(product: float, ep: float, ttc: float, lk: float, hc: float, ec: Optional[float]) -> float:
    """NAVSIM v2's final per-scene score: M * (5 EP + 5 TTC + 2 LK + 2 HC + 2 EC) / 16, or / 14 without EC."""
    w = V2_WEIGHTS
    ec_value, ec_weight = (0.0, 0.0) if ec is None else (ec, w["EC"])
    values = np.array([ep, ttc, lk, hc, ec_value], dtype=np.float64)
    weights = np.array([w["EP"], w["TTC"], w["LK"], w["HC"], ec_weight], dtype=np.float64)
    return float(product * ((values * weights).sum() / weights.sum()))
