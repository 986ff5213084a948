"""Scenes from NAVSIM / OpenScene logs: log pickles and camera blobs -> `Scene` objects.

A log pickle (`navsim_logs/<split>/<log_name>.pkl`) is a list of per-frame dicts at 2 Hz (fields in
navsim_pdm.md 2.1). A scene is a window of 4 history frames and 10 future frames, named by the token of its
current frame (the 4th), slid over the log as NAVSIM's SceneFilter does. The scene frame is the ego
rear-axle frame of the current frame (the ego at (0, 0, 0)); global poses are moved into it.

Read per scene: ego history from `ego2global_*` with `ego_dynamic_state`; the ground truth and NAVSIM's
human trajectory (its first 8 poses); the driving command; agents from `anns` (boxes in each frame's ego
frame, tracked across frames by `track_tokens`, with velocities) and static objects by `gt_names`; traffic
lights (`(lane_connector_id, is_red)` per frame -> red / green, unknown where absent); the cameras CAM_F0,
CAM_L0, CAM_R0 with calibration (sensor2lidar composed with lidar2ego when the frame has it) and the images
of the 4 history frames, centre-cropped to the configured aspect and resized.

Maps come from a `MapSource` (nuPlan's map API by default, see `sim.navsim_map`); `with_map=False` gives
scenes without map and without traffic lights (a light names a lane connector of the map).
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from sim import conventions as C
from sim.cameras import CameraConfig
from sim.geometry import absolute_to_relative, relative_to_absolute, rotate_vectors
from sim.navsim_map import MapSource, MapUnavailableError, NuplanMapSource, map_name_of
from sim.scene import Agent, Camera, EgoState, MapData, Scene, StaticObject, TrafficLight

WINDOW = C.NUM_HISTORY_FRAMES + C.NUM_FUTURE_FRAMES  # 14 frames = C.AGENT_TIMES_S


class LogFormatError(ValueError):
    """A log pickle or a camera blob that does not follow the OpenScene format; names the file and key."""


def load_log(path: str | Path) -> list[dict]:
    """The frames of one OpenScene log pickle, checked for the keys the reader needs."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            frames = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise LogFormatError(f"{path}: cannot read the log pickle ({type(e).__name__}: {e})") from e
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise LogFormatError(f"{path}: a log pickle holds a list of per-frame dicts, found {type(frames).__name__}")
    required = ("token", "log_name", "map_location", "ego2global_translation", "ego2global_rotation",
                "ego_dynamic_state", "driving_command", "roadblock_ids", "traffic_lights", "anns")
    for i, frame in enumerate(frames):
        missing = [k for k in required if k not in frame]
        if missing:
            raise LogFormatError(f"{path}: frame {i} (token {frame.get('token')!r}) lacks key(s) {missing}")
    return frames


def scene_windows(frames: Sequence[dict], frame_interval: int = 1, has_route: bool = True,
                  tokens: Optional[set[str]] = None) -> list[int]:
    """Indices of the current frames of the scenes in a log (NAVSIM's SceneFilter: a window of 4 + 10 frames
    every `frame_interval` frames; with `has_route`, current frames without route roadblocks are dropped)."""
    out = []
    for start in range(0, len(frames) - WINDOW + 1, frame_interval):
        current = start + C.NUM_HISTORY_FRAMES - 1
        if has_route and len(frames[current]["roadblock_ids"]) == 0:
            continue
        if tokens is not None and frames[current]["token"] not in tokens:
            continue
        out.append(current)
    return out


# --- poses -------------------------------------------------------------------------------------------------


def quaternion_yaw(q: Sequence[float]) -> float:
    """Yaw (rad) of a rotation quaternion (w, x, y, z)."""
    w, x, y, z = (float(v) for v in q)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """(3, 3) rotation matrix of a quaternion (w, x, y, z)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(np.asarray(q, dtype=np.float64))
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def global_ego_pose(frame: dict) -> np.ndarray:
    """(x, y, heading) of the ego rear axle in the global frame."""
    t = frame["ego2global_translation"]
    return np.array([float(t[0]), float(t[1]), quaternion_yaw(frame["ego2global_rotation"])])


# --- one scene ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Track:
    type: str
    size: tuple[float, float, float]


def scene_from_log(
    frames: Sequence[dict],
    current: int,
    sensor_blobs: Optional[Path] = None,
    map_source: Optional[MapSource] = None,
    camera_config: CameraConfig | dict | None = None,
    with_images: bool = True,
) -> Scene:
    """The scene whose current frame is `frames[current]` (needs 3 frames before and 10 after).

    sensor_blobs: the split's blob directory (`sensor_blobs/<split>`); camera `data_path`s are relative to it.
    map_source: where the map comes from; None gives a scene without map and without traffic lights.
    camera_config: image size and camera names; with_images: load and resize the history images.
    """
    if current < C.NUM_HISTORY_FRAMES - 1 or current + C.NUM_FUTURE_FRAMES >= len(frames):
        raise ValueError(f"frame {current} has no full window of {C.NUM_HISTORY_FRAMES} + {C.NUM_FUTURE_FRAMES} frames "
                         f"in a log of {len(frames)} frames")
    window = list(frames[current - C.NUM_HISTORY_FRAMES + 1: current + C.NUM_FUTURE_FRAMES + 1])
    now = window[C.AGENT_CURRENT_INDEX]
    origin = global_ego_pose(now)
    ego_poses = np.stack([absolute_to_relative(origin, global_ego_pose(f)) for f in window])

    history = []
    for k in range(C.NUM_HISTORY_FRAMES):
        vx, vy, ax, ay = (float(v) for v in window[k]["ego_dynamic_state"][:4])
        x, y, h = ego_poses[k]
        history.append(EgoState(float(x), float(y), float(h), vx, vy, ax, ay))
    future = ego_poses[C.NUM_HISTORY_FRAMES:]  # the scene frame is the current ego frame

    agents, statics = _objects(window, ego_poses)
    scene_map = MapData()
    lights: list[TrafficLight] = []
    if map_source is not None:
        scene_map = map_source.map_data(map_name_of(now["map_location"]), origin, list(now["roadblock_ids"]))
        lights = _traffic_lights(window, {lane.id for lane in scene_map.lanes if lane.type == "lane_connector"})

    cameras = _cameras(window, CameraConfig.from_any(camera_config), sensor_blobs, with_images)
    return Scene(
        token=str(now["token"]),
        ego_history=history,
        driving_command=int(np.argmax(np.asarray(now["driving_command"]))),
        map=scene_map,
        agents=agents,
        static_objects=statics,
        traffic_lights=lights,
        future=future,
        family="navsim",
        sample_type="pos",
        human_trajectory=future[: C.NAVSIM_PLAN_POSES].copy(),
        cameras=cameras,
        log_name=str(now["log_name"]),
    ).validate()


def _objects(window: Sequence[dict], ego_poses: np.ndarray) -> tuple[list[Agent], list[StaticObject]]:
    """Agents tracked over the window by track token, and static objects (their box at the frame nearest t = 0)."""
    n = len(window)
    tracks: dict[str, _Track] = {}
    poses: dict[str, np.ndarray] = {}
    velocities: dict[str, np.ndarray] = {}
    for k, frame in enumerate(window):
        anns = frame["anns"]
        boxes = np.asarray(anns["gt_boxes"], dtype=np.float64).reshape(-1, 7)
        names = list(anns["gt_names"])
        tokens = list(anns["track_tokens"])
        vel = np.asarray(anns.get("gt_velocity_3d", np.zeros((len(boxes), 3))), dtype=np.float64).reshape(-1, 3)
        if not (len(boxes) == len(names) == len(tokens) == len(vel)):
            raise LogFormatError(f"frame {frame['token']!r}: anns have {len(boxes)} boxes, {len(names)} names, "
                                 f"{len(tokens)} track tokens and {len(vel)} velocities")
        if len(boxes) == 0:
            continue
        scene_boxes = relative_to_absolute(ego_poses[k], boxes[:, [0, 1, 6]])  # this frame's ego frame -> scene
        scene_vel = rotate_vectors(vel[:, :2], ego_poses[k, 2])
        for i, token in enumerate(tokens):
            name = str(names[i])
            if name not in C.AGENT_TYPES and name not in C.STATIC_OBJECT_TYPES:
                continue
            if token not in tracks or k == C.AGENT_CURRENT_INDEX:  # sizes at t = 0 when the object is seen then
                tracks[token] = _Track(name, (float(boxes[i, 3]), float(boxes[i, 4]), float(boxes[i, 5])))
            poses.setdefault(token, np.full((n, 3), np.nan))[k] = scene_boxes[i]
            velocities.setdefault(token, np.full((n, 2), np.nan))[k] = scene_vel[i]
    agents, statics = [], []
    for token, track in tracks.items():
        length, width, height = track.size
        if track.type in C.AGENT_TYPES:
            agents.append(Agent(token, track.type, length, width, height, poses[token], velocities[token]))
        else:
            seen = np.flatnonzero(~np.isnan(poses[token][:, 0]))
            k = seen[np.argmin(np.abs(seen - C.AGENT_CURRENT_INDEX))]
            x, y, h = poses[token][k]
            statics.append(StaticObject(token, track.type, float(x), float(y), float(h), length, width, height))
    return agents, statics


def _traffic_lights(window: Sequence[dict], lane_connectors: set[str]) -> list[TrafficLight]:
    """One TrafficLight per lane connector of the map named in the window; 'unknown' in frames without it."""
    states: dict[str, list[str]] = {}
    for k, frame in enumerate(window):
        for entry in frame["traffic_lights"]:
            lane_id, is_red = str(entry[0]), bool(entry[1])
            if lane_id in lane_connectors:
                states.setdefault(lane_id, ["unknown"] * len(window))[k] = "red" if is_red else "green"
    return [TrafficLight(lane_id, s) for lane_id, s in states.items()]


def _cameras(window: Sequence[dict], config: CameraConfig, sensor_blobs: Optional[Path], with_images: bool) -> list[Camera]:
    now = window[C.AGENT_CURRENT_INDEX]
    cams = now.get("cams") or {}
    if not cams:
        return []
    lidar2ego = None
    if "lidar2ego_rotation" in now and "lidar2ego_translation" in now:
        lidar2ego = (quaternion_matrix(now["lidar2ego_rotation"]), np.asarray(now["lidar2ego_translation"], dtype=np.float64))
    cameras = []
    for name in config.names:
        if name not in cams:
            raise LogFormatError(f"frame {now['token']!r}: cams has no {name} (has {sorted(cams)})")
        entry = cams[name]
        rotation = np.asarray(entry["sensor2lidar_rotation"], dtype=np.float64).reshape(3, 3)
        translation = np.asarray(entry["sensor2lidar_translation"], dtype=np.float64).reshape(3)
        if lidar2ego is not None:
            rotation, translation = lidar2ego[0] @ rotation, lidar2ego[0] @ translation + lidar2ego[1]
        intrinsics = np.asarray(entry["cam_intrinsic"], dtype=np.float64).reshape(3, 3)
        images = None
        if with_images:
            if sensor_blobs is None:
                raise ValueError("loading camera images needs `sensor_blobs` (the split's sensor_blobs directory)")
            frames = []
            for frame in window[: C.NUM_HISTORY_FRAMES]:
                path = Path(sensor_blobs) / frame["cams"][name]["data_path"]
                image, k_out = load_camera_image(path, intrinsics, config.height, config.width)
                frames.append(image)
            images = np.stack(frames)
            intrinsics = k_out
        else:
            intrinsics = _crop_resize_intrinsics(intrinsics, None, config.height, config.width)
        cameras.append(Camera(name, intrinsics, rotation, translation, images))
    return cameras


def _crop_box(src_w: int, src_h: int, height: int, width: int) -> tuple[float, float, float, float]:
    """The centred crop (left, top, right, bottom) of a src_w x src_h image with the aspect width / height."""
    aspect = width / height
    if src_w / src_h > aspect:
        crop_w = src_h * aspect
        left = (src_w - crop_w) / 2.0
        return left, 0.0, left + crop_w, float(src_h)
    crop_h = src_w / aspect
    top = (src_h - crop_h) / 2.0
    return 0.0, top, float(src_w), top + crop_h


def _crop_resize_intrinsics(k: np.ndarray, source_size: Optional[tuple[int, int]], height: int, width: int) -> np.ndarray:
    """Intrinsics after the centred crop and resize of `load_camera_image`. Without a known source size the
    principal point is taken as the image centre (OpenScene images are 1920 x 1080)."""
    src_w, src_h = source_size or (int(round(2 * k[0, 2])), int(round(2 * k[1, 2])))
    left, top, right, _ = _crop_box(src_w, src_h, height, width)
    scale = width / (right - left)
    out = np.array(k, dtype=np.float64, copy=True)
    out[0, 2] -= left
    out[1, 2] -= top
    out[:2] *= scale
    return out


def load_camera_image(path: Path, intrinsics: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A camera JPEG centre-cropped to the aspect width / height and resized: image (H, W, 3) uint8 and the
    matching intrinsics."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError) as e:
        raise LogFormatError(f"{path}: cannot read the camera image ({type(e).__name__}: {e})") from e
    box = _crop_box(rgb.width, rgb.height, height, width)
    resized = rgb.resize((width, height), Image.BILINEAR, box=box, reducing_gap=2.0)
    return np.asarray(resized), _crop_resize_intrinsics(intrinsics, (rgb.width, rgb.height), height, width)


# --- many scenes -------------------------------------------------------------------------------------------


class NavsimLogReader:
    """Scenes of NAVSIM logs.

    logs: a log pickle, a directory of them (`navsim_logs/<split>`), or a list of pickles.
    sensor_blobs: `sensor_blobs/<split>`; needed when `with_images`.
    with_map: read maps through `map_source`, by default nuPlan's map API (`NuplanMapSource(map_root)`, which
      raises a `MapUnavailableError` saying what to install when nuplan is missing); False gives scenes
      without map (usable for imitation, not for scoring).
    tokens: keep only scenes whose current-frame token is listed; frame_interval, has_route: as NAVSIM's
      SceneFilter.
    """

    def __init__(
        self,
        logs: str | Path | Sequence[str | Path],
        sensor_blobs: Optional[str | Path] = None,
        with_map: bool = True,
        map_root: Optional[str] = None,
        map_source: Optional[MapSource] = None,
        camera_config: CameraConfig | dict | None = None,
        with_images: bool = True,
        tokens: Optional[Sequence[str]] = None,
        frame_interval: int = 1,
        has_route: bool = True,
    ):
        if isinstance(logs, (str, Path)):
            logs = Path(logs)
            self.log_paths = sorted(logs.glob("*.pkl")) if logs.is_dir() else [logs]
        else:
            self.log_paths = [Path(p) for p in logs]
        if not self.log_paths:
            raise LogFormatError(f"{logs}: no log pickles (*.pkl)")
        self.sensor_blobs = Path(sensor_blobs) if sensor_blobs is not None else None
        self.map_source = (map_source or NuplanMapSource(map_root)) if with_map else None
        self.camera_config = CameraConfig.from_any(camera_config)
        self.with_images = with_images
        self.tokens = set(tokens) if tokens is not None else None
        self.frame_interval = frame_interval
        self.has_route = has_route

    def scenes(self) -> Iterator[Scene]:
        for path in self.log_paths:
            frames = load_log(path)
            for current in scene_windows(frames, self.frame_interval, self.has_route, self.tokens):
                try:
                    yield scene_from_log(frames, current, self.sensor_blobs, self.map_source, self.camera_config, self.with_images)
                except (KeyError, TypeError, IndexError) as e:
                    raise LogFormatError(f"{path}: frame {current} (token {frames[current]['token']!r}): "
                                         f"{type(e).__name__}: {e}") from e

    def __iter__(self) -> Iterator[Scene]:
        return self.scenes()



# --- conversion into the project's dataset format -------------------------------------------------------------


def convert_logs(reader: NavsimLogReader, out: str | Path, split: str, shard_size: int = 256,
                 progress: bool = True) -> dict:
    """Write every scene of `reader` as a dataset (`sim.dataset` shards + manifest) that SFT, GRPO and
    evaluation read like a synthetic one. NAVSIM scenes are `pos` samples of family "navsim"."""
    from tqdm import tqdm

    from sim.dataset import SHARD_PATTERN, scene_to_row, write_manifest, write_shard

    out = Path(out)
    if (out / "manifest.json").exists():
        raise FileExistsError(f"{out} already holds a dataset: choose another --out")
    rows, shards, count = [], [], 0
    bar = tqdm(desc=f"{split} scenes", unit="scene", disable=not progress)

    def flush():
        path = out / SHARD_PATTERN.format(len(shards))
        write_shard(path, rows, {"source": "navsim", "split": split})
        shards.append({"file": path.name, "rows": len(rows)})
        rows.clear()

    for scene in reader:
        scene.family = "navsim"
        rows.append(scene_to_row(scene, split))
        count += 1
        bar.update(1)
        if len(rows) == shard_size:
            flush()
    if rows:
        flush()
    bar.close()
    if count == 0:
        raise LogFormatError(f"{reader.log_paths[0].parent}: no scene passed the filter (route, window length, tokens)")
    cfg = reader.camera_config
    manifest = {
        "split": split, "num_scenes": count, "source": "navsim",
        "logs": [str(p) for p in reader.log_paths],
        "counts": {"navsim": {"pos": count, "neg": 0, "rec": 0}},
        "counts_by_sample_type": {"pos": count, "neg": 0, "rec": 0},
        "image_size": [cfg.height, cfg.width] if reader.with_images else None,
        "cameras": list(cfg.names) if reader.with_images else [], "shards": shards,
    }
    write_manifest(out, manifest)
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description="Convert NAVSIM / OpenScene logs into a dataset for SFT, GRPO and evaluation: "
                    "python -m sim.navsim_logs --logs navsim_logs/navtrain --sensor-blobs sensor_blobs/navtrain "
                    "--out data/navsim/train --split train")
    parser.add_argument("--logs", required=True, help="a log pickle or a directory of them (navsim_logs/<split>)")
    parser.add_argument("--sensor-blobs", help="sensor_blobs/<split> (needed for camera images)")
    parser.add_argument("--out", required=True, help="dataset directory to write")
    parser.add_argument("--split", default="train")
    parser.add_argument("--maps-root", help="nuPlan maps (default: $NUPLAN_MAPS_ROOT)")
    parser.add_argument("--no-map", action="store_true", help="scenes without map (imitation only; not scorable)")
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--tokens", help="a file with one scene token per line (e.g. a NAVSIM split's tokens)")
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args(argv)
    tokens = Path(args.tokens).read_text().split() if args.tokens else None
    try:
        reader = NavsimLogReader(args.logs, args.sensor_blobs, with_map=not args.no_map, map_root=args.maps_root,
                                 camera_config={"height": args.height, "width": args.width},
                                 with_images=not args.no_images, tokens=tokens)
        manifest = convert_logs(reader, args.out, args.split, args.shard_size)
    except (LogFormatError, MapUnavailableError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {manifest['num_scenes']} scenes in {len(manifest['shards'])} shard(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
