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
VERSIONS = ("v1", "v2")  # NAVSIM v1.1 (PDMS) and v2.2 (EPDMS)
TRAFFIC_LIGHT_STATES = ("green", "yellow", "red", "unknown")

# Map polygon layers. DAC counts only DRIVABLE_LAYERS; lane polygons never count as drivable.
AREA_LAYERS = ("roadblock", "roadblock_connector", "intersection", "drivable_area", "carpark_area")
DRIVABLE_LAYERS = ("roadblock", "intersection", "drivable_area", "carpark_area")
LANE_LAYERS = ("lane", "lane_connector")

# Camera names follow OpenScene; the policy reads the front three.
CAMERA_NAMES = ("CAM_F0", "CAM_L0", "CAM_R0")

# PDM-Closed falls back to this target speed when the map has no speed limit.
DEFAULT_SPEED_LIMIT_MPS = 15.0


# --- plans --------------------------------------------------------------------------------------------
def check_plan(poses, interval_s: float = LOG_INTERVAL_S, where: str = "plan") -> np.ndarray:
    """A plan as NAVSIM scores it, checked: float64 poses of shape (N, 3) or a group (G, N, 3).

    A plan is rear-axle poses (x, y, heading) at t = interval_s, 2 * interval_s, ..., 4 s: NAVSIM's
    `Trajectory` is 8 poses at 0.5 s; another sampling must cover the same 4 s (e.g. 40 poses at 0.1 s), so
    N = 4 s / interval_s exactly. Raises ValueError, starting with `where`, naming what was expected and what
    was found: a shape that is not (N, 3) / (G, N, 3), an interval that is not positive or does not divide
    4 s, the wrong pose count, or a non-finite value (the first one: `where[g] pose n`, or `where pose n`).
    """
    horizon_s = NAVSIM_PLAN_POSES * LOG_INTERVAL_S
    if isinstance(interval_s, bool) or not isinstance(interval_s, (int, float, np.integer, np.floating)) \
            or not np.isfinite(interval_s) or interval_s <= 0:
        raise ValueError(f"{where}: the pose interval must be a positive number of seconds "
                         f"(NAVSIM: {LOG_INTERVAL_S:g} s), got {interval_s!r}")
    steps = horizon_s / float(interval_s)
    expected = int(round(steps))
    if expected < 1 or abs(steps - expected) > 1e-6:
        raise ValueError(f"{where}: a pose interval of {interval_s:g} s does not divide the {horizon_s:g} s plan "
                         f"horizon (NAVSIM: {NAVSIM_PLAN_POSES} poses at {LOG_INTERVAL_S:g} s)")
    try:
        array = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: expected numbers of shape ({expected}, 3) [x, y, heading], got {err}") from err
    if array.ndim not in (2, 3) or array.shape[-1] != 3:
        raise ValueError(f"{where}: expected poses of shape ({expected}, 3) [x, y, heading] or (G, {expected}, 3),"
                         f" got shape {array.shape}")
    if array.shape[-2] != expected:
        raise ValueError(f"{where}: expected {expected} poses at {interval_s:g} s (t = {interval_s:g} ... "
                         f"{horizon_s:g} s), got {array.shape[-2]}")
    bad = np.argwhere(~np.isfinite(array))
    if len(bad):
        index = bad[0]
        row = array[tuple(index[:-1])].tolist()
        label = f"{where}[{index[0]}] pose {index[1]}" if array.ndim == 3 else f"{where} pose {index[0]}"
        raise ValueError(f"{label} is not finite: {row}")
    return array
