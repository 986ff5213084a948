"""The OpenScene log reader on a tiny log written here the way OpenScene's converter writes it, with tiny JPEGs."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from openscene_logs import Box, FrameSpec, openscene_frame
from PIL import Image
from scipy.spatial.transform import Rotation

from sim import conventions as C
from sim.geometry import points_to_relative
from sim.navsim_logs import LogFormatError, MissingBlobError, NavsimLogReader, load_log, quaternion_yaw, scene_windows
from sim.navsim_map import LaneNode, MapUnavailableError, route_centerline, starting_lane
from sim.scene import Lane, MapArea, MapData

HEADING = math.radians(30.0)  # the ego drives north-east in the global frame
START = np.array([1000.0, 2000.0])
SPEED = 5.0
NUM_FRAMES = 16
LOG = "2021.05.12.test_log"
LIGHT_LANE = 4711  # nuPlan lane connector ids are integers in the logs, strings in the map


def _quaternion(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _ego_global(k: int) -> np.ndarray:
    d = SPEED * 0.5 * k
    return np.array([START[0] + d * math.cos(HEADING), START[1] + d * math.sin(HEADING), HEADING])


def _car_global(k: int) -> np.ndarray:
    """A car driving due north at 4 m/s, 20 m ahead-left of the ego's start."""
    return np.array([START[0] + 15.0, START[1] + 12.0 + 4.0 * 0.5 * k, math.pi / 2])


def _to_ego(ego: np.ndarray, pose: np.ndarray) -> np.ndarray:
    c, s = math.cos(ego[2]), math.sin(ego[2])
    dx, dy = pose[0] - ego[0], pose[1] - ego[1]
    return np.array([c * dx + s * dy, -s * dx + c * dy, pose[2] - ego[2]])


def _write_jpeg(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 36), colour).save(path, format="JPEG", quality=95)


def _frame(k: int, blobs) -> dict:
    ego = _ego_global(k)
    car = _car_global(k)
    boxes = [Box("car_track", "vehicle", (car[0], car[1], 0.8), car[2], (4.5, 1.9, 1.6), (0.0, 4.0, 0.0)),
             Box("cone_track", "traffic_cone", (START[0] + 30.0, START[1] + 5.0, 0.3), 0.0, (0.4, 0.4, 0.6))]
    if 5 <= k <= 8:  # a pedestrian seen in a few frames only
        boxes.append(Box("ped_track", "pedestrian", (START[0] + 8.0, START[1] + 10.0, 0.9), 0.0, (0.6, 0.6, 1.8)))
    paths = {}
    for name, colour in (("CAM_F0", (200, 30, 30)), ("CAM_L0", (30, 200, 30)), ("CAM_R0", (30, 30, 200))):
        paths[name] = f"{LOG}/{name}/{k:04d}.jpg"
        _write_jpeg(blobs / paths[name], colour)
    for name in ("CAM_L1", "CAM_L2", "CAM_R1", "CAM_R2", "CAM_B0"):
        paths[name] = f"{LOG}/{name}/{k:04d}.jpg"  # not read: the scene uses 3 cameras
    spec = FrameSpec(
        ego_xyz=(ego[0], ego[1], 0.0), ego_rotation=Rotation.from_euler("z", ego[2]),
        dynamic_state=(SPEED, 0.0, 0.1 * k, 0.0), boxes=boxes,
        traffic_lights=[(LIGHT_LANE, k < 8)] if k != 10 else [],
        roadblock_ids=[] if k == 4 else ["rb_a", "rb_b"], driving_command=(0, 0, 1, 0))
    # 64 x 36 test JPEGs; lidar2ego 1 m forward, 1.5 m up (not part of the camera pose on the ego)
    return openscene_frame(k, spec, LOG, paths, lidar2ego_translation=(1.0, 0.0, 1.5),
                           cam_intrinsic=np.array([[51.5, 0.0, 32.0], [0.0, 51.5, 18.5], [0.0, 0.0, 1.0]]),
                           num_frames=NUM_FRAMES)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("navsim")
    blobs = root / "sensor_blobs" / "mini"
    frames = [_frame(k, blobs) for k in range(NUM_FRAMES)]
    logs = root / "navsim_logs" / "mini"
    logs.mkdir(parents=True)
    with open(logs / f"{LOG}.pkl", "wb") as f:
        pickle.dump(frames, f, protocol=pickle.HIGHEST_PROTOCOL)
    return root


class GlobalRectangleMap:
    """A map given in global coordinates (a lane connector along the ego's road) moved into the scene
    frame the way a map source must: the reader passes the global pose of the scene frame."""

    def __init__(self):
        self.calls = []

    def map_data(self, map_name, origin, route_roadblock_ids):
        self.calls.append((map_name, tuple(route_roadblock_ids)))
        c, s = math.cos(HEADING), math.sin(HEADING)
        along = lambda d, lat: START + d * np.array([c, s]) + lat * np.array([-s, c])  # noqa: E731
        road = np.array([along(-50, -2), along(100, -2), along(100, 2), along(-50, 2)])
        connector = np.array([along(40, -2), along(60, -2), along(60, 2), along(40, 2)])
        local = lambda pts: points_to_relative(origin, pts)  # noqa: E731
        return MapData(
            areas=[MapArea("rb_a", "roadblock", local(road))],
            lanes=[Lane(str(LIGHT_LANE), "lane_connector", local(connector), local(np.array([along(40, 0), along(60, 0)])), True)],
            centerline=local(np.array([along(-50, 0), along(100, 0)])),
        )


def test_windows_follow_navsim_scene_filter(log_dir):
    frames = load_log(log_dir / "navsim_logs/mini" / f"{LOG}.pkl")
    # 16 frames hold windows with current frames 3, 4, 5 (each needs 10 future frames); 4 has no route.
    assert scene_windows(frames) == [3, 5]
    assert scene_windows(frames, has_route=False) == [3, 4, 5]
    assert scene_windows(frames, tokens={"tok05"}) == [5]


def test_reader_without_map_gives_ego_agents_command_and_cameras(log_dir):
    reader = NavsimLogReader(log_dir / "navsim_logs/mini", sensor_blobs=log_dir / "sensor_blobs/mini", with_map=False,
                             camera_config={"height": 16, "width": 32}, tokens=["tok05"])
    (scene,) = list(reader)
    assert scene.token == "tok05" and scene.log_name == LOG and scene.family == "navsim"
    # The scene frame is the current ego frame: history straight behind, future straight ahead (5 m/s, 2 Hz).
    np.testing.assert_allclose(scene.history_trajectory(), [[-7.5, 0, 0], [-5.0, 0, 0], [-2.5, 0, 0], [0, 0, 0]], atol=1e-9)
    np.testing.assert_allclose(scene.future[:, 0], SPEED * C.future_times(), atol=1e-9)
    np.testing.assert_allclose(scene.future[:, 1:], 0.0, atol=1e-9)
    np.testing.assert_allclose(scene.human_trajectory, scene.future[:8])
    assert [e.ax for e in scene.ego_history] == pytest.approx([0.2, 0.3, 0.4, 0.5])  # frames 2..5
    assert scene.ego.vx == SPEED
    assert C.DRIVING_COMMANDS[scene.driving_command] == "right"

    agents = {a.token: a for a in scene.agents}
    car = agents["car_track"]
    assert car.type == "vehicle" and car.present().all()
    for k in range(len(C.AGENT_TIMES_S)):  # window frame k is log frame k + 2
        np.testing.assert_allclose(car.poses[k], _to_ego(_ego_global(5), _car_global(k + 2)), atol=1e-9)
    # Velocity due north in the global frame = heading 90 - 30 = 60 degrees in the scene frame.
    np.testing.assert_allclose(car.velocities[3], 4.0 * np.array([math.cos(math.radians(60)), math.sin(math.radians(60))]), atol=1e-9)
    ped = agents["ped_track"]
    assert ped.present().tolist() == [k + 2 in (5, 6, 7, 8) for k in range(14)]
    (cone,) = scene.static_objects
    assert cone.type == "traffic_cone"
    np.testing.assert_allclose([cone.x, cone.y], _to_ego(_ego_global(5), np.array([START[0] + 30, START[1] + 5, 0]))[:2], atol=1e-9)

    assert scene.map.lanes == [] and scene.traffic_lights == []  # no map: no lights either
    cams = {c.name: c for c in scene.cameras}
    assert list(cams) == list(C.CAMERA_NAMES)
    assert cams["CAM_F0"].images.shape == (4, 16, 32, 3)
    assert np.abs(cams["CAM_F0"].images[..., 0].astype(int) - 200).max() <= 12  # the red test JPEG, resized
    # 64 x 36 cropped to 2:1 (64 x 32, 2 rows off the top) then scaled by 32 / 64.
    np.testing.assert_allclose(cams["CAM_F0"].intrinsics, [[25.75, 0, 16.0], [0, 25.75, 8.25], [0, 0, 1]], atol=1e-9)
    # The pose on the ego is sensor2lidar as stored (NAVSIM's use); lidar2ego (1 m forward, 1.5 m up) is not applied.
    np.testing.assert_array_equal(cams["CAM_F0"].sensor2ego_translation, [1.6, 0.0, 1.5])


def test_reader_with_a_map_source_links_lights_to_lane_connectors(log_dir):
    source = GlobalRectangleMap()
    reader = NavsimLogReader(log_dir / "navsim_logs/mini", map_source=source, with_images=False, tokens=["tok05"])
    (scene,) = list(reader)
    assert source.calls == [("us-nv-las-vegas-strip", ("rb_a", "rb_b"))]
    (light,) = scene.traffic_lights
    assert light.lane_connector_id == str(LIGHT_LANE) and light.head is None
    # Log frames 2..15: red before frame 8, green after, no entry in frame 10.
    assert light.states == ["red"] * 6 + ["green", "green", "unknown"] + ["green"] * 5
    # The map arrived in the scene frame: the road's centre line runs along the scene x axis.
    np.testing.assert_allclose(scene.map.centerline[:, 1], 0.0, atol=1e-9)


def test_reading_maps_without_nuplan_says_what_to_install(log_dir):
    with pytest.raises(MapUnavailableError, match="nuplan-devkit.*NUPLAN_MAPS_ROOT.*with_map=False"):
        NavsimLogReader(log_dir / "navsim_logs/mini", with_images=False)


def test_bad_logs_get_errors_naming_the_file_and_key(tmp_path, log_dir):
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(LogFormatError, match="broken.pkl"):
        load_log(broken)
    frames = load_log(log_dir / "navsim_logs/mini" / f"{LOG}.pkl")
    del frames[3]["ego_dynamic_state"]
    missing = tmp_path / "missing.pkl"
    missing.write_bytes(pickle.dumps(frames))
    with pytest.raises(LogFormatError, match=r"missing.pkl: frame 3 .*ego_dynamic_state"):
        load_log(missing)
    (tmp_path / "no_blobs").mkdir()
    reader = NavsimLogReader(log_dir / "navsim_logs/mini", sensor_blobs=tmp_path / "no_blobs", with_map=False)
    with pytest.raises(MissingBlobError, match="no_blobs/.*CAM_F0.*jpg.*scene tok03.*missing_blobs='skip'"):
        next(iter(reader))
    with pytest.raises(LogFormatError, match="elsewhere: sensor_blobs is not a directory"):
        NavsimLogReader(log_dir / "navsim_logs/mini", sensor_blobs=tmp_path / "elsewhere", with_map=False)


def test_quaternion_yaw():
    assert quaternion_yaw(_quaternion(1.2)) == pytest.approx(1.2)
    assert quaternion_yaw(_quaternion(-2.9)) == pytest.approx(-2.9)


def test_route_centerline_follows_the_route_to_its_furthest_roadblock():
    def node(i, rb, x0, y, succ):
        xs = np.linspace(x0, x0 + 10, 3)
        return LaneNode(i, rb, np.column_stack([xs, np.full(3, y), np.zeros(3)]), succ)

    nodes = {
        "a1": node("a1", "A", 0, 0, ["b1", "x1"]),
        "a2": node("a2", "A", 0, 3, ["b2"]),
        "x1": node("x1", "X", 10, -5, []),  # off the route
        "b1": node("b1", "B", 10, 0, ["c1"]),
        "b2": node("b2", "B", 10, 3, []),
        "c1": node("c1", "C", 20, 0, []),
    }
    route = ["A", "B", "C"]
    start = starting_lane(nodes, ["a1", "a2", "b1", "b2", "c1"], np.array([2.0, 2.6, 0.0]))
    assert start == "a2"  # closest baseline
    assert starting_lane(nodes, ["a1", "a2"], np.array([2.0, 2.6, 0.0]), containing=["a1"]) == "a1"
    line = route_centerline(nodes, route, "a1")
    np.testing.assert_allclose(line[:, 0], [0, 5, 10, 10, 15, 20, 20, 25, 30])
    np.testing.assert_allclose(line[:, 1], 0.0)
    # From a2 the route can only reach B.
    assert route_centerline(nodes, route, "a2")[-1, 0] == 20.0


def test_log_scenes_round_trip_through_a_dataset_shard(log_dir, tmp_path):
    from data_scene_builders import assert_same
    from sim.dataset import SceneDataset, scene_to_row, write_shard

    reader = NavsimLogReader(log_dir / "navsim_logs/mini", sensor_blobs=log_dir / "sensor_blobs/mini",
                             map_source=GlobalRectangleMap(), camera_config={"height": 16, "width": 32})
    scenes = list(reader)
    write_shard(tmp_path / "shard-00000.parquet", [scene_to_row(s, "navtest") for s in scenes])
    back = list(SceneDataset(tmp_path / "shard-00000.parquet").scenes())
    assert [s.token for s in back] == ["tok03", "tok05"]
    for original, loaded in zip(scenes, back):
        assert_same(original, loaded)


def test_converted_logs_are_a_dataset_that_evaluation_scores(log_dir, tmp_path):
    from rl.evaluate import run_evaluation
    from rl.scene_store import SceneStore
    from sim.navsim_convert import convert_logs

    reader = NavsimLogReader(log_dir / "navsim_logs/mini", sensor_blobs=log_dir / "sensor_blobs/mini",
                             map_source=GlobalRectangleMap(), camera_config={"height": 16, "width": 32})
    manifest = convert_logs(reader, tmp_path / "navsim", "test", progress=False)
    assert manifest["num_scenes"] == 2 and manifest["counts_by_sample_type"] == {"pos": 2, "neg": 0, "rec": 0}
    assert manifest["skipped_missing_blobs"] == 0
    store = SceneStore(tmp_path / "navsim")
    assert store.tokens == ["tok03", "tok05"]
    assert store.scene(1).cameras[0].images.shape == (4, 16, 32, 3)
    summary = run_evaluation(str(tmp_path / "navsim"), None, ("v1",), baseline="ground_truth", show_progress=False)["v1"]
    assert summary["average"]["num_scenes"] == 2 and summary["failed"] == []
    with pytest.raises(FileExistsError):
        convert_logs(reader, tmp_path / "navsim", "test", progress=False)
