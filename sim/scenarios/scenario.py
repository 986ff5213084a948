"""A laid-out scenario: map, route, other road users, rules and the ego's start, in the scenario's world
frame, before the expert drives it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.ndimage import maximum_filter1d

from sim.scene import StaticObject, TrafficLight
from sim.scenarios.longitudinal import IDM, SpeedCap, StopRule
from sim.paths import LateralProfile, Path
from sim.scenarios.road import MapBuilder

LATERAL_ACCEL_MPS2 = 3.5  # the expert's lateral acceleration limit in bends and turns (NAVSIM bound: 4.89)
YAW_RATE_RPS = 0.75  # the expert's yaw-rate limit (NAVSIM comfort bound: 0.95 rad/s)


@dataclass
class EgoStart:
    """The ego at t = 0 on the route: rear-axle arc length, speed, acceleration, lateral offsets d(s)
    relative to the route centre line (nudges, lane-change corrections, perturbations)."""

    s: float
    speed: float
    accel: float = 0.0
    lateral: LateralProfile = field(default_factory=LateralProfile)


@dataclass
class Scenario:
    """A laid-out scenario in its world frame, before the expert drives it.

    facts: family-specific values the negatives, recoveries and reasoning read (documented per family)."""

    family: str
    builder: MapBuilder
    route: Path
    route_roadblocks: set[str]
    speed_limit: float
    lane_width: float
    tracks: list
    statics: list[StaticObject]
    lights: list[TrafficLight]
    start: EgoStart
    stops: list[StopRule]
    idm: IDM
    turn: Optional[str] = None  # "left" | "right" | "straight" for junction families
    turn_end_s: Optional[float] = None  # route arc length where the junction is left
    facts: dict = field(default_factory=dict)
    speed_cap: Optional[SpeedCap] = None

    def __post_init__(self):
        if self.speed_cap is None:
            stations = np.arange(0.0, self.route.length + 1.0, 1.0)
            # the sharpest curvature within 3 m either side: slow down before the tightest part of a turn
            kappa = maximum_filter1d(np.abs(self.route.curvature_at(stations)), size=7)
            self.speed_cap = SpeedCap.from_curvature(stations, kappa, LATERAL_ACCEL_MPS2, YAW_RATE_RPS)


