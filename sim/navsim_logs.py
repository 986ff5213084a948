"""Scenes from NAVSIM / OpenScene logs: log pickles and camera blobs -> `Scene` objects.

Layout (NAVSIM's, under $OPENSCENE_DATA_ROOT): `navsim_logs/<split>/<log_name>.pkl` and
`sensor_blobs/<split>/<log_name>/<CAM_xx|MergedPointCloud>/...` for the splits `trainval`, `test` and `mini`.
NAVSIM's named subsets are scene filters over those splits, not directories: navtrain = the trainval logs
filtered by `scene_filter/navtrain.yaml` (log names + scene tokens), navtest = the test logs filtered by
`navtest.yaml`. `read_scene_filter` reads such a YAML into the reader's filter arguments.

A log pickle is a list of per-frame dicts at 2 Hz (fields in navsim_pdm.md 2.1). A scene is a window of
4 history frames and 10 future frames, named by the token of its current frame (the 4th), slid over the log
as NAVSIM's SceneFilter does. The scene frame is the ego rear-axle frame of the current frame.

Conventions follow NAVSIM's loader (`navsim/common/dataclasses.py`) so values match it exactly:
* ego heading: `Quaternion(ego2global_rotation).yaw_pitch_roll[0]` of pyquaternion (`quaternion_yaw`), the
  yaw OpenScene subtracted from the box headings; on a pitched ego it differs from the exact z-y-x yaw.
* cameras: `sensor2lidar_rotation` / `sensor2lidar_translation` are used as stored as the camera's pose on
  the ego (nuPlan stores camera extrinsics relative to the ego frame; OpenScene copies them under that
  name); `lidar2ego` is not applied.
* a frame without `anns` (logs of OpenScene's test conversion) is a frame without annotated agents; scenes
  built from such frames have no agents and no static objects, so their scores ignore other road users.
* images are centre-cropped to the configured aspect and resized; without images the intrinsics are mapped
  as for an OpenScene image of `OPENSCENE_IMAGE_SIZE` (1920 x 1080) unless another source size is given.

Trust: a log pickle is a program, not just data. Logs are read by `sim.log_pickle.load_log_pickle`: a
format check first (regular file, size, pickle header), then an unpickler that admits only the plain data
and numpy types OpenScene logs hold and refuses anything else before calling it. Still, read only logs from
OpenScene / NAVSIM's own distribution; `trusted=True` reads with plain `pickle` (runs what the file says).

Maps come from a `MapSource` (nuPlan's map API by default, see `sim.navsim_map`); `with_map=False` gives
scenes without map and without traffic lights (a light names a lane connector of the map).

`python -m sim.navsim_logs --help` converts logs into a dataset (`sim.navsim_convert`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from sim import conventions as C
from sim.cameras import CameraConfig
from sim.geometry import absolute_to_relative, relative_to_absolute, rotate_vectors
from sim.log_pickle import MAX_LOG_BYTES, LogFormatError, UnsafePickleError, load_log_pickle
from sim.navsim_map import MapSource, NuplanMapSource, map_name_of
from sim.scene import Agent, Camera, EgoState, MapData, Scene, StaticObject, TrafficLight

__all__ = ["LogFormatError", "UnsafePickleError", "MissingBlobError", "NavsimLogReader", "load_log",
           "scene_windows", "read_scene_filter", "quaternion_yaw", "scene_from_log", "OPENSCENE_IMAGE_SIZE"]

WINDOW = C.NUM_HISTORY_FRAMES + C.NUM_FUTURE_FRAMES  # 14 frames = C.AGENT_TIMES_S
OPENSCENE_IMAGE_SIZE = (1920, 1080)  # (width, height) of every OpenScene camera image
REQUIRED_KEYS = ("token", "log_name", "map_location", "ego2global_translation", "ego2global_rotation",
                 "ego_dynamic_state", "driving_command", "roadblock_ids", "traffic_lights")


class MissingBlobError(LogFormatError):
    """A camera blob a scene needs is not under `sensor_blobs`: `path` (the blob), `token` (the scene) and,
    when raised after conversion skipped scenes, `skipped` (how many)."""

    def __init__(self, path: Path, token: str, sensor_blobs: Optional[Path], skipped: int = 0):
        self.path, self.token, self.sensor_blobs, self.skipped = Path(path), str(token), sensor_blobs, skipped
        what = (f"none of the {skipped} selected scenes has its camera blobs (first missing: {self.path}, scene "
                f"{self.token})") if skipped else f"{self.path}: camera blob of scene {self.token} is missing"
        super().__init__(
            f"{what}. Point sensor_blobs at sensor_blobs/<split> of the same split as the logs, select the "
            "scenes whose blobs you have (tokens or a scene filter), skip scenes without blobs "
            "(missing_blobs='skip'), or read without images (with_images=False)")


def load_log(path: str | Path, max_bytes: int = MAX_LOG_BYTES, trusted: bool = False) -> list[dict]:
    """The frames of one OpenScene log pickle, checked for the keys the reader needs (`anns` is optional).

    The file is format-checked and read without running code unless `trusted` (see `sim.log_pickle`)."""
    path = Path(path)
    frames = load_log_pickle(path, max_bytes=max_bytes, trusted=trusted)
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise LogFormatError(f"{path}: a log pickle holds a list of per-frame dicts, found {type(frames).__name__}")
    for i, frame in enumerate(frames):
        missing = [k for k in REQUIRED_KEYS if k not in frame]
        if missing:
            raise LogFormatError(f"{path}: frame {i} (token {frame.get('token')!r}) lacks key(s) {missing}")
        anns = frame.get("anns")
        if anns is not None and not isinstance(anns, dict):
            raise LogFormatError(f"{path}: frame {i} (token {frame['token']!r}): anns is a "
                                 f"{type(anns).__name__}, expected a dict of gt_boxes, gt_names, ...")
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


def read_scene_filter(path: str | Path) -> dict[str, Any]:
    """The reader's filter arguments (`tokens`, `log_names`, `frame_interval`, `has_route`, `max_scenes`)
    from one of NAVSIM's scene-filter YAMLs (`navsim/planning/script/config/common/train_test_split/
    scene_filter/<name>.yaml`, e.g. navtrain.yaml, navtest.yaml). Raises ValueError naming the file and key
    for a filter this reader cannot follow: a window other than 4 history + 10 future frames, or synthetic
    scenes. Keys for synthetic scenes when they are off, and Hydra's `_target_` / `_convert_`, are ignored."""
    import yaml

    path = Path(path)
    try:
        with open(path) as f:
            spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the scene filter ({type(e).__name__}: {e})") from e
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a scene filter is a YAML mapping (num_history_frames, tokens, ...), "
                         f"found {type(spec).__name__}")
    for key, want in (("num_history_frames", C.NUM_HISTORY_FRAMES), ("num_future_frames", C.NUM_FUTURE_FRAMES)):
        if spec.get(key, want) != want:
            raise ValueError(f"{path}: {key} is {spec[key]!r}; this reader builds scenes of "
                             f"{C.NUM_HISTORY_FRAMES} history + {C.NUM_FUTURE_FRAMES} future frames "
                             "(the navtrain / navtest filters)")
    if spec.get("include_synthetic_scenes"):
        raise ValueError(f"{path}: include_synthetic_scenes is set; synthetic scenes are not read from logs")
    interval = spec.get("frame_interval")
    interval = WINDOW if interval is None else interval  # NAVSIM's default: non-overlapping windows
    if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
        raise ValueError(f"{path}: frame_interval must be an integer >= 1, found {interval!r}")
    has_route = spec.get("has_route", True)
    if not isinstance(has_route, bool):
        raise ValueError(f"{path}: has_route must be true or false, found {has_route!r}")
    max_scenes = spec.get("max_scenes")
    if max_scenes is not None and (not isinstance(max_scenes, int) or max_scenes < 1):
        raise ValueError(f"{path}: max_scenes must be null or an integer >= 1, found {max_scenes!r}")
    lists = {}
    for key in ("tokens", "log_names"):
        value = spec.get(key)
        if value is not None and not isinstance(value, list):
            raise ValueError(f"{path}: {key} must be a list or null, found {type(value).__name__}")
        lists[key] = None if value is None else [str(v) for v in value]
    return {"tokens": lists["tokens"], "log_names": lists["log_names"], "frame_interval": interval,
            "has_route": has_route, "max_scenes": max_scenes}


# --- poses -------------------------------------------------------------------------------------------------


def quaternion_yaw(q: Sequence[float]) -> float:
    """Heading (rad) of the rotation quaternion (w, x, y, z) as NAVSIM and OpenScene take it: pyquaternion's
    `Quaternion(w, x, y, z).yaw_pitch_roll[0]` = atan2(2 (w z - x y), 1 - 2 (y^2 + z^2)) of the quaternion
    normalised the way pyquaternion does. Equal to the z-y-x yaw for a level ego; on a pitched and rolled
    ego it differs from it (by ~5e-3 rad at pitch 0.1), and it is the value OpenScene subtracted from the
    box headings, so it keeps boxes and ego poses consistent."""
    q = np.asarray(q, dtype=np.float64).reshape(4)
    sum_sq = float(np.dot(q, q))
    if abs(1.0 - sum_sq) >= 1e-14 and sum_sq > 0.0:  # pyquaternion's is_unit tolerance
        q = q / math.sqrt(sum_sq)
    return float(np.arctan2(2 * (q[0] * q[3] - q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2)))


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
    source_image_size: tuple[int, int] = OPENSCENE_IMAGE_SIZE,
) -> Scene:
    """The scene whose current frame is `frames[current]` (needs 3 frames before and 10 after).

    sensor_blobs: the split's blob directory (`sensor_blobs/<split>`); camera `data_path`s are relative to it.
    map_source: where the map comes from; None gives a scene without map and without traffic lights.
    camera_config: image size and camera names; with_images: load and resize the history images.
    source_image_size: (width, height) of the logged images, for the intrinsics when no image is loaded.
    Frames without `anns` contribute no agents. Raises `MissingBlobError` when a history image is absent.
    """
    if current < C.NUM_HISTORY_FRAMES - 1 or current + C.NUM_FUTURE_FRAMES >= len(frames):
        raise ValueError(f"frame {current} has no full window of {C.NUM_HISTORY_FRAMES} + {C.NUM_FUTURE_FRAMES} frames "
                         f"in a log of {len(frames)} frames")
    window = list(frames[current - C.NUM_HISTORY_FRAMES + 1: current + C.NUM_FUTURE_FRAMES + 1])
    now = window[C.AGENT_CURRENT_INDEX]
    # Cameras first: a scene whose blobs are missing fails before the map is queried.
    cameras = _cameras(window, CameraConfig.from_any(camera_config), sensor_blobs, with_images, source_image_size)
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
    """Agents tracked over the window by track token, and static objects (their box at the frame nearest t = 0).
    A frame without `anns` (or with `anns` None) has no annotated objects."""
    n = len(window)
    tracks: dict[str, _Track] = {}
    poses: dict[str, np.ndarray] = {}
    velocities: dict[str, np.ndarray] = {}
    for k, frame in enumerate(window):
        anns = frame.get("anns")
        if anns is None:
            continue
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


def _cameras(window: Sequence[dict], config: CameraConfig, sensor_blobs: Optional[Path], with_images: bool,
             source_image_size: tuple[int, int] = OPENSCENE_IMAGE_SIZE) -> list[Camera]:
    """The configured cameras of the current frame. The pose on the ego is `sensor2lidar_*` as stored, as
    NAVSIM uses it (nuPlan's camera extrinsics are relative to the ego frame); `lidar2ego` is not applied."""
    now = window[C.AGENT_CURRENT_INDEX]
    cams = now.get("cams") or {}
    if not cams:
        return []
    if with_images and sensor_blobs is None:
        raise ValueError("loading camera images needs `sensor_blobs` (the split's sensor_blobs directory)")
    if with_images:  # every blob before decoding any, so a scene with a missing blob costs no decoding
        for frame in window[: C.NUM_HISTORY_FRAMES]:
            for name in config.names:
                entry = (frame.get("cams") or {}).get(name)
                if entry is not None and not (Path(sensor_blobs) / entry["data_path"]).is_file():
                    raise MissingBlobError(Path(sensor_blobs) / entry["data_path"], now["token"], Path(sensor_blobs))
    cameras = []
    for name in config.names:
        if name not in cams:
            raise LogFormatError(f"frame {now['token']!r}: cams has no {name} (has {sorted(cams)})")
        entry = cams[name]
        rotation = np.asarray(entry["sensor2lidar_rotation"], dtype=np.float64).reshape(3, 3)
        translation = np.asarray(entry["sensor2lidar_translation"], dtype=np.float64).reshape(3)
        intrinsics = np.asarray(entry["cam_intrinsic"], dtype=np.float64).reshape(3, 3)
        images = None
        if with_images:
            frames = []
            for frame in window[: C.NUM_HISTORY_FRAMES]:
                frame_cams = frame.get("cams") or {}
                if name not in frame_cams:
                    raise LogFormatError(f"frame {frame['token']!r}: cams has no {name} (has {sorted(frame_cams)})")
                path = Path(sensor_blobs) / frame["cams"][name]["data_path"]
                image, k_out = load_camera_image(path, intrinsics, config.height, config.width)
                frames.append(image)
            images = np.stack(frames)
            intrinsics = k_out
        else:
            intrinsics = _crop_resize_intrinsics(intrinsics, source_image_size, config.height, config.width)
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


def _crop_resize_intrinsics(k: np.ndarray, source_size: tuple[int, int], height: int, width: int) -> np.ndarray:
    """Intrinsics after the centred crop of a `source_size` = (width, height) image to the aspect
    width / height and its resize to width x height (what `load_camera_image` does to the pixels)."""
    src_w, src_h = source_size
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
    sensor_blobs: `sensor_blobs/<split>` of the same split; needed when `with_images`.
    with_map: read maps through `map_source`, by default nuPlan's map API (`NuplanMapSource(map_root)`, which
      raises a `MapUnavailableError` saying what to install when nuplan is missing); False gives scenes
      without map (usable for imitation, not for scoring).
    tokens, log_names, frame_interval, has_route, max_scenes: NAVSIM's SceneFilter (`read_scene_filter`
      reads them from its YAML): keep scenes whose current-frame token is listed, logs whose name is listed.
    missing_blobs: "error" raises `MissingBlobError` (naming the blob) for a scene whose history images are
      not under `sensor_blobs`; "skip" skips such scenes and records them in `skipped` (token, first missing
      blob) for the last pass over `scenes()`.
    source_image_size: (width, height) of the logged images, for the intrinsics when `with_images` is False.
    trusted, max_log_bytes: how log pickles are loaded (see `sim.log_pickle`; trusted=True runs plain pickle).
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
        log_names: Optional[Sequence[str]] = None,
        max_scenes: Optional[int] = None,
        missing_blobs: str = "error",
        source_image_size: tuple[int, int] = OPENSCENE_IMAGE_SIZE,
        trusted: bool = False,
        max_log_bytes: int = MAX_LOG_BYTES,
    ):
        if missing_blobs not in ("error", "skip"):
            raise ValueError(f"missing_blobs must be 'error' or 'skip', not {missing_blobs!r}")
        if isinstance(logs, (str, Path)):
            logs = Path(logs)
            if not logs.exists():
                raise LogFormatError(f"{logs}: no such log pickle or directory (navsim_logs/<split>)")
            self.log_paths = sorted(logs.glob("*.pkl")) if logs.is_dir() else [logs]
        else:
            self.log_paths = [Path(p) for p in logs]
        if not self.log_paths:
            raise LogFormatError(f"{logs}: no log pickles (*.pkl)")
        self.missing_logs: list[str] = []  # log names the filter lists that are not among `logs`
        if log_names is not None:
            wanted = set(log_names)
            present = {p.stem for p in self.log_paths}
            self.missing_logs = sorted(wanted - present)
            self.log_paths = [p for p in self.log_paths if p.stem in wanted]
            if not self.log_paths:
                raise LogFormatError(f"{logs}: none of the {len(wanted)} logs the filter names is here (e.g. "
                                     f"{self.missing_logs[0]!r}); is the filter for another split?")
        if with_images:
            if sensor_blobs is None:
                raise ValueError("reading camera images needs sensor_blobs (sensor_blobs/<split>); "
                                 "or read without images (with_images=False)")
            if not Path(sensor_blobs).is_dir():
                raise LogFormatError(f"{sensor_blobs}: sensor_blobs is not a directory (sensor_blobs/<split>)")
        self.sensor_blobs = Path(sensor_blobs) if sensor_blobs is not None else None
        self.map_source = (map_source or NuplanMapSource(map_root)) if with_map else None
        self.camera_config = CameraConfig.from_any(camera_config)
        self.with_images = with_images
        self.tokens = set(tokens) if tokens is not None else None
        self.frame_interval = frame_interval
        self.has_route = has_route
        self.max_scenes = max_scenes
        self.missing_blobs = missing_blobs
        self.source_image_size = tuple(source_image_size)
        self.trusted = trusted
        self.max_log_bytes = max_log_bytes
        self.skipped: list[tuple[str, Path]] = []

    def scenes(self) -> Iterator[Scene]:
        """The scenes of every log in order; with missing_blobs="skip", `skipped` lists those left out."""
        self.skipped = []
        selected = 0
        for path in self.log_paths:
            frames = load_log(path, self.max_log_bytes, self.trusted)
            for current in scene_windows(frames, self.frame_interval, self.has_route, self.tokens):
                if self.max_scenes is not None and selected >= self.max_scenes:
                    return
                selected += 1
                try:
                    scene = scene_from_log(frames, current, self.sensor_blobs, self.map_source, self.camera_config,
                                           self.with_images, self.source_image_size)
                except MissingBlobError as e:
                    if self.missing_blobs == "error":
                        raise
                    self.skipped.append((e.token, e.path))
                    continue
                except (KeyError, TypeError, IndexError) as e:
                    raise LogFormatError(f"{path}: frame {current} (token {frames[current]['token']!r}): "
                                         f"{type(e).__name__}: {e}") from e
                yield scene

    def __iter__(self) -> Iterator[Scene]:
        return self.scenes()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m sim.navsim_logs`: the conversion CLI of `sim.navsim_convert`."""
    from sim.navsim_convert import main as convert_main

    return convert_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
