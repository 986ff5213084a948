"""Cameras: the rig on the ego (front, front-left, front-right) and a fast rasteriser that turns a scene into
the history images the policy reads.

The world is flat (ground at z = 0). Each image is painted back to front with PIL: sky and ground, the road
surface (map areas), lane markings and stop lines, then 3D boxes (agents, static objects, traffic-light
housings) sorted by depth, far first. Polygons are clipped against the camera's near plane before the
pinhole projection, so geometry that passes beside or behind the camera stays correct.

Frames: camera axes are x right, y down, z forward (OpenCV); `Camera.sensor2ego_*` maps camera coordinates
to the ego rear-axle frame (z up from the ground). Image i of a camera is taken at history time
`conventions.history_times()[i]` from the ego pose `scene.ego_history[i]`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from sim import conventions as C
from sim.camera_world import Boxes, World, build_world
from sim.scene import Camera, Scene


@dataclass(frozen=True)
class CameraMount:
    """Where a camera sits on the ego: optical centre (x, y, z) in the ego rear-axle frame (m), yaw to the
    left of straight ahead and pitch downwards (rad), horizontal field of view (rad)."""

    x: float
    y: float
    z: float
    yaw: float
    pitch: float
    hfov: float


# Shaped like the front of nuPlan's rig: cameras behind the windscreen at about 1.6 m, the side cameras
# turned 55 degrees outwards so the three views overlap a little and cover about 175 degrees.
CAMERA_MOUNTS: dict[str, CameraMount] = {
    "CAM_F0": CameraMount(x=1.75, y=0.0, z=1.6, yaw=0.0, pitch=0.0, hfov=math.radians(64.0)),
    "CAM_L0": CameraMount(x=1.6, y=0.55, z=1.6, yaw=math.radians(55.0), pitch=0.0, hfov=math.radians(64.0)),
    "CAM_R0": CameraMount(x=1.6, y=-0.55, z=1.6, yaw=math.radians(-55.0), pitch=0.0, hfov=math.radians(64.0)),
}


@dataclass(frozen=True)
class CameraConfig:
    """Image size (pixels) and which cameras of `CAMERA_MOUNTS` to render."""

    height: int = 64
    width: int = 128
    names: tuple[str, ...] = C.CAMERA_NAMES
    near_m: float = 0.3  # geometry closer than this to a camera is cut away
    far_m: float = 250.0  # objects farther than this are not drawn

    @classmethod
    def from_any(cls, config: "CameraConfig | Mapping[str, Any] | None") -> "CameraConfig":
        """Accept a `CameraConfig`, a mapping of its fields (e.g. from YAML) or None (the defaults)."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"camera config: unknown key(s) {sorted(unknown)}; known keys are {sorted(known)}")
        values = dict(config)
        if "names" in values:
            values["names"] = tuple(values["names"])
        return cls(**values)

    def __post_init__(self):
        if self.height < 8 or self.width < 8:
            raise ValueError(f"camera config: image size {self.height} x {self.width} is too small (at least 8 x 8)")
        missing = [n for n in self.names if n not in CAMERA_MOUNTS]
        if missing:
            raise ValueError(f"camera config: names {missing} have no mount; known cameras are {sorted(CAMERA_MOUNTS)}")


# --- the rig -----------------------------------------------------------------------------------------------


def mount_rotation(yaw: float, pitch: float) -> np.ndarray:
    """(3, 3) rotation camera -> ego for a camera turned by `yaw` (left) and tilted down by `pitch`:
    its columns are the camera's x (right), y (down) and z (forward) axes in the ego frame."""
    forward = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def pinhole_intrinsics(hfov: float, height: int, width: int) -> np.ndarray:
    """(3, 3) intrinsics with square pixels, the principal point at the image centre and the given
    horizontal field of view."""
    focal = (width / 2.0) / math.tan(hfov / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def camera_rig(config: CameraConfig | Mapping[str, Any] | None = None) -> list[Camera]:
    """The calibrated cameras of `config` (no images yet)."""
    config = CameraConfig.from_any(config)
    rig = []
    for name in config.names:
        m = CAMERA_MOUNTS[name]
        rig.append(
            Camera(
                name=name,
                intrinsics=pinhole_intrinsics(m.hfov, config.height, config.width),
                sensor2ego_rotation=mount_rotation(m.yaw, m.pitch),
                sensor2ego_translation=np.array([m.x, m.y, m.z]),
            )
        )
    return rig


# --- projection --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraPose:
    """A camera placed in the scene frame: world -> camera rotation and the optical centre (3,)."""

    world_to_camera: np.ndarray  # (3, 3)
    position: np.ndarray  # (3,)
    intrinsics: np.ndarray  # (3, 3)

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Scene-frame points (..., 3) -> camera coordinates (..., 3)."""
        return (np.asarray(points, dtype=np.float64) - self.position) @ self.world_to_camera.T

    def to_pixels(self, camera_points: np.ndarray) -> np.ndarray:
        """Camera coordinates (..., 3) with z > 0 -> pixel coordinates (..., 2) (u right, v down)."""
        k = self.intrinsics
        x, y, z = camera_points[..., 0], camera_points[..., 1], camera_points[..., 2]
        u = (k[0, 0] * x + k[0, 1] * y) / z + k[0, 2]
        v = k[1, 1] * y / z + k[1, 2]
        return np.stack([u, v], axis=-1)


def camera_pose(camera: Camera, ego_pose: np.ndarray) -> CameraPose:
    """Place `camera` on the ego at rear-axle pose `ego_pose` (x, y, heading) in the scene frame."""
    c, s = math.cos(ego_pose[2]), math.sin(ego_pose[2])
    ego_rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    rotation = ego_rotation @ camera.sensor2ego_rotation
    position = np.array([ego_pose[0], ego_pose[1], 0.0]) + ego_rotation @ camera.sensor2ego_translation
    return CameraPose(world_to_camera=rotation.T, position=position, intrinsics=np.asarray(camera.intrinsics))


def project_points(camera: Camera, ego_pose: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scene-frame points (N, 3) seen by `camera` on the ego at `ego_pose` -> pixel coordinates (N, 2) and
    depth (N,) along the optical axis (m). A point at (u, v) falls in image pixel (row floor(v), column
    floor(u)); pixel coordinates of points with depth <= 0 are meaningless."""
    pose = camera_pose(camera, ego_pose)
    cam = pose.to_camera(points)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pose.to_pixels(cam), cam[..., 2]


def clip_polygon_near(polygon: np.ndarray, near: float) -> Optional[np.ndarray]:
    """Sutherland-Hodgman clip of a polygon (N, 3) in camera coordinates to z >= near; None if nothing is left."""
    d = polygon[:, 2] - near
    inside = d >= 0.0
    if inside.all():
        return polygon
    if not inside.any():
        return None
    nxt = np.roll(polygon, -1, axis=0)
    d_next = np.roll(d, -1)
    crossing = inside != (d_next >= 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crossing, d / (d - d_next), 0.0)
    intersections = polygon + t[:, None] * (nxt - polygon)
    # Each vertex is followed by the crossing point of the edge that leaves it, when there is one.
    ordered = np.stack([polygon, intersections], axis=1).reshape(-1, 3)
    keep = np.stack([inside, crossing], axis=1).reshape(-1)
    return ordered[keep]


def clip_segments_near(a: np.ndarray, b: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip segments a -> b (S, 3) in camera coordinates to z >= near. Returns the clipped ends and a (S,)
    mask of the segments that keep some length in front of the camera."""
    da, db = a[:, 2] - near, b[:, 2] - near
    keep = (da >= 0.0) | (db >= 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # t is only used where the ends straddle the plane
        t = da / (da - db)
        cut = a + t[:, None] * (b - a)
    a = np.where((da < 0.0)[:, None], cut, a)
    b = np.where((db < 0.0)[:, None], cut, b)
    return a, b, keep


def clip_segments_rect(p: np.ndarray, q: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Liang-Barsky clip of 2D segments p -> q (S, 2) to the rectangle [0, width] x [0, height]."""
    d = q - p
    t0 = np.zeros(len(p))
    t1 = np.ones(len(p))
    keep = np.ones(len(p), dtype=bool)
    for axis, upper in ((0, width), (1, height)):
        for sign, bound in ((-1.0, 0.0), (1.0, upper)):
            num = sign * (bound - p[:, axis])  # distance to the boundary, positive inside
            den = sign * d[:, axis]
            parallel = den == 0.0
            keep &= ~(parallel & (num < 0.0))
            with np.errstate(divide="ignore", invalid="ignore"):
                t = num / den
            leaving = den > 0.0
            entering = den < 0.0
            t1 = np.where(leaving, np.minimum(t1, t), t1)
            t0 = np.where(entering, np.maximum(t0, t), t0)
    keep &= t0 <= t1
    return p + t0[:, None] * d, p + t1[:, None] * d, keep


# --- rendering ---------------------------------------------------------------------------------------------

SKY = (156, 194, 230)


def render_cameras(scene: Scene, config: CameraConfig | Mapping[str, Any] | None = None) -> list[Camera]:
    """Render the rig of `config` for the 4 history frames of `scene`: Cameras with images (4, H, W, 3) uint8."""
    config = CameraConfig.from_any(config)
    return render_camera_images(scene, camera_rig(config), config)


def render_camera_images(
    scene: Scene, cameras: Sequence[Camera], config: CameraConfig | Mapping[str, Any] | None = None
) -> list[Camera]:
    """Render the history images of `scene` for calibrated `cameras` (e.g. those of a scene read from JSON);
    the image size comes from `config`. Returns new Camera objects with `images` (4, H, W, 3) uint8."""
    config = CameraConfig.from_any(config)
    world = build_world(scene)
    images = np.empty((len(cameras), C.NUM_HISTORY_FRAMES, config.height, config.width, 3), dtype=np.uint8)
    for frame, t in enumerate(C.history_times()):
        ego_pose = scene.ego_history[frame].pose
        boxes = world.boxes_at(t)
        for i, camera in enumerate(cameras):
            pose = camera_pose(camera, ego_pose)
            images[i, frame] = _render_view(world, boxes, pose, config)
    return [
        Camera(c.name, np.asarray(c.intrinsics).copy(), np.asarray(c.sensor2ego_rotation).copy(),
               np.asarray(c.sensor2ego_translation).copy(), images[i])
        for i, c in enumerate(cameras)
    ]


def _render_view(world: World, boxes: Boxes, pose: CameraPose, config: CameraConfig) -> np.ndarray:
    width, height, near = config.width, config.height, config.near_m
    image = Image.new("RGB", (width, height), SKY)
    draw = ImageDraw.Draw(image)

    # Ground: polygons in layer order (ground plane, road surface, stop lines), each clipped at the near plane.
    ground_cam = pose.to_camera(world.ground_vertices)
    for (start, end), colour in zip(world.ground_ranges, world.ground_colours):
        poly = clip_polygon_near(ground_cam[start:end], near)
        if poly is not None:
            _fill(draw, pose.to_pixels(poly), colour, width, height)

    # Lane markings: 1-pixel lines, clipped at the near plane and then at the image border.
    if len(world.segment_colours):
        a, b, keep = clip_segments_near(pose.to_camera(world.segments[:, 0]), pose.to_camera(world.segments[:, 1]), near)
        with np.errstate(divide="ignore", invalid="ignore"):
            p, q, inside = clip_segments_rect(pose.to_pixels(a), pose.to_pixels(b), width, height)
        p, q = p - _PIL_SHIFT, q - _PIL_SHIFT
        for i in np.flatnonzero(keep & inside):
            draw.line((p[i, 0], p[i, 1], q[i, 0], q[i, 1]), fill=world.segment_colours[i], width=1)

    # 3D boxes far to near; within a convex box the visible faces never overlap.
    if len(boxes.colours):
        verts_cam = pose.to_camera(boxes.vertices)  # (B, 8, 3)
        depth = verts_cam[:, :, 2]
        centre_depth = depth.mean(axis=1)
        face_centres = boxes.vertices[:, _FACES].mean(axis=2)  # (B, 5, 3)
        normals = face_centres - boxes.vertices.mean(axis=1)[:, None, :]
        visible = np.einsum("bfk,bfk->bf", normals, pose.position - face_centres) > 0.0
        in_front = depth.min(axis=1) >= near  # the common case: no clipping needed
        with np.errstate(divide="ignore", invalid="ignore"):
            pixels = pose.to_pixels(verts_cam)  # (B, 8, 2), meaningful where in front
        u, v = pixels[..., 0], pixels[..., 1]
        off_image = in_front & ((u.max(axis=1) < 0) | (u.min(axis=1) > width) | (v.max(axis=1) < 0) | (v.min(axis=1) > height))
        drawn = (depth.max(axis=1) > near) & (centre_depth < config.far_m) & ~off_image
        shifted = (pixels - _PIL_SHIFT).tolist()
        for b in np.flatnonzero(drawn)[np.argsort(-centre_depth[drawn])]:
            for f in np.flatnonzero(visible[b]):
                if in_front[b]:
                    draw.polygon([c for k in _FACE_LISTS[f] for c in shifted[b][k]], fill=boxes.colours[b][f])
                    continue
                poly = clip_polygon_near(verts_cam[b, _FACES[f]], near)
                if poly is not None:
                    _fill(draw, pose.to_pixels(poly), boxes.colours[b][f], width, height)
            lamp = boxes.lamps.get(int(b))
            if lamp is not None:
                _draw_lamp(draw, pose, lamp, near)
    return np.asarray(image)


# Faces of `box_vertices` (bottom 0-3, top 4-7, corners front-left, rear-left, rear-right, front-right):
# top, front, left, rear, right. The bottom is never seen on a flat world.
_FACES = np.array([[4, 5, 6, 7], [0, 3, 7, 4], [1, 0, 4, 5], [2, 1, 5, 6], [3, 2, 6, 7]])
_FACE_LISTS = _FACES.tolist()


LAMP_VISIBLE_DEG = 50.0
_LAMP_VISIBLE_COS = math.cos(math.radians(LAMP_VISIBLE_DEG))

# Pixel (i, j) covers [i, i + 1) x [j, j + 1) in projected coordinates; PIL puts pixel centres on integers.
_PIL_SHIFT = 0.5


def _fill(draw: ImageDraw.ImageDraw, pixels: np.ndarray, colour: tuple[int, int, int], width: int, height: int) -> None:
    u, v = pixels[:, 0], pixels[:, 1]
    if u.max() < 0 or u.min() > width or v.max() < 0 or v.min() > height:
        return
    draw.polygon((pixels - _PIL_SHIFT).ravel().tolist(), fill=colour)


def _draw_lamp(draw: ImageDraw.ImageDraw, pose: CameraPose, lamp, near: float) -> None:
    """The lit lamp of a traffic light: a disc at least 1 pixel in radius so its colour reads at any size,
    drawn only when the camera sees the signal's face (within `LAMP_VISIBLE_DEG` of the way it faces; a
    signal facing cross traffic shows no colour) or the facing is unknown."""
    centre, facing, radius_m, colour = lamp
    to_camera = pose.position[:2] - centre[:2]
    if facing is not None and float(np.dot(to_camera, facing)) <= _LAMP_VISIBLE_COS * float(np.linalg.norm(to_camera)):
        return
    cam = pose.to_camera(centre[None])[0]
    if cam[2] <= near:
        return
    u, v = pose.to_pixels(cam) - _PIL_SHIFT
    r = max(1.0, pose.intrinsics[0, 0] * radius_m / cam[2])
    draw.ellipse((u - r, v - r, u + r, v + r), fill=colour)


__all__ = [
    "CAMERA_MOUNTS",
    "CameraConfig",
    "CameraMount",
    "CameraPose",
    "camera_pose",
    "camera_rig",
    "clip_polygon_near",
    "mount_rotation",
    "pinhole_intrinsics",
    "project_points",
    "render_camera_images",
    "render_cameras",
]
