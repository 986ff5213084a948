"""The camera rig and the rasteriser: projection, clipping, what shows where, and light states in pixels."""
from __future__ import annotations

import math

import numpy as np
import pytest

from data_scene_builders import constant_velocity_agent, make_scene
from sim import conventions as C
from sim.camera_world import ASPHALT, LAMP_COLOURS, OBJECT_COLOURS
from sim.cameras import (
    CAMERA_MOUNTS,
    CameraConfig,
    camera_rig,
    clip_polygon_near,
    project_points,
    render_cameras,
)


def _by_name(cameras):
    return {c.name: c for c in cameras}


def _red_mask(image: np.ndarray) -> np.ndarray:
    r, g, b = (image[..., k].astype(int) for k in range(3))
    return (r > 200) & (g < 80) & (b < 80)


def _colour_mask(image: np.ndarray, colour, tol: int = 0) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - np.array(colour)) <= tol, axis=-1)


def test_rig_has_the_three_front_cameras_with_real_car_calibration():
    rig = _by_name(camera_rig())
    assert list(rig) == list(C.CAMERA_NAMES)
    front = rig["CAM_F0"]
    # The front camera looks along ego +x: its optical axis (third column) is the ego x axis.
    np.testing.assert_allclose(front.sensor2ego_rotation[:, 2], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(front.sensor2ego_rotation[:, 0], [0.0, -1.0, 0.0], atol=1e-12)  # image right = ego right
    np.testing.assert_allclose(front.sensor2ego_rotation[:, 1], [0.0, 0.0, -1.0], atol=1e-12)  # image down = ego down
    assert front.sensor2ego_translation[2] == pytest.approx(1.6)
    left_axis = rig["CAM_L0"].sensor2ego_rotation[:, 2]
    assert math.degrees(math.atan2(left_axis[1], left_axis[0])) == pytest.approx(55.0)
    for cam in rig.values():
        np.testing.assert_allclose(cam.sensor2ego_rotation @ cam.sensor2ego_rotation.T, np.eye(3), atol=1e-12)
        assert cam.intrinsics[0, 2] == 64.0 and cam.intrinsics[1, 2] == 32.0


def test_projection_of_a_known_point_lands_at_the_expected_pixel():
    front = _by_name(camera_rig())["CAM_F0"]
    focal = 64.0 / math.tan(math.radians(32.0))
    # 20 m in front of the camera, 2 m to its left, at lens height: u = cx - f * 2 / 20, v = cy.
    point = np.array([[1.75 + 20.0, 2.0, 1.6]])
    uv, depth = project_points(front, np.zeros(3), point)
    assert depth[0] == pytest.approx(20.0)
    assert uv[0, 0] == pytest.approx(64.0 - focal * 0.1)
    assert uv[0, 1] == pytest.approx(32.0)
    # The same point seen from an ego turned by 90 degrees at (10, 5): rotate and shift the world with it.
    ego = np.array([10.0, 5.0, math.pi / 2])
    moved = np.array([[10.0 - 2.0, 5.0 + 21.75, 1.6]])
    uv_moved, _ = project_points(front, ego, moved)
    np.testing.assert_allclose(uv_moved, uv, atol=1e-9)
    # 1 m lower on the ground plane at 20 m: f * 1.6 / 20 below the centre row.
    uv_ground, _ = project_points(front, np.zeros(3), np.array([[21.75, 0.0, 0.0]]))
    assert uv_ground[0, 1] == pytest.approx(32.0 + focal * 1.6 / 20.0)


def test_near_plane_clip_cuts_a_polygon_at_the_plane():
    square = np.array([[-1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, 3.0], [-1.0, 0.0, 3.0]])
    clipped = clip_polygon_near(square, 1.0)
    assert clipped.shape == (4, 3)
    assert clipped[:, 2].min() == pytest.approx(1.0)
    np.testing.assert_allclose(sorted(map(tuple, clipped.round(9))), [(-1, 0, 1), (-1, 0, 3), (1, 0, 1), (1, 0, 3)])
    assert clip_polygon_near(square - np.array([0, 0, 10.0]), 1.0) is None
    in_front = square + np.array([0, 0, 10.0])
    np.testing.assert_array_equal(clip_polygon_near(in_front, 1.0), in_front)


def test_images_have_the_configured_shape_and_render_deterministically():
    scene = make_scene(light_state="red", cone=True)
    cams = render_cameras(scene, {"height": 32, "width": 96})
    assert [c.name for c in cams] == list(C.CAMERA_NAMES)
    for cam in cams:
        assert cam.images.shape == (C.NUM_HISTORY_FRAMES, 32, 96, 3) and cam.images.dtype == np.uint8
    again = render_cameras(scene, CameraConfig(height=32, width=96))
    for a, b in zip(cams, again):
        np.testing.assert_array_equal(a.images, b.images)
    with pytest.raises(ValueError, match="unknown key.*'heigth'"):
        CameraConfig.from_any({"heigth": 10})
    with pytest.raises(ValueError, match="CAM_B0"):
        CameraConfig.from_any({"names": ["CAM_B0"]})


@pytest.mark.parametrize("state", ["red", "green", "yellow"])
def test_a_light_ahead_shows_its_state_in_pixels_where_the_projection_puts_it(state):
    scene = make_scene(car_ahead_m=None, light_state=state, light_head=(40.0, -2.6, 5.0))
    front = _by_name(render_cameras(scene))["CAM_F0"]
    image = front.images[-1]
    u, v = project_points(front, scene.ego.pose, np.array([[40.0, -2.6, 5.0]]))[0][0]
    lamp = _colour_mask(image, LAMP_COLOURS[state])
    rows, cols = np.nonzero(lamp)
    assert len(rows) >= 1, f"no {state} pixel in the front image"
    # Every lit pixel lies within 3 px of the projected signal head (the lamp sits 0.35 m above or below it
    # for red or green, about 1 px at 38 m, and is at least 1 px in radius).
    assert np.all(np.abs(cols + 0.5 - u) <= 3.0) and np.all(np.abs(rows + 0.5 - v) <= 3.0)
    assert _red_mask(image).any() == (state == "red")


def test_light_state_changes_frame_by_frame_and_is_dark_when_unknown():
    scene = make_scene(car_ahead_m=None, light_state="red", light_head=(40.0, -2.6, 5.0))
    scene.traffic_lights[0].states = ["green", "yellow", "red", "unknown"] + ["red"] * 10
    front = _by_name(render_cameras(scene))["CAM_F0"]
    seen = []
    for frame in range(4):
        image = front.images[frame]
        seen.append([s for s, colour in LAMP_COLOURS.items() if _colour_mask(image, colour).any()])
    assert seen == [["green"], ["yellow"], ["red"], []]


def test_a_light_seen_from_behind_shows_no_lamp():
    # The signal faces traffic driving +x towards the connector; an ego driving -x at x = 80 sees its back.
    scene = make_scene(car_ahead_m=None, light_state="red", light_head=(40.0, -2.6, 5.0))
    for ego in scene.ego_history:
        ego.x, ego.heading = 80.0 - ego.x, math.pi
    front = _by_name(render_cameras(scene))["CAM_F0"]
    uv, depth = project_points(front, scene.ego.pose, np.array([[40.0, -2.6, 5.0]]))
    assert depth[0] > 0 and 0 <= uv[0, 0] < 128 and 0 <= uv[0, 1] < 64  # the signal is in view...
    assert not _red_mask(front.images[-1]).any()  # ...but its lit side is turned away


def test_a_vehicle_ahead_shows_in_the_front_camera_only():
    with_car = _by_name(render_cameras(make_scene(car_ahead_m=18.0)))
    without = _by_name(render_cameras(make_scene(car_ahead_m=None)))
    changed = {name: np.any(with_car[name].images != without[name].images, axis=-1) for name in with_car}
    assert changed["CAM_F0"].sum() > 50
    assert not changed["CAM_L0"].any() and not changed["CAM_R0"].any()
    # The changed pixels surround the projection of the car's rear centre at t = 0.
    front = with_car["CAM_F0"]
    u, v = project_points(front, np.zeros(3), np.array([[18.0 - 2.3, 0.0, 0.8]]))[0][0]
    rows, cols = np.nonzero(changed["CAM_F0"][-1])
    assert cols.min() < u < cols.max() and rows.min() < v < rows.max()
    assert _colour_mask(front.images[-1][int(v), int(u)][None], OBJECT_COLOURS["vehicle"], tol=60).all()


def test_a_car_beside_the_ego_shows_in_the_side_camera_not_the_front():
    scene = make_scene(car_ahead_m=None)
    scene.agents = [constant_velocity_agent("beside", 6.0, -5.5, 0.0, 10.0)]
    cams = _by_name(render_cameras(scene))
    blue = {name: _colour_mask(c.images[-1], OBJECT_COLOURS["vehicle"], tol=80) & (c.images[-1][..., 2] > 120) for name, c in cams.items()}
    assert blue["CAM_R0"].sum() > 100 and not blue["CAM_F0"].any() and not blue["CAM_L0"].any()


def test_nearer_objects_hide_farther_ones():
    scene = make_scene(car_ahead_m=12.0)
    scene.agents = [scene.agents[0], constant_velocity_agent("hidden", 30.0, 0.0, 0.0, 10.0, "bicycle")]
    front = _by_name(render_cameras(scene))["CAM_F0"]
    assert not _colour_mask(front.images[-1], OBJECT_COLOURS["bicycle"], tol=80).any()
    scene.agents = scene.agents[1:]  # without the car in between the bicycle is seen
    front = _by_name(render_cameras(scene))["CAM_F0"]
    assert _colour_mask(front.images[-1], OBJECT_COLOURS["bicycle"], tol=80).any()


def test_the_road_passing_under_the_camera_is_clipped_not_lost():
    front = _by_name(render_cameras(make_scene(car_ahead_m=None)))["CAM_F0"]
    bottom_row = front.images[-1][-1]
    # The ego lane spans the middle of the bottom row (the ground in front of the bumper is road).
    assert _colour_mask(bottom_row[48:80], ASPHALT).all()
    # The sky is above the horizon row (the camera is level).
    assert _colour_mask(front.images[-1][:20], (156, 194, 230)).all()


def test_camera_mounts_match_the_rig_names():
    assert set(C.CAMERA_NAMES) <= set(CAMERA_MOUNTS)


def test_a_light_facing_cross_traffic_shows_no_colour():
    # The connector runs along -y: its signal faces +y, towards the ego's side of the road but at about 86
    # degrees from the ego's line of sight.
    scene = make_scene(car_ahead_m=None, light_state="red", light_head=(40.0, -2.6, 5.0))
    connector = scene.map.lane("lc0")
    connector.baseline = np.array([[60.0, 10.0], [60.0, -10.0]])
    front = _by_name(render_cameras(scene))["CAM_F0"]
    assert not _red_mask(front.images[-1]).any()
