"""Bird's-eye pictures of a scene (matplotlib), used by every picture the project draws of a scene.

The picture is drawn in the ego frame at t = 0 with the ego driving UP the page: plot x = -y_ego (left is
left), plot y = x_ego (forward is up), metres. It shows the map (drivable areas, lanes, lane connectors,
stop lines, route centre line), lights coloured by their state at t = 0, agents and static objects at
t = 0 with their history faded and their future as thin lines, the ego box and history, the ground truth,
the negative or recovery trajectory of the scene, and any plans passed in (coloured by value or by the
caller). No pyplot: figures are built with `matplotlib.figure.Figure`, so nothing depends on a backend.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon as PolygonPatch

from sim import conventions as C
from sim.camera_world import OBJECT_COLOURS
from sim.geometry import box_corners, ego_corners, points_to_relative
from sim.scene import Scene

LIGHT_COLOURS = {"red": "#e8222a", "yellow": "#f2c200", "green": "#2bb34a", "unknown": "#8a8a8a"}
TRAJECTORY_STYLES = {
    "ground truth": dict(color="#111111", lw=2.0, ls="-", marker="o", ms=3),
    "negative": dict(color="#d62728", lw=2.0, ls="--", marker="x", ms=4),
    "recovery": dict(color="#ff7f0e", lw=2.0, ls="-.", marker="s", ms=3),
}
DEFAULT_VIEW = (15.0, 60.0, 25.0)  # metres behind, ahead, and to each side of the ego


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(c / 255.0 for c in colour)


def _plot_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ego-frame points (..., 2) -> plot coordinates (forward up, left on the left)."""
    points = np.asarray(points, dtype=np.float64)
    return -points[..., 1], points[..., 0]


def _patch(points_ego: np.ndarray, **style) -> PolygonPatch:
    u, v = _plot_xy(points_ego)
    return PolygonPatch(np.column_stack([u, v]), closed=True, **style)


def draw_scene(
    ax: Axes,
    scene: Scene,
    plans: Optional[Sequence[np.ndarray]] = None,
    plan_colors: Optional[Sequence] = None,
    plan_labels: Optional[Sequence[str]] = None,
    plan_values: Optional[Sequence[float]] = None,
    cmap: str = "viridis",
    view: tuple[float, float, float] = DEFAULT_VIEW,
    show_scene_trajectories: bool = True,
    legend: bool = True,
    title: Optional[str] = None,
) -> Optional[ScalarMappable]:
    """Draw `scene` from above on `ax`.

    plans: trajectories (N, 3) or (N, 2), rear-axle poses in the ego frame at t = 0 (like NAVSIM plans).
    plan_colors: one matplotlib colour per plan; otherwise plans are coloured by `plan_values` through
      `cmap` (then a ScalarMappable is returned for a colour bar) or by a default cycle.
    plan_labels: one legend label per plan (plans are unlabelled otherwise).
    view: (behind, ahead, side) extent in metres around the ego.
    show_scene_trajectories: draw the scene's ground truth and its negative / recovery trajectory.
    """
    to_ego = _EgoFrame(scene)
    _draw_map(ax, scene, to_ego)
    _draw_objects(ax, scene, to_ego)
    handles = []
    if show_scene_trajectories:
        for label, traj in (("ground truth", scene.future), ("negative", scene.negative_trajectory),
                            ("recovery", scene.recovery_trajectory)):
            if traj is None or (label == "ground truth" and scene.sample_type == "rec"):
                continue  # a rec scene's ground truth is its recovery trajectory
            u, v = _plot_xy(np.vstack([[0.0, 0.0], np.asarray(traj)[:, :2]]))
            handles.append(ax.plot(u, v, zorder=9, label=label, **TRAJECTORY_STYLES[label])[0])
    mappable = None
    if plans is not None and len(plans):
        mappable = _draw_plans(ax, plans, plan_colors, plan_labels, plan_values, cmap, handles)

    behind, ahead, side = view
    ax.set_xlim(-side, side)
    ax.set_ylim(-behind, ahead)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("left  <-   y (m)   ->  right", fontsize=7)
    ax.set_ylabel("x forward (m)", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_facecolor("#eef2e6")
    if title is None:
        title = f"{scene.token}  [{scene.family}, {scene.sample_type}]  {C.DRIVING_COMMANDS[scene.driving_command]}"
    ax.set_title(title, fontsize=8)
    if legend and handles:
        handles.append(Line2D([], [], color="#4a7fd1", lw=1.0, ls=(0, (6, 4)), label="route centre line"))
        ax.legend(handles=handles, fontsize=6, loc="lower right", framealpha=0.85)
    return mappable


class _EgoFrame:
    """Scene-frame points (..., 2+) -> the ego frame at t = 0."""

    def __init__(self, scene: Scene):
        self.origin = scene.ego.pose

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return points_to_relative(self.origin, np.asarray(points, dtype=np.float64)[..., :2])


def _draw_map(ax: Axes, scene: Scene, to_ego: _EgoFrame) -> None:
    """Areas, lanes (on-route ones tinted, controlled connectors outlined in their light's colour at t = 0),
    stop lines, the route centre line and the signal heads."""
    for area in scene.map.areas:
        fill = "#d9d9d9" if area.type != "carpark_area" else "#cfcfe0"
        ax.add_patch(_patch(to_ego(area.polygon), facecolor=fill, edgecolor="#bdbdbd", lw=0.5, zorder=1))
    light_state = {tl.lane_connector_id: tl.state_at(0.0) for tl in scene.traffic_lights}
    for lane in scene.map.lanes:
        controlled = lane.id in light_state
        ax.add_patch(_patch(
            to_ego(lane.polygon), facecolor="#dbe8f7" if lane.on_route else "none",
            edgecolor=LIGHT_COLOURS[light_state[lane.id]] if controlled else "#9a9a9a", lw=1.6 if controlled else 0.6,
            ls="--" if lane.type == "lane_connector" else "-", alpha=0.9, zorder=3 if controlled else 2))
    for stop in scene.map.stop_lines:
        ax.add_patch(_patch(to_ego(stop.polygon), facecolor="#444444", edgecolor="none", zorder=3))
    if len(scene.map.centerline):
        u, v = _plot_xy(to_ego(scene.map.centerline))
        ax.plot(u, v, color="#4a7fd1", lw=1.0, ls=(0, (6, 4)), zorder=3)
    for tl in scene.traffic_lights:
        if tl.head is not None:
            u, v = _plot_xy(to_ego(np.asarray(tl.head[:2])))
            ax.scatter([u], [v], s=60, c=LIGHT_COLOURS[tl.state_at(0.0)], edgecolors="black", linewidths=0.8, zorder=8)


def _object_colour(kind: str) -> tuple[float, float, float]:
    return _rgb(OBJECT_COLOURS.get(kind, OBJECT_COLOURS["generic_object"]))


def _draw_objects(ax: Axes, scene: Scene, to_ego: _EgoFrame) -> None:
    """Static objects; agents at t = 0 (a dot marks the front) with their history as fading boxes and their
    future as a thin line; the ego box and its history."""
    for obj in scene.static_objects:
        corners = box_corners(np.array([obj.x, obj.y, obj.heading]), obj.length, obj.width)
        ax.add_patch(_patch(to_ego(corners), facecolor=_object_colour(obj.type), edgecolor="black", lw=0.5, zorder=5))
    now = C.AGENT_CURRENT_INDEX
    for agent in scene.agents:
        colour = _object_colour(agent.type)
        present = agent.present()
        for k in np.flatnonzero(present[:now]):
            corners = box_corners(agent.poses[k], agent.length, agent.width)
            ax.add_patch(_patch(to_ego(corners), facecolor=colour, edgecolor="none", alpha=0.08 + 0.08 * k, zorder=4))
        future = agent.poses[now:][present[now:]]
        if len(future) > 1:
            u, v = _plot_xy(to_ego(future[:, :2]))
            ax.plot(u, v, color=colour, lw=0.8, alpha=0.6, zorder=4)
        if present[now]:
            corners = box_corners(agent.poses[now], agent.length, agent.width)
            ax.add_patch(_patch(to_ego(corners), facecolor=colour, edgecolor="black", lw=0.6, zorder=6))
            u, v = _plot_xy(to_ego(corners[[0, 3]]).mean(axis=0))
            ax.plot([u], [v], marker="o", ms=2, color="black", zorder=6)
    u, v = _plot_xy(scene.history_trajectory()[:, :2])
    ax.plot(u, v, color="#555555", lw=1.0, marker=".", ms=4, zorder=6)
    ax.add_patch(_patch(ego_corners(np.zeros(3)), facecolor="#ffffff", edgecolor="#111111", lw=1.4, zorder=7))


def _draw_plans(ax: Axes, plans, plan_colors, plan_labels, plan_values, cmap: str, handles: list) -> Optional[ScalarMappable]:
    """Plans from the ego at (0, 0); labelled ones are appended to the legend `handles`."""
    mappable = None
    colours = list(plan_colors) if plan_colors is not None else None
    if colours is None and plan_values is not None:
        values = np.asarray(plan_values, dtype=np.float64)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
        colormap = colormaps[cmap]
        colours = [colormap(norm(x)) if np.isfinite(x) else "#bbbbbb" for x in values]  # grey: no value
        mappable = ScalarMappable(norm=norm, cmap=colormap)
        mappable.set_array(values)
    if colours is None:
        colours = [colormaps["tab10"](i % 10) for i in range(len(plans))]
    if len(colours) != len(plans):
        raise ValueError(f"draw_scene: {len(plans)} plans but {len(colours)} plan colours")
    for i, plan in enumerate(plans):
        u, v = _plot_xy(np.vstack([[0.0, 0.0], np.asarray(plan)[:, :2]]))
        label = plan_labels[i] if plan_labels is not None else None
        line = ax.plot(u, v, color=colours[i], lw=1.3, alpha=0.85, marker=".", ms=3, zorder=10, label=label)[0]
        if label is not None:
            handles.append(line)
    return mappable


def scene_text(scene: Scene) -> str:
    """The default text panel: ego state, command, sample kind and the reasoning annotation."""
    lines = [
        f"token: {scene.token}",
        f"family: {scene.family}   sample: {scene.sample_type}"
        + (f" ({scene.negative_kind})" if scene.negative_kind else "")
        + (f" ({scene.recovery_kind})" if scene.recovery_kind else ""),
        f"command: {C.DRIVING_COMMANDS[scene.driving_command]}",
        f"speed {scene.ego.speed:.1f} m/s, accel {scene.ego.ax:+.1f} m/s^2",
    ]
    if scene.reasoning is not None:
        r = scene.reasoning
        lines += ["", f"reasoning ({r.mode}): {r.longitudinal}, {r.lateral}", r.text]
        for obj in r.critical_objects:
            lines.append(f"- {obj.type}: {obj.location}, {obj.behaviour}")
    return "\n".join(lines)


def scene_figure(
    scene: Scene,
    plans: Optional[Sequence[np.ndarray]] = None,
    plan_colors: Optional[Sequence] = None,
    plan_labels: Optional[Sequence[str]] = None,
    plan_values: Optional[Sequence[float]] = None,
    text: Optional[str] = None,
    show_cameras: bool = True,
    camera_frames: Sequence[int] = (-1,),
    value_label: str = "reward",
    cmap: str = "viridis",
    view: tuple[float, float, float] = DEFAULT_VIEW,
) -> Figure:
    """A figure with the bird's-eye view, a text panel (default `scene_text`) and, when the scene has
    rendered or loaded images and `show_cameras`, the cameras (left, front, right) above it for the history
    frames `camera_frames` (indices into the 4 frames, -1 = t = 0)."""
    cameras = {c.name: c for c in scene.cameras if c.images is not None} if show_cameras else {}
    order = [n for n in ("CAM_L0", "CAM_F0", "CAM_R0") if n in cameras] + sorted(set(cameras) - {"CAM_L0", "CAM_F0", "CAM_R0"})
    n_rows = len(camera_frames) if order else 0
    fig = Figure(figsize=(11.0, 7.0 + 1.6 * n_rows))
    grid = fig.add_gridspec(n_rows + 1, 2, height_ratios=[1.0] * n_rows + [4.2], width_ratios=[1.25, 1.0],
                            hspace=0.25, wspace=0.08)
    if order:
        for r, frame in enumerate(camera_frames):
            strip = np.concatenate([cameras[n].images[frame] for n in order], axis=1)
            ax = fig.add_subplot(grid[r, :])
            ax.imshow(strip, interpolation="nearest")
            ax.set_axis_off()
            t = C.history_times()[frame]
            ax.set_title(f"{' | '.join(order)}   t = {t:+.1f} s", fontsize=7)
    bev = fig.add_subplot(grid[n_rows, 0])
    mappable = draw_scene(bev, scene, plans, plan_colors, plan_labels, plan_values, cmap=cmap, view=view)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=bev, fraction=0.04, pad=0.02)
        bar.set_label(value_label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    panel = fig.add_subplot(grid[n_rows, 1])
    panel.set_axis_off()
    body = text if text is not None else scene_text(scene)
    wrapped = "\n".join(textwrap.fill(line, 62, subsequent_indent="  ") if line else "" for line in body.splitlines())
    panel.text(0.04, 1.0, wrapped, va="top", ha="left", fontsize=7.5, family="monospace", transform=panel.transAxes)
    return fig


def save_scene_picture(path: str | Path, scene: Scene, dpi: int = 110, **kwargs) -> Path:
    """Write `scene_figure(scene, **kwargs)` to `path` (PNG or any format matplotlib knows by extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = scene_figure(scene, **kwargs)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

