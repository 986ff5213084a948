"""Log frames built the way OpenScene's converter writes them (`DriveEngine/process_data/
create_openscene_metadata.py`): the same keys and types, ego2global from the 18-value `can_bus`, boxes moved
into the ego frame with the inverse ego rotation and their yaw minus the ego yaw of pyquaternion's
`yaw_pitch_roll[0]`, velocities through the inverse ego and lidar rotations, cameras with the nuPlan camera
extrinsics stored as `sensor2lidar_*`, and `anns` only for non-test logs.

Independent of the reader: rotations come from scipy, and the ego yaw the converter subtracts is taken from
the rotation matrix (pyquaternion's yaw is atan2(-R[0, 1], R[0, 0]))."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy.spatial.transform import Rotation

CAMERAS = ("CAM_F0", "CAM_L0", "CAM_L1", "CAM_L2", "CAM_R0", "CAM_R1", "CAM_R2", "CAM_B0")
CAMERA_YAWS = {"CAM_F0": 0.0, "CAM_L0": 0.96, "CAM_L1": 1.9, "CAM_L2": 2.6, "CAM_R0": -0.96, "CAM_R1": -1.9,
               "CAM_R2": -2.6, "CAM_B0": math.pi}


def wxyz(rotation: Rotation) -> np.ndarray:
    """Quaternion (w, x, y, z) of a scipy rotation."""
    x, y, z, w = rotation.as_quat()
    return np.array([w, x, y, z])


def openscene_yaw(rotation: Rotation) -> float:
    """The ego yaw OpenScene subtracts from box headings (pyquaternion's yaw_pitch_roll[0]), from the matrix."""
    m = rotation.as_matrix()
    return math.atan2(-m[0, 1], m[0, 0])


def camera_rotation(yaw: float) -> np.ndarray:
    """Camera axes (x right, y down, z forward) in the ego frame for a camera turned by `yaw`."""
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    return np.stack([right, np.cross(forward, right), forward], axis=1)


@dataclass
class Box:
    """An annotated object in the global frame (what nuPlan's lidar_box holds)."""

    track: str
    name: str
    xyz: tuple[float, float, float]
    yaw: float
    size: tuple[float, float, float]  # length, width, height
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class FrameSpec:
    """One frame: the ego pose (global), its dynamic state, the objects, lights, route, command."""

    ego_xyz: tuple[float, float, float]
    ego_rotation: Rotation
    dynamic_state: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    boxes: list[Box] = field(default_factory=list)
    traffic_lights: list[tuple[int, bool]] = field(default_factory=list)
    roadblock_ids: list[str] = field(default_factory=lambda: ["101", "102"])
    driving_command: tuple[int, int, int, int] = (0, 1, 0, 0)


def openscene_frame(k: int, spec: FrameSpec, log_name: str, camera_paths: dict[str, str],
                    lidar2ego_rotation: Rotation = Rotation.identity(),
                    lidar2ego_translation: tuple[float, float, float] = (1.5, 0.0, 1.8),
                    cam_intrinsic: Optional[np.ndarray] = None, is_test: bool = False,
                    num_frames: Optional[int] = None) -> dict:
    """Frame `k` of a log as OpenScene's converter writes it (`camera_paths`: camera -> data_path)."""
    ego_rot = spec.ego_rotation
    q = wxyz(ego_rot)
    can_bus = np.array([*spec.ego_xyz, *q, spec.dynamic_state[2], spec.dynamic_state[3], 0.0,
                        spec.dynamic_state[0], spec.dynamic_state[1], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    l2e_q = wxyz(lidar2ego_rotation)
    e2g = np.eye(4)
    e2g[:3, :3], e2g[:3, 3] = ego_rot.as_matrix(), can_bus[:3]
    l2e = np.eye(4)
    l2e[:3, :3], l2e[:3, 3] = lidar2ego_rotation.as_matrix(), lidar2ego_translation
    if cam_intrinsic is None:
        cam_intrinsic = np.array([[1545.0, 0.0, 987.0], [0.0, 1545.0, 558.0], [0.0, 0.0, 1.0]])
    cams = {name: {
        "data_path": camera_paths[name],
        "sensor2lidar_rotation": camera_rotation(CAMERA_YAWS[name]),
        "sensor2lidar_translation": np.array([1.6 + 0.1 * i, 0.05 * i, 1.5]),
        "cam_intrinsic": cam_intrinsic,
        "distortion": np.array([-0.35, 0.12, 0.0, 0.0, -0.02]),
    } for i, name in enumerate(CAMERAS)}
    info = {
        "token": f"tok{k:02d}",
        "frame_idx": k,
        "timestamp": 1_620_000_000_000_000 + k * 500_000,
        "log_name": log_name,
        "log_token": "log_token_a",
        "scene_name": "log-0001-scene-0001",
        "scene_token": "scene_a",
        "map_location": "las_vegas",
        "roadblock_ids": list(spec.roadblock_ids),
        "vehicle_name": "veh-35",
        "can_bus": can_bus,
        "lidar_path": f"{log_name}/MergedPointCloud/{k:04d}.pcd",
        "lidar2ego_translation": np.array(lidar2ego_translation),
        "lidar2ego_rotation": [np.float64(v) for v in l2e_q],  # pyquaternion components
        "ego2global_translation": can_bus[:3],
        "ego2global_rotation": can_bus[3:7],
        "ego_dynamic_state": list(spec.dynamic_state),
        "traffic_lights": list(spec.traffic_lights),
        "driving_command": np.array(spec.driving_command, dtype=int),
        "cams": cams,
        "sample_prev": None if k == 0 else f"tok{k - 1:02d}",
        "sample_next": None if num_frames is not None and k == num_frames - 1 else f"tok{k + 1:02d}",
        "ego2global": e2g,
        "lidar2ego": l2e,
        "lidar2global": e2g @ l2e,
    }
    if not is_test:
        inv = ego_rot.inv().as_matrix()
        ego_yaw = openscene_yaw(ego_rot)
        locs = np.array([inv @ (np.array(b.xyz) - can_bus[:3]) for b in spec.boxes]).reshape(-1, 3)
        dims = np.array([b.size for b in spec.boxes]).reshape(-1, 3)
        rots = np.array([b.yaw for b in spec.boxes]).reshape(-1, 1) - ego_yaw
        velocity = np.array([b.velocity for b in spec.boxes]).reshape(-1, 3)
        velocity = velocity @ np.linalg.inv(ego_rot.as_matrix()).T @ np.linalg.inv(lidar2ego_rotation.as_matrix()).T
        info["anns"] = {
            "gt_boxes": np.concatenate([locs, dims, rots], axis=1),
            "gt_names": np.array([b.name for b in spec.boxes]),
            "gt_velocity_3d": velocity.reshape(-1, 3),
            "instance_tokens": [f"inst_{b.track}_{k}" for b in spec.boxes],
            "track_tokens": [b.track for b in spec.boxes],
        }
    return info
