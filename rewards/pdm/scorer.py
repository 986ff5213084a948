"""`PDMScorer`: NAVSIM's PDM score (v1 PDMS, v2 EPDMS) for groups of plans sharing one scene.

    scorer = PDMScorer(version="v2")
    prepared = scorer.prepare(scene)          # per-scene work, PDM-Closed cached on the scene
    results = scorer.score(prepared, plans)   # plans (G, 8, 3): one result dict per plan

Each plan gets exactly the score NAVSIM would give it scored alone against the PDM-Closed reference
(progress is normalised per plan against the reference, never against the other plans of the group).
Traffic is replayed from the log (v2: NAVSIM's `LogReplayTrafficAgents`); NAVSIM's reactive IDM traffic
needs the nuPlan map and is not available.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from sim import conventions as C
from sim.geometry import absolute_to_relative, relative_to_absolute
from sim.kinematics import initial_state, sample_poses, simulate, track
from sim.scene import EgoState, Scene

from rewards.pdm import comfort, proposals
from rewards.pdm.drivable import DrivableMap
from rewards.pdm.observation import Occupancy, interp_linear, log_replay_occupancy
from rewards.pdm.path import Path, polyline_poses
from rewards.pdm.pdm_closed import pdm_closed_trajectory

VERSIONS = C.VERSIONS  # defined with the other NAVSIM conventions
V2_FILTERED = ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC")  # columns the human filter may lift
PDM_CLOSED_STEPS = 51  # cached PDM-Closed: t = 0, 0.1, ..., 5.0 s


class PlanError(ValueError):
    """A plan that cannot be scored (wrong shape, NaN or infinite poses)."""


@dataclass
class PreparedScene:
    """Everything about one scene that does not depend on the plan (see `PDMScorer.prepare`)."""

    version: str
    token: str
    ego: EgoState
    drivable: DrivableMap
    centerline: Path
    occupancy: Occupancy
    reference_states: np.ndarray  # (41, 11) simulated PDM-Closed
    reference_product: float  # its multiplicative metrics
    reference_progress: float  # its raw progress, m
    reference_submetrics: dict
    history: Optional[np.ndarray] = None  # (14, 11) logged ego states before t = 0 (v2 HC)
    human: Optional[dict] = None  # v2: the human trajectory's own sub-metrics
    previous_states: Optional[np.ndarray] = None  # v2: previous frame's simulated plan (EC)
    notes: list[str] = field(default_factory=list)


class PDMScorer:
    """NAVSIM's scorer. version "v1" (PDMS, navsim v1.1) or "v2" (EPDMS, navsim v2.2).

    Options (defaults = NAVSIM's behaviour):
      float32_plans: round plan poses to float32 first, as NAVSIM's `Trajectory` holds them (True).
      human_filter: v2 human penalty filter when the scene has a human trajectory (True).
    """

    def __init__(self, version: str = "v2", float32_plans: bool = True, human_filter: bool = True):
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        self.version = version
        self.float32_plans = float32_plans
        self.human_filter = human_filter

    # --- per scene --------------------------------------------------------------------------------------
    def prepare(self, scene: Scene) -> PreparedScene:
        """Per-scene geometry: drivable map, centre line, 10 Hz occupancy, PDM-Closed (computed once and
        cached on `scene.pdm_closed_trajectory[version]`), its simulated rollout and sub-metrics, and (v2)
        the history states, the human trajectory's sub-metrics and the previous frame's rollout."""
        v = self.version
        if len(scene.map.centerline) < 2:
            raise ValueError(f"scene {scene.token!r}: map.centerline needs at least 2 points")
        ego = scene.ego
        drivable = DrivableMap.from_map(scene.map)
        centerline_poses = polyline_poses(scene.map.centerline)
        centerline = Path(centerline_poses)
        occupancy = log_replay_occupancy(scene, v)
        notes = []
        if v == "v2":
            notes.append("traffic agents: log replay (non-reactive); NAVSIM's reactive IDM traffic needs the nuPlan map")

        cache = scene.pdm_closed_trajectory if isinstance(scene.pdm_closed_trajectory, dict) else {}
        if v not in cache:
            if len(drivable.route_lane_idx) == 0:
                raise ValueError(f"scene {scene.token!r}: the map has no on-route lane, PDM-Closed has no starting lane"
                                 " (NAVSIM drops such scenes)")
            poses = pdm_closed_trajectory(scene, v, drivable, centerline_poses)
            cache[v] = absolute_to_relative(ego.pose, poses)
            scene.pdm_closed_trajectory = cache
        reference_states = self._reference_rollout(ego, np.asarray(cache[v], dtype=np.float64))

        history = comfort_history(scene.ego_history) if v == "v2" else None
        ref_sub = proposals.submetrics(reference_states[None], occupancy, drivable, centerline, v, history=history)
        product = float(proposals.multiplier(ref_sub, v)[0])
        prepared = PreparedScene(
            version=v, token=scene.token, ego=ego, drivable=drivable, centerline=centerline, occupancy=occupancy,
            reference_states=reference_states, reference_product=product,
            reference_progress=float(ref_sub["EP_raw"][0]), reference_submetrics=ref_sub,
            history=history, notes=notes,
        )
        if v == "v2":
            if scene.human_trajectory is not None and self.human_filter:
                human_states = simulate(ego, self._plans(scene.human_trajectory, "human_trajectory"))
                sub = proposals.submetrics(human_states, occupancy, drivable, centerline, v)
                ep, _, _ = proposals.aggregate(sub, v)
                prepared.human = {k: float(sub[k][0]) for k in ("NC", "DAC", "DDC", "TLC", "TTC", "LK", "HC")}
                prepared.human["EP"] = float(ep[0])
            if scene.previous_frame is not None:
                prev = scene.previous_frame
                prev_plan = self._plans(prev.trajectory, "previous_frame.trajectory")
                prepared.previous_states = simulate(prev.ego, prev_plan)[0]
        return prepared

    def prepare_cached(self, scene: Scene, cache: dict) -> PreparedScene:
        """`prepare(scene)`, kept in `cache` (a dict holding this scene's per-scene work) under "pdm/<version>"
        and reused from there: the scorer workers' reward and evaluation and `rl.evaluate` share it."""
        key = f"pdm/{self.version}"
        if key not in cache:
            cache[key] = self.prepare(scene)
        return cache[key]

    def _reference_rollout(self, ego: EgoState, cached: np.ndarray) -> np.ndarray:
        """Simulate the cached PDM-Closed trajectory (51, 3), ego frame at t = 0 ... 5 s, at t = 0 ... 4 s."""
        poses = relative_to_absolute(ego.pose, cached)
        knots = np.arange(len(poses)) * C.SIM_INTERVAL_S
        queries = np.arange(0.0, 4.0 + C.SIM_INTERVAL_S, C.SIM_INTERVAL_S)[: C.NUM_SIM_STATES]
        reference = sample_poses(knots, poses[None], queries)
        return track(reference, initial_state(ego))[0]

    # --- per group of plans ---------------------------------------------------------------------------------
    def score(
        self,
        prepared: PreparedScene,
        plans: np.ndarray,
        interval_s: float = C.LOG_INTERVAL_S,
        plan_frame: str = "ego",
        verbose: bool = False,
    ) -> list[dict]:
        """Score a group of plans (G, N, 3) (or one plan (N, 3)): rear-axle poses at t = interval_s ...
        N * interval_s, in the ego frame at t = 0 (or "scene" frame). Returns one dict per plan with the
        sub-scores (v1: NC DAC TTC EP C DDC_weight0 PDMS; v2: NC DAC DDC TLC EP TTC LK HC EC
        multiplicative_metrics_prod EPDMS ...) and diagnostics. Raises `PlanError` (a ValueError) when the plans
        are not NAVSIM plans (`sim.conventions.check_plan`: N = 4 s / interval_s poses, finite values)."""
        if prepared.version != self.version:
            raise ValueError(f"scene prepared for {prepared.version}, scorer is {self.version}")
        plans = self._plans(plans, "plans", interval_s)
        states = simulate(prepared.ego, plans, interval_s=interval_s, plan_frame=plan_frame)
        sub = proposals.submetrics(states, prepared.occupancy, prepared.drivable, prepared.centerline,
                                   self.version, history=prepared.history)
        results = []
        for g in range(len(plans)):
            one = {key: np.array([value[g]]) for key, value in sub.items()}
            results.append(self._score_one(prepared, states[g], one, verbose))
        return results

    def _plans(self, plans, what: str, interval_s: float = C.LOG_INTERVAL_S) -> np.ndarray:
        """(G, N, 3) float64 plans checked by `sim.conventions.check_plan` (NAVSIM's 4 s at `interval_s`),
        rounded to float32 when `float32_plans`. Raises `PlanError` naming `what`."""
        try:
            array = C.check_plan(plans, interval_s, where=what)
        except ValueError as err:
            raise PlanError(str(err)) from err
        if array.ndim == 2:
            array = array[None]
        if self.float32_plans:
            with np.errstate(over="ignore"):
                array = array.astype(np.float32).astype(np.float64)
            if not np.all(np.isfinite(array)):
                g, n = np.argwhere(~np.isfinite(array))[0][:2]
                raise PlanError(f"{what}[{g}] pose {n} overflows float32 (NAVSIM's Trajectory precision): "
                                f"{np.asarray(plans, dtype=np.float64).reshape(array.shape)[g, n].tolist()}")
        return array

    def _score_one(self, prepared: PreparedScene, states: np.ndarray, sub: dict, verbose: bool) -> dict:
        v = self.version
        pair = {key: np.concatenate([prepared.reference_submetrics[key][:1], sub[key]])
                for key in sub if key in prepared.reference_submetrics}
        ep, product, score = proposals.aggregate(pair, v)
        value = {key: float(sub[key][0]) for key in ("NC", "DAC", "TTC")}
        diagnostics = {
            "raw_progress_m": {"pdm_closed": prepared.reference_progress, "plan": float(sub["EP_raw"][0])},
            "plan_first_at_fault_collision_s": _time_or_none(sub["collision_idx"][0]),
            "plan_first_ttc_violation_s": _time_or_none(sub["ttc_idx"][0]),
            "pdm_closed_submetrics": {"NC": float(prepared.reference_submetrics["NC"][0]),
                                      "DAC": float(prepared.reference_submetrics["DAC"][0])},
        }
        if v == "v1":
            result = {**value, "EP": float(ep[1]), "C": float(sub["C"][0]), "DDC_weight0": float(sub["DDC"][0]),
                      "PDMS": float(score[1])}
        else:
            result = self._v2_result(prepared, states, sub, value, float(ep[1]), float(product[1]), float(score[1]))
        result["diagnostics"] = diagnostics
        result["notes"] = list(prepared.notes)
        if verbose:
            result["simulated_plan_10hz"] = [
                {"t": round(0.1 * k, 1), "x": s[0], "y": s[1], "heading": s[2], "v": s[3], "a": s[5]}
                for k, s in enumerate(states.tolist())
            ]
        return result

    def _v2_result(self, prepared, states, sub, value, ep, product, pdm_score) -> dict:
        columns = {**value, "DDC": float(sub["DDC"][0]), "TLC": float(sub["TLC"][0]), "EP": ep,
                   "LK": float(sub["LK"][0]), "HC": float(sub["HC"][0])}
        human = prepared.human
        if human is not None:
            for key in V2_FILTERED:
                if human[key] == 0:
                    columns[key] = 1.0
            product = columns["NC"] * columns["DAC"] * columns["DDC"] * columns["TLC"]
        ec = None
        if prepared.previous_states is not None:
            ec = comfort.two_frame_extended_comfort(states, prepared.previous_states)
        result = {key: columns[key] for key in ("NC", "DAC", "DDC", "TLC", "EP", "TTC", "LK", "HC")}
        result["EC"] = ec
        result["multiplicative_metrics_prod"] = product
        result["EPDMS"] = proposals.epdms(product, columns["EP"], columns["TTC"], columns["LK"], columns["HC"], ec)
        result["scorer_pdm_score_column"] = pdm_score
        result["human_filter_applied"] = human is not None
        if human is not None:
            result["human_unfiltered_submetrics"] = {k: human[k] for k in ("NC", "DAC", "DDC", "TLC", "TTC", "LK")}
        return result


def _time_or_none(index: float) -> Optional[float]:
    return None if not np.isfinite(index) else float(index) * C.SIM_INTERVAL_S


def comfort_history(history: list[EgoState]) -> np.ndarray:
    """(14, 11) logged ego states at t = -1.5, -1.4, ..., -0.2 s, interpolated from the 2 Hz history as
    NAVSIM's `past_human_trajectory` is (linear; heading along the short arc; no yaw rate)."""
    times_us = np.array([int(t * 1e6) for t in C.history_times()], dtype=np.float64)
    queries = np.arange(times_us[0], times_us[-1], 100000, dtype=np.int64)[:-1].astype(np.float64)
    linear = np.array([[e.x, e.y, e.vx, e.vy, e.ax, e.ay, e.steering_angle] for e in history], dtype=np.float64)
    values = interp_linear(times_us, linear, queries)
    headings = np.unwrap(np.array([e.heading for e in history], dtype=np.float64))
    heading = interp_linear(times_us, headings[:, None], queries)[:, 0]
    out = np.zeros((len(queries), 11), dtype=np.float64)
    out[:, 0:2] = values[:, 0:2]
    out[:, 2] = (heading + np.pi) % (2 * np.pi) - np.pi
    out[:, 3:7] = values[:, 2:6]
    out[:, 7] = values[:, 6]
    return out


__all__ = ["PDMScorer", "PreparedScene", "PlanError", "comfort_history"]
