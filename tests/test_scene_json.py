"""sim.scene_json: the scene JSON format <-> sim.scene.Scene."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from sim import conventions as C
from sim.scene import Camera, CriticalObject, EgoState, PreviousFrame, Reasoning, StopLine
from sim.scene_json import SceneJsonError, load_scene_json, scene_to_json, write_scene_json

from pdm_builders import cone, moving, road_scene, straight_plan, vehicle


def assert_same(a, b, path="scene"):
    """Deep equality of dataclasses / lists / dicts / arrays (NaN == NaN)."""
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def rich_scene():
    """A scene using every field the format or its "sim" block carries."""
    scene = road_scene(agents=[moving("lead", 30.0, 0.0, 6.0)], statics=[cone("c0", 20.0, 3.0)],
                       lights=[("lc0", "red")], connector=True, intersection=True, human=straight_plan(9.0))
    lead = scene.agents[0]
    lead.poses[: C.AGENT_CURRENT_INDEX] = [[21.0, 0.0, 0.0], [24.0, 0.0, 0.0], [np.nan] * 3]
    lead.velocities[: C.AGENT_CURRENT_INDEX] = [[6.0, 0.0], [6.0, 0.0], [np.nan] * 2]
    lead.poses[-2:] = np.nan  # leaves before 4.5 s
    lead.velocities[-2:] = np.nan
    scene.traffic_lights[0].states = ["green"] * 3 + ["red"] * 4 + ["green"] * 7
    scene.traffic_lights[0].head = (30.0, 2.0, 5.0)
    scene.map.lanes[0].roadblock_id = "rb0"
    scene.map.lanes[1].baseline = np.array([[-60.0, 0.0], [30.0, 0.0]])
    scene.map.stop_lines = [StopLine("s0", "traffic_light", np.array([[29.5, -1.75], [30.0, -1.75], [30.0, 1.75]]))]
    scene.ego_history[0] = EgoState(-15.2, 0.1, 0.01, 9.8, 0.0, 0.3, -0.1, 0.02)
    scene.future = straight_plan(10.0)[:8].repeat(2, axis=0)[:10]
    scene.sample_type = "neg"
    scene.negative_trajectory = straight_plan(3.0).repeat(2, axis=0)[:10]
    scene.negative_kind = "late_brake"
    scene.family = "follow"
    scene.driving_command = 2
    scene.seed = 123
    scene.log_name = "synthetic-0"
    scene.reasoning = Reasoning("slow", [CriticalObject("vehicle", "ahead, 30 m", "slower")], "decelerate", "keep lane", "Slow car ahead.")
    scene.cameras = [Camera("CAM_F0", np.eye(3) * 1000.0, np.eye(3), np.array([1.5, 0.0, 1.6]))]
    scene.previous_frame = PreviousFrame(EgoState(-5.0, 0.0, 0.0, vx=10.0), straight_plan())
    scene.pdm_closed_trajectory = {"v2": np.cumsum(np.full((51, 3), 0.1), axis=0)}
    return scene


def test_a_written_scene_reads_back_identical(tmp_path):
    scene = rich_scene()
    plan = straight_plan(8.5) + 1e-3
    path = tmp_path / "scene.json"
    write_scene_json(path, scene, plan)
    back, back_plan, notes = load_scene_json(path)
    assert_same(scene, back)
    np.testing.assert_array_equal(back_plan, plan)
    assert not [n for n in notes if "ego_history" in n or "extrapolated" in n or "finite differences" in n]
    # and the JSON is plain JSON: no NaN literals
    assert "NaN" not in path.read_text()


def test_json_from_elsewhere_gets_the_documented_defaults():
    data = {
        "ego": {"x": 1.0, "y": 2.0, "heading": 0.5, "vx": 4.0},
        "trajectory": straight_plan().tolist(),
        "map": {"lanes": [{"id": "l0", "type": "lane", "on_route": True, "polygon": [[0, 0], [1, 0], [1, 1]]}],
                "centerline": [[0, 0], [10, 0]]},
        "agents": [{"token": "a", "type": "vehicle", "length": 4, "width": 2,
                    "poses": [[10, 0, 0], [12, 0, 0], [15, 0, 0]]}],
        "traffic_lights": [{"lane_id": "l0", "state": "red"}, {"lane_id": "ghost", "state": "red"}],
    }
    scene, plan, notes = load_scene_json(data)
    text = " | ".join(notes)
    assert "constant-velocity" in text and "finite differences" in text and "extrapolated" in text and "ghost" in text
    # constant-velocity history: 4 m/s straight back along the heading
    np.testing.assert_allclose(scene.ego_history[0].pose, [1.0 - 6.0 * np.cos(0.5), 2.0 - 6.0 * np.sin(0.5), 0.5])
    agent = scene.agents[0]
    now = C.AGENT_CURRENT_INDEX
    np.testing.assert_allclose(agent.velocities[now : now + 3], [[4.0, 0.0], [5.0, 0.0], [6.0, 0.0]])  # one-sided, central, one-sided
    np.testing.assert_allclose(agent.poses[now + 3], [18.0, 0.0, 0.0])  # extrapolated at 6 m/s
    np.testing.assert_allclose(agent.poses[-1], [15.0 + 6.0 * 4.0, 0.0, 0.0])
    assert np.isnan(agent.poses[:now]).all()
    assert [t.lane_connector_id for t in scene.traffic_lights] == ["l0"]
    assert scene.traffic_lights[0].states == ["red"] * len(C.AGENT_TIMES_S)
    np.testing.assert_array_equal(plan, straight_plan())


def test_an_agent_list_ending_absent_is_not_extrapolated():
    data = json.loads(json.dumps(scene_to_json(road_scene())))
    data["agents"] = [{"token": "a", "type": "pedestrian", "length": 0.5, "width": 0.5,
                       "poses": [[5, 5, 0], None], "velocities": [[0.0, 1.0], None]}]
    agent = load_scene_json(data)[0].agents[0]
    assert np.isnan(agent.poses[C.AGENT_CURRENT_INDEX + 1 :]).all()


def test_a_scene_frame_plan_is_returned_in_the_ego_frame():
    scene = road_scene(origin=np.array([10.0, -3.0, 1.2]))
    data = scene_to_json(scene)
    from sim.geometry import relative_to_absolute

    data["trajectory"] = relative_to_absolute(scene.ego.pose, straight_plan()).tolist()
    data["trajectory_frame"] = "scene"
    _, plan, _ = load_scene_json(data)
    np.testing.assert_allclose(plan, straight_plan(), atol=1e-9)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["agents"][0]["poses"].__setitem__(4, [1.0, 2.0]), r"scene.json: agents\[0\].poses\[4\]: expected \[x, y, heading\] or null"),
        (lambda d: d["agents"][0]["poses"].__setitem__(1, [1.0, float("nan"), 0.0]), r"agents\[0\].poses\[1\]: expected \[x, y, heading\]"),
        (lambda d: d["agents"][0]["velocities"].__setitem__(0, [1.0, "x"]), r"agents\[0\].velocities\[0\]: expected \[vx, vy\]"),
        (lambda d: d["ego"].pop("heading"), r"scene.json: ego.heading: missing"),
        (lambda d: d["ego"].__setitem__("vx", float("inf")), r"ego.vx: expected a finite number"),
        (lambda d: d["agents"][0].__setitem__("type", "tram"), r"agents\[0\].type: expected one of"),
        (lambda d: d["map"]["lanes"][0].__setitem__("polygon", [[0, 0]]), r"map.lanes\[0\].polygon: expected at least 3"),
        (lambda d: d.__setitem__("trajectory_frame", "world"), r"trajectory_frame: expected 'ego' or 'scene'"),
        (lambda d: d["trajectory"].__setitem__(2, [0.0, 0.0, float("inf")]), r"trajectory\[2\]: expected"),
        (lambda d: d["static_objects"][0].__setitem__("token", "lead"), r"tokens must be unique"),
        (lambda d: d["traffic_lights"][0].__setitem__("states", ["red", "purple"]), r"traffic_lights\[0\].states\[1\]"),
        (lambda d: d["map"].pop("centerline"), r"map.centerline: missing"),
    ],
)
def test_bad_input_names_the_file_and_the_field(tmp_path, edit, message):
    data = scene_to_json(rich_scene(), straight_plan())
    data = json.loads(json.dumps(data))
    edit(data)
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SceneJsonError, match=message):
        load_scene_json(path)


def test_invalid_json_text_is_reported(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{\"ego\": ")
    with pytest.raises(SceneJsonError, match="broken.json: not valid JSON"):
        load_scene_json(path)


def test_a_given_pdm_closed_plan_becomes_the_cached_reference():
    data = scene_to_json(road_scene(agents=[vehicle("v", np.tile([40.0, 0.0, 0.0], (11, 1)))]), straight_plan())
    data["sim"]["pdm_closed"] = {}
    data["pdm_closed"] = {"trajectory": straight_plan(7.0).tolist()}
    scene, _, notes = load_scene_json(data)
    assert set(scene.pdm_closed_trajectory) == {"v1", "v2"}
    ref = scene.pdm_closed_trajectory["v2"]
    assert ref.shape == (51, 3)
    np.testing.assert_allclose(ref[:41, 0], 7.0 * np.arange(41) * 0.1, atol=1e-5)
    np.testing.assert_allclose(ref[41:, 0], 28.0, atol=1e-5)  # held after 4 s
    assert any("pdm_closed" in n for n in notes)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.__setitem__("trajectory", d["trajectory"][:7]),
         r"scene.json: trajectory: expected 8 poses at 0.5 s \(t = 0.5 ... 4 s\), got 7"),
        (lambda d: d.__setitem__("trajectory", [[0.01 * i, 0.0, 0.0] for i in range(1, 2001)]),
         r"scene.json: trajectory: expected 8 poses at 0.5 s \(t = 0.5 ... 4 s\), got 2000"),
        (lambda d: d.__setitem__("human_trajectory", straight_plan().tolist() + [[45.0, 0.0, 0.0]]),
         r"scene.json: human_trajectory: expected 8 poses at 0.5 s .*got 9"),
        (lambda d: d["previous_frame"].__setitem__("trajectory", straight_plan()[:7].tolist()),
         r"scene.json: previous_frame.trajectory: expected 8 poses at 0.5 s .*got 7"),
        (lambda d: d.__setitem__("pdm_closed", {"trajectory": straight_plan()[:4].tolist()}),
         r"scene.json: pdm_closed.trajectory: expected 8 poses at 0.5 s .*got 4"),
    ],
)
def test_every_plan_field_must_be_a_navsim_plan(tmp_path, edit, message):
    data = json.loads(json.dumps(scene_to_json(rich_scene(), straight_plan())))
    edit(data)
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SceneJsonError, match=message):
        load_scene_json(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["reasoning"].pop("mode"), r"scene.json: sim.reasoning: malformed \(missing key 'mode'\)"),
        (lambda s: s["cameras"][0].pop("intrinsics"), r"scene.json: sim.cameras: malformed \(missing key 'intrinsics'\)"),
        (lambda s: s["stop_lines"][0].pop("polygon"), r"scene.json: sim.stop_lines: malformed \(missing key 'polygon'\)"),
        (lambda s: s["agent_history"]["lead"].pop("velocities"), r"sim.agent_history.lead: malformed \(missing key"),
        (lambda s: s.__setitem__("future", [[1.0, "a", 0.0]]), r"scene.json: sim.future: malformed \(ValueError"),
        (lambda s: s.__setitem__("driving_command", "left"), r"scene.json: sim: malformed \(ValueError"),
    ],
)
def test_a_malformed_sim_block_names_the_file_and_the_block(tmp_path, edit, message):
    data = json.loads(json.dumps(scene_to_json(rich_scene(), straight_plan())))
    edit(data["sim"])
    path = tmp_path / "scene.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SceneJsonError, match=message):
        load_scene_json(path)


def test_unreadable_files_name_the_file(tmp_path):
    binary = tmp_path / "picture.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    with pytest.raises(SceneJsonError, match=r"picture.json: not a UTF-8 text file \(byte 0x89 at offset 0\)"):
        load_scene_json(binary)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(SceneJsonError, match="folder.json: cannot read: Is a directory"):
        load_scene_json(folder)


def test_the_assumed_history_copies_the_current_velocity_and_acceleration():
    data = json.loads(json.dumps(scene_to_json(road_scene(), straight_plan())))
    del data["ego_history"]
    data["ego"].update({"vx": 9.0, "vy": 0.2, "ax": -1.5, "ay": 3.0})
    scene, _, notes = load_scene_json(data)
    for state in scene.ego_history[:-1]:
        assert (state.vx, state.vy, state.ax, state.ay) == (9.0, 0.2, -1.5, 3.0)
    assert any("no ego_history given" in n and "acceleration" in n for n in notes)
