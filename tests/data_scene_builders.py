"""Tiny scenes built by hand for the camera, picture, dataset and generator tests.

A straight two-lane road along +x with an oncoming lane on the left, the ego driving in the right lane at
10 m/s, and optional things ahead: a car, a traffic light at a lane connector, a cone.
"""
from __future__ import annotations

import numpy as np

from sim import conventions as C
from sim.scene import (
    Agent,
    CriticalObject,
    EgoState,
    Lane,
    MapArea,
    MapData,
    Reasoning,
    Scene,
    StaticObject,
    StopLine,
    TrafficLight,
)

SPEED = 10.0


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def straight_road_map(length: float = 120.0, with_connector: bool = False) -> MapData:
    """Lanes: `ego` (y in [-1.75, 1.75]), `left` ([1.75, 5.25]), `oncoming` ([5.25, 8.75], driving -x).
    With `with_connector`, the ego lane stops at x = 60 and the connector `lc0` carries it from 60 to `length`."""
    xs = np.linspace(-40.0, length, 9)
    end_ego = 60.0 if with_connector else length
    ego_x = np.linspace(-40.0, end_ego, 9)
    lanes = [
        Lane("ego", "lane", _rect(-40.0, end_ego, -1.75, 1.75), np.column_stack([ego_x, np.zeros(9)]), True, 13.9, "rb0"),
        Lane("left", "lane", _rect(-40.0, length, 1.75, 5.25), np.column_stack([xs, np.full(9, 3.5)]), False, 13.9, "rb0"),
        Lane("oncoming", "lane", _rect(-40.0, length, 5.25, 8.75), np.column_stack([xs[::-1], np.full(9, 7.0)]), False, 13.9, "rb1"),
    ]
    areas = [MapArea("rb0", "roadblock", _rect(-40.0, length, -1.75, 5.25)), MapArea("rb1", "roadblock", _rect(-40.0, length, 5.25, 8.75))]
    stop_lines = []
    if with_connector:
        cx = np.linspace(end_ego, length, 5)
        lanes.append(Lane("lc0", "lane_connector", _rect(end_ego, length, -1.75, 1.75), np.column_stack([cx, np.zeros(5)]), True, 13.9, "rbc0"))
        areas.append(MapArea("int0", "intersection", _rect(end_ego, length, -1.75, 8.75)))
        stop_lines.append(StopLine("stop0", "traffic_light", _rect(end_ego - 0.5, end_ego, -1.75, 1.75)))
    centerline = np.column_stack([np.linspace(-40.0, length, 50), np.zeros(50)])
    return MapData(areas=areas, lanes=lanes, centerline=centerline, speed_limit_mps=13.9, stop_lines=stop_lines)


def ego_history(speed: float = SPEED) -> list[EgoState]:
    return [EgoState(float(speed * t), 0.0, 0.0, vx=speed) for t in C.history_times()]


def constant_velocity_agent(token: str, x0: float, y0: float, heading: float, speed: float, kind: str = "vehicle") -> Agent:
    """An agent whose centre is at (x0, y0) at t = 0 and drives straight at `speed`."""
    t = C.AGENT_TIMES_S
    poses = np.column_stack([x0 + speed * np.cos(heading) * t, y0 + speed * np.sin(heading) * t, np.full(len(t), heading)])
    velocities = np.column_stack([np.full(len(t), speed * np.cos(heading)), np.full(len(t), speed * np.sin(heading))])
    size = {"vehicle": (4.6, 1.9, 1.6), "pedestrian": (0.6, 0.6, 1.8), "bicycle": (1.8, 0.6, 1.6)}[kind]
    return Agent(token, kind, *size, poses=poses, velocities=velocities)


def straight_future(speed: float = SPEED) -> np.ndarray:
    t = C.future_times()
    return np.column_stack([speed * t, np.zeros_like(t), np.zeros_like(t)])


def make_scene(
    token: str = "scene0",
    car_ahead_m: float | None = 20.0,
    light_state: str | None = None,
    light_head: tuple[float, float, float] = (60.0, -2.6, 5.0),
    cone: bool = False,
    sample_type: str = "pos",
    family: str = "hand_made",
    seed: int | None = 0,
) -> Scene:
    """The straight road with, optionally, a car `car_ahead_m` ahead in the ego lane (same speed), a light of
    constant `light_state` controlling `lc0` with its head at `light_head`, and a cone on the road edge."""
    scene_map = straight_road_map(with_connector=light_state is not None)
    agents = [constant_velocity_agent("car_ahead", car_ahead_m, 0.0, 0.0, SPEED)] if car_ahead_m is not None else []
    agents.append(constant_velocity_agent("oncoming_car", 45.0, 7.0, np.pi, 8.0))
    agents.append(constant_velocity_agent("walker", 30.0, 10.5, np.pi / 2, 0.0, "pedestrian"))
    lights = [TrafficLight("lc0", [light_state] * len(C.AGENT_TIMES_S), light_head)] if light_state else []
    statics = [StaticObject("cone0", "traffic_cone", 25.0, -2.2, 0.0, 0.4, 0.4, 0.7)] if cone else []
    future = straight_future()
    negative = recovery = None
    if sample_type == "neg":
        negative = future * np.array([1.3, 1.0, 1.0])
    if sample_type == "rec":
        recovery = future + np.array([0.0, 0.2, 0.0])
        future = recovery
    reasoning = Reasoning(
        mode="slow",
        critical_objects=[CriticalObject("vehicle", "ahead in the ego lane, 20 m", "keeping speed")],
        longitudinal="keep speed",
        lateral="keep lane",
        text="A car drives 20 m ahead at our speed, so we keep our lane and speed.",
    )
    return Scene(
        token=token,
        ego_history=ego_history(),
        driving_command=1,
        map=scene_map,
        agents=agents,
        static_objects=statics,
        traffic_lights=lights,
        future=future,
        family=family,
        sample_type=sample_type,
        negative_trajectory=negative,
        recovery_trajectory=recovery,
        negative_kind="too_fast" if negative is not None else None,
        recovery_kind="off_centre" if recovery is not None else None,
        reasoning=reasoning,
        seed=seed,
    ).validate()


def assert_same(a, b, path: str = "scene") -> None:
    """Deep equality of scene objects (dataclasses, lists, numpy arrays with NaN equal to NaN)."""
    import dataclasses

    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert b is not None and a is not None, f"{path}: {a!r} != {b!r}"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
