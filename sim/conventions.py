"""NAVSIM's conventions, in one place: units, frames, sampling rates and the ego vehicle.

Every length is in metres, every angle in radians (counter-clockwise, x axis = 0), every speed in m/s.
Poses of the ego are REAR-AXLE poses. The ego frame is the rear axle of the ego at t = 0 with x forward,
y left (NAVSIM's `Trajectory` frame). Agent and static-object poses are box CENTRES.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VehicleParameters:
    """Box geometry of a vehicle, measured from its rear axle (nuPlan's `VehicleParameters`)."""

    width: float
    front_length: float  # rear axle -> front bumper
    rear_length: float  # rear axle -> rear bumper
    wheel_base: float
    height: float

    @property
    def length(self) -> float:
        return self.front_length + self.rear_length

    @property
    def rear_axle_to_center(self) -> float:
        """Distance from the rear axle forward to the box centre."""
        return self.length / 2.0 - self.rear_length


# The Chrysler Pacifica that NAVSIM scores (nuPlan `get_pacifica_parameters`).
PACIFICA = VehicleParameters(
    width=1.1485 * 2.0,
    front_length=4.049,
    rear_length=1.127,
    wheel_base=3.089,
    height=1.777,
)

# --- time sampling ------------------------------------------------------------------------------------
LOG_INTERVAL_S = 0.5  # OpenScene logs are 2 Hz
NUM_HISTORY_FRAMES = 4  # t = -1.5, -1.0, -0.5, 0.0 s (the current frame included)
NUM_FUTURE_FRAMES = 10  # ground truth: t = 0.5 ... 5.0 s
NAVSIM_PLAN_POSES = 8  # a NAVSIM plan: t = 0.5 ... 4.0 s
SIM_INTERVAL_S = 0.1  # scoring simulates at 10 Hz
NUM_SIM_STATES = 41  # t = 0.0 ... 4.0 s at 10 Hz


def history_times() -> np.ndarray:
    """Times (s) of the ego history frames, oldest first: [-1.5, -1.0, -0.5, 0.0]."""
    return (np.arange(NUM_HISTORY_FRAMES) - (NUM_HISTORY_FRAMES - 1)) * LOG_INTERVAL_S


def future_times(num_poses: int = NUM_FUTURE_FRAMES, interval_s: float = LOG_INTERVAL_S) -> np.ndarray:
    """Times (s) of the poses of a future trajectory: interval, 2 * interval, ..."""
    return (np.arange(num_poses) + 1) * interval_s


# Agents are stored on the log's 2 Hz grid from the oldest history frame to the end of the ground truth.
AGENT_TIMES_S = np.arange(-(NUM_HISTORY_FRAMES - 1), NUM_FUTURE_FRAMES + 1) * LOG_INTERVAL_S  # 14 frames
AGENT_CURRENT_INDEX = NUM_HISTORY_FRAMES - 1  # index of t = 0 in AGENT_TIMES_S

# --- categories ---------------------------------------------------------------------------------------
DRIVING_COMMANDS = ("left", "straight", "right", "unknown")  # NAVSIM's one-hot order
AGENT_TYPES = ("vehicle", "pedestrian", "bicycle")  # nuPlan AGENT_TYPES: they move and carry velocity
STATIC_OBJECT_TYPES = ("traffic_cone", "barrier", "czone_sign", "generic_object")
SAMPLE_TYPES = ("pos", "neg", "rec")
TRAFFIC_LIGHT_STATES = ("green", "yellow", "red", "unknown")

# Map polygon layers. DAC counts only DRIVABLE_LAYERS; lane polygons never count as drivable.
AREA_LAYERS = ("roadblock", "roadblock_connector", "intersection", "drivable_area", "carpark_area")
DRIVABLE_LAYERS = ("roadblock", "intersection", "drivable_area", "carpark_area")
LANE_LAYERS = ("lane", "lane_connector")

# Camera names follow OpenScene; the policy reads the front three.
CAMERA_NAMES = ("CAM_F0", "CAM_L0", "CAM_R0")

# PDM-Closed falls back to this target speed when the map has no speed limit.
DEFAULT_SPEED_LIMIT_MPS = 15.0
