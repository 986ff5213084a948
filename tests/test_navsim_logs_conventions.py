"""The NAVSIM log reader follows NAVSIM's conventions on logs built as OpenScene's converter writes them
(camera poses, intrinsics without images, headings on a pitched ego, logs without `anns`), the conversion CLI
names its own flags and reports scenes without blobs, and log pickles are loaded without running code."""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
from openscene_logs import CAMERAS, Box, FrameSpec, openscene_frame
from PIL import Image
from scipy.spatial.transform import Rotation

from sim.dataset import SceneDataset, find_manifest, read_manifest
from sim.geometry import wrap_angle
from sim.log_pickle import check_pickle_file
from sim.navsim_convert import main
from sim.navsim_logs import (LogFormatError, NavsimLogReader, UnsafePickleError, load_log, quaternion_yaw,
                             read_scene_filter)
from sim.scene import MapData

LOG = "2021.06.07.12.54.00_veh-35_01843_02314"
NUM_FRAMES = 15  # two scenes: current frames 3 and 4 (tokens tok03, tok04)
PITCH = 0.1


def _yaw(k: int) -> float:
    return 0.3 + 0.1 * k


def _specs(pitch: float = 0.0) -> list[FrameSpec]:
    """The ego turning left at 5 m/s (on a slope of `pitch` rad) past a car parked at heading 1.0 rad."""
    specs, xy = [], np.zeros(2)
    for k in range(NUM_FRAMES):
        car = Box("car", "vehicle", (30.0, 12.0, 0.8), 1.0, (4.5, 1.9, 1.6))
        rotation = Rotation.from_euler("ZYX", [_yaw(k), pitch, 0.0])  # yaw, then pitch about the new y axis
        specs.append(FrameSpec((float(xy[0]), float(xy[1]), 2.5 * k * math.sin(pitch)), rotation,
                               (5.0, 0.0, 0.0, 0.0), [car]))
        xy = xy + 2.5 * np.array([math.cos(_yaw(k)), math.sin(_yaw(k))])
    return specs


def _write_log(root, specs, images: bool = False, **frame_kwargs):
    """navsim_logs/mini/<LOG>.pkl (and sensor_blobs/mini with 64 x 36 JPEGs of the 3 cameras read)."""
    logs, blobs = root / "navsim_logs" / "mini", root / "sensor_blobs" / "mini"
    logs.mkdir(parents=True)
    blobs.mkdir(parents=True)
    frames = []
    for k, spec in enumerate(specs):
        paths = {name: f"{LOG}/{name}/{k:04d}.jpg" for name in CAMERAS}
        if images:
            for name in ("CAM_F0", "CAM_L0", "CAM_R0"):
                (blobs / paths[name]).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (64, 36), (90, 90, 90)).save(blobs / paths[name], format="JPEG")
        frames.append(openscene_frame(k, spec, LOG, paths, num_frames=len(specs), **frame_kwargs))
    with open(logs / f"{LOG}.pkl", "wb") as f:
        pickle.dump(frames, f, protocol=pickle.HIGHEST_PROTOCOL)
    return logs, blobs, frames


class RecordingMap:
    """A map source that records the global scene origin the reader asks for."""

    def __init__(self):
        self.origins = []

    def map_data(self, map_name, origin, route_roadblock_ids):
        self.origins.append(np.array(origin))
        return MapData()


# --- conventions -----------------------------------------------------------------------------------------


def test_camera_pose_on_the_ego_is_sensor2lidar_as_stored(tmp_path):
    turned = Rotation.from_euler("z", math.pi / 2)  # a lidar2ego that would move every camera if applied
    logs, _, frames = _write_log(tmp_path, _specs(), lidar2ego_rotation=turned, lidar2ego_translation=(1.5, 0.3, 1.8))
    (scene, _) = NavsimLogReader(logs, with_map=False, with_images=False,
                                 camera_config={"names": ("CAM_F0", "CAM_L0", "CAM_R0")})
    assert [c.name for c in scene.cameras] == ["CAM_F0", "CAM_L0", "CAM_R0"]
    for camera in scene.cameras:
        stored = frames[3]["cams"][camera.name]
        np.testing.assert_array_equal(camera.sensor2ego_rotation, stored["sensor2lidar_rotation"])
        np.testing.assert_array_equal(camera.sensor2ego_translation, stored["sensor2lidar_translation"])
        composed = turned.as_matrix() @ stored["sensor2lidar_rotation"]
        assert np.abs(composed - camera.sensor2ego_rotation).max() > 0.5  # the test tells the two apart


def test_intrinsics_without_images_are_those_of_a_1920x1080_openscene_image(tmp_path):
    k = np.array([[1545.0, 0.0, 987.0], [0.0, 1540.0, 558.0], [0.0, 0.0, 1.0]])  # principal point off centre
    logs, _, _ = _write_log(tmp_path, _specs(), cam_intrinsic=k)
    (scene, _) = NavsimLogReader(logs, with_map=False, with_images=False, camera_config={"height": 224, "width": 448})
    # 1920 x 1080 centre-cropped to 2:1 is 1920 x 960 (60 rows off the top), then scaled by 448 / 1920.
    s = 448 / 1920
    expected = [[1545 * s, 0, 987 * s], [0, 1540 * s, (558 - 60) * s], [0, 0, 1]]
    for camera in scene.cameras:
        np.testing.assert_allclose(camera.intrinsics, expected, rtol=1e-12)
    assert scene.cameras[0].intrinsics[0, 0] == pytest.approx(360.5)
    # Another source size on request: 1600 x 900 -> 1600 x 800 (50 rows off), scaled by 448 / 1600.
    (scene, _) = NavsimLogReader(logs, with_map=False, with_images=False, camera_config={"height": 224, "width": 448},
                                 source_image_size=(1600, 900))
    s = 448 / 1600
    np.testing.assert_allclose(scene.cameras[0].intrinsics, [[1545 * s, 0, 987 * s], [0, 1540 * s, 508 * s], [0, 0, 1]])


def test_quaternion_yaw_is_openscene_yaw_on_a_pitched_ego():
    # R = Rz(psi) Ry(theta): pyquaternion's yaw is atan2(-R01, R00) = atan2(sin psi, cos psi cos theta).
    psi, theta = 0.7, PITCH
    expected = math.atan2(math.sin(psi), math.cos(psi) * math.cos(theta))
    x, y, z, w = Rotation.from_euler("ZYX", [psi, theta, 0.0]).as_quat()
    assert quaternion_yaw([w, x, y, z]) == pytest.approx(expected, abs=1e-15)
    assert abs(expected - psi) > 2e-3  # the exact z-y-x yaw (psi) is another number
    assert quaternion_yaw([2 * w, 2 * x, 2 * y, 2 * z]) == pytest.approx(expected, abs=1e-15)  # normalised first
    assert quaternion_yaw([math.cos(0.6), 0.0, 0.0, math.sin(0.6)]) == pytest.approx(1.2, abs=1e-15)  # level


def test_headings_on_a_pitched_ego_follow_openscene_yaw(tmp_path):
    logs, _, frames = _write_log(tmp_path, _specs(pitch=PITCH))
    source = RecordingMap()
    (scene, _) = NavsimLogReader(logs, map_source=source, with_images=False)
    expected = [math.atan2(math.sin(_yaw(k)), math.cos(_yaw(k)) * math.cos(PITCH)) for k in range(14)]
    current = expected[3]
    assert source.origins[0][2] == pytest.approx(current, abs=1e-12)
    headings = [e.heading for e in scene.ego_history] + list(scene.future[:, 2])
    np.testing.assert_allclose(headings, wrap_angle(np.array(expected) - current), atol=1e-12)
    # Future positions: the global track turned into the current frame by the same heading.
    xy = np.array([f["ego2global_translation"][:2] for f in frames[:14]])
    c, s = math.cos(current), math.sin(current)
    rel = xy[4:] - xy[3]
    np.testing.assert_allclose(scene.future[:, :2], np.column_stack([c * rel[:, 0] + s * rel[:, 1],
                                                                     -s * rel[:, 0] + c * rel[:, 1]]), atol=1e-9)
    # The parked car keeps its global heading 1.0 in every frame: 1.0 minus the current ego heading.
    (car,) = scene.agents
    np.testing.assert_allclose(car.poses[:, 2], wrap_angle(1.0 - current), atol=1e-12)


def test_frames_without_anns_are_frames_without_agents(tmp_path):
    logs, _, _ = _write_log(tmp_path / "test_split", _specs(), is_test=True)
    scenes = list(NavsimLogReader(logs, with_map=False, with_images=False))
    assert [s.token for s in scenes] == ["tok03", "tok04"]
    assert all(s.agents == [] and s.static_objects == [] for s in scenes)
    assert len(scenes[0].ego_history) == 4 and scenes[0].future.shape == (10, 3)

    mixed, _, frames = _write_log(tmp_path / "mixed", _specs())
    for frame in frames[:2]:
        del frame["anns"]
    with open(mixed / f"{LOG}.pkl", "wb") as f:
        pickle.dump(frames, f, protocol=pickle.HIGHEST_PROTOCOL)
    (scene, _) = NavsimLogReader(mixed, with_map=False, with_images=False)
    (car,) = scene.agents
    assert car.present().tolist() == [False, False] + [True] * 12


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_without_maps_names_its_own_flags(tmp_path, monkeypatch, capsys):
    logs, _, _ = _write_log(tmp_path, _specs())
    monkeypatch.setenv("NUPLAN_MAPS_ROOT", str(tmp_path / "no_maps"))
    rc = main(["--logs", str(logs), "--no-images", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--no-map" in err and "--maps-root" in err and "nuplan-devkit" in err
    assert "with_map" not in err and "`map_root`" not in err
    assert not (tmp_path / "out").exists()


def test_cli_without_tokens_skips_scenes_without_blobs_and_reports_them(tmp_path, capsys):
    logs, blobs, _ = _write_log(tmp_path, _specs(), images=True)
    missing = blobs / LOG / "CAM_F0" / "0000.jpg"  # history of tok03 only
    missing.unlink()
    out = tmp_path / "dataset"
    rc = main(["--logs", str(logs), "--sensor-blobs", str(blobs), "--out", str(out), "--no-map",
               "--height", "16", "--width", "32"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "1 scenes in 1 shard(s)" in printed
    assert f"skipped 1 scene(s) whose camera blobs are missing under {blobs} (first: {missing})" in printed
    manifest = read_manifest(out)
    assert manifest["num_scenes"] == 1 and manifest["skipped_missing_blobs"] == 1
    tokens = [t for batch in SceneDataset(out).batches(columns=["token"]) for t in batch.column("token").to_pylist()]
    assert tokens == ["tok04"]


def test_cli_with_tokens_stops_at_a_missing_blob_naming_it_and_the_flags(tmp_path, capsys):
    logs, blobs, _ = _write_log(tmp_path, _specs(), images=True)
    missing = blobs / LOG / "CAM_R0" / "0001.jpg"
    missing.unlink()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("tok03\ntok04\n")
    out = tmp_path / "dataset"
    rc = main(["--logs", str(logs), "--sensor-blobs", str(blobs), "--out", str(out), "--no-map", "--tokens", str(tokens)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"camera blob {missing} of scene tok03 is missing" in err
    assert "--sensor-blobs" in err and "--missing-blobs skip" in err and "missing_blobs=" not in err
    assert find_manifest(out) is None


def test_cli_when_no_scene_has_blobs_names_the_first_missing_one(tmp_path, capsys):
    logs, _, _ = _write_log(tmp_path, _specs())  # no JPEGs at all
    rc = main(["--logs", str(logs), "--sensor-blobs", str(tmp_path / "sensor_blobs/mini"), "--out",
               str(tmp_path / "dataset"), "--no-map"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "none of the 2 selected scenes has its camera blobs (first missing: " in err
    assert f"{LOG}/CAM_F0/0000.jpg, scene tok03)" in err and "--sensor-blobs" in err


def test_navsim_scene_filter_yaml_selects_logs_and_tokens(tmp_path):
    logs, _, _ = _write_log(tmp_path, _specs())
    navtrain = tmp_path / "navtrain.yaml"
    navtrain.write_text(
        "_target_: navsim.common.dataclasses.SceneFilter\n_convert_: 'all'\nnum_history_frames: 4\n"
        f"num_future_frames: 10\nframe_interval: 1\nhas_route: true\nmax_scenes: null\nlog_names:\n  - '{LOG}'\n"
        "  - '2021.10.05.07.49.39_veh-52_00934_01406'\ntokens:\n  - 'tok04'\n  - 'ffe0db4c4b5ed141'\n")
    selection = read_scene_filter(navtrain)
    assert selection == {"tokens": ["tok04", "ffe0db4c4b5ed141"], "frame_interval": 1, "has_route": True,
                         "max_scenes": None, "log_names": [LOG, "2021.10.05.07.49.39_veh-52_00934_01406"]}
    reader = NavsimLogReader(logs, with_map=False, with_images=False, **selection)
    assert [s.token for s in reader] == ["tok04"]
    assert reader.missing_logs == ["2021.10.05.07.49.39_veh-52_00934_01406"]

    two_stage = tmp_path / "navhard_two_stage.yaml"
    two_stage.write_text("num_history_frames: 4\nnum_future_frames: 8\ntokens: []\n")
    with pytest.raises(ValueError, match="navhard_two_stage.yaml: num_future_frames is 8"):
        read_scene_filter(two_stage)
    with pytest.raises(LogFormatError, match="none of the 1 logs the filter names is here"):
        NavsimLogReader(logs, with_map=False, with_images=False, log_names=["2021.other_log"])


# --- trust -----------------------------------------------------------------------------------------------


class _MakeDirectory:
    """Unpickles into a call of os.mkdir: what a crafted log could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def test_a_file_that_is_not_a_pickle_is_refused_before_unpickling(tmp_path):
    text = tmp_path / "frames.pkl"
    text.write_text("token,timestamp\ntok00,0\n")
    with pytest.raises(LogFormatError, match=r"frames.pkl: not a pickle: .* starts with b'to'"):
        load_log(text)
    # A protocol-0 pickle calling os.mkdir: refused by the header check, so nothing is unpickled.
    marker = tmp_path / "made_by_pickle"
    old = tmp_path / "old.pkl"
    old.write_bytes(f"c{os.mkdir.__module__}\nmkdir\n(V{marker}\ntR.".encode())
    with pytest.raises(LogFormatError, match=r"old.pkl: not a pickle: .*protocol 2-5 header"):
        load_log(old)
    assert not marker.exists()
    (tmp_path / "dir.pkl").mkdir()
    with pytest.raises(LogFormatError, match="dir.pkl: not a regular file"):
        load_log(tmp_path / "dir.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(LogFormatError, match="empty.pkl: empty file"):
        load_log(tmp_path / "empty.pkl")
    with pytest.raises(LogFormatError, match="absent.pkl: no such log pickle"):
        load_log(tmp_path / "absent.pkl")
    big = tmp_path / "big.pkl"
    big.write_bytes(pickle.dumps([{}] * 20, protocol=4))
    with pytest.raises(LogFormatError, match=r"big.pkl: \d+ bytes, more than the 16 bytes"):
        check_pickle_file(big, max_bytes=16)


def test_a_log_naming_other_globals_is_refused_without_calling_them(tmp_path, capsys):
    marker = tmp_path / "made_by_pickle"
    logs = tmp_path / "navsim_logs" / "mini"
    logs.mkdir(parents=True)
    crafted = logs / f"{LOG}.pkl"
    crafted.write_bytes(pickle.dumps([{"token": "tok00", "payload": _MakeDirectory(marker)}], protocol=4))
    with pytest.raises(UnsafePickleError, match=rf"{LOG}.pkl: the pickle names {os.mkdir.__module__}.mkdir"):
        load_log(crafted)
    assert not marker.exists()
    rc = main(["--logs", str(logs), "--no-images", "--no-map", "--out", str(tmp_path / "out")])
    assert rc == 2 and f"{crafted}: the pickle names {os.mkdir.__module__}.mkdir" in capsys.readouterr().err
    assert not marker.exists()
    # trusted=True is plain pickle: the call runs (the frame then lacks the reader's keys).
    with pytest.raises(LogFormatError, match="frame 0 .*lacks key"):
        load_log(crafted, trusted=True)
    assert marker.is_dir()


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_the_restricted_unpickler_reads_converter_logs_of_every_protocol_and_numpy_1(tmp_path):
    _, _, frames = _write_log(tmp_path, _specs(pitch=PITCH))
    frames[5]["traffic_lights"] = [(4711, True), (4712, False)]
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(frames, protocol=protocol))
        assert _same(load_log(path), frames), protocol
    # A log written with numpy 1.x names numpy.core.* (numpy 2 writes numpy._core.*).
    data = pickle.dumps(frames, protocol=2)
    assert b"numpy._core.multiarray" in data
    old = tmp_path / "numpy1.pkl"
    old.write_bytes(data.replace(b"numpy._core.", b"numpy.core."))
    assert b"numpy._core" not in old.read_bytes()
    assert _same(load_log(old), frames)


def test_a_scene_read_without_its_map_round_trips_through_scene_json(tmp_path):
    import json

    from sim.scene_json import load_scene_json, scene_to_json

    logs, _, _ = _write_log(tmp_path, _specs())
    (scene, _) = NavsimLogReader(logs, with_map=False, with_images=False)
    assert len(scene.map.centerline) == 0 and not scene.map.lanes
    again, _, _ = load_scene_json(json.loads(json.dumps(scene_to_json(scene))))  # a --no-map dataset reads back
    assert again.token == scene.token and len(again.map.centerline) == 0
    np.testing.assert_array_equal(again.future, scene.future)
