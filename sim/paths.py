"""Reference paths: polylines parameterised by arc length, with Frenet (s, d) projections.

A `Path` is the backbone of everything that moves in the synthetic world: lane centre lines, the route
centre line, pedestrian walkways. `d` is the signed lateral offset, positive to the LEFT of the driving
direction; `s` is the arc length from the first vertex. Beyond its ends a path is extended along its end
headings, so poses and projections stay defined (and smooth) slightly outside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

from sim.geometry import polyline_arc_length, wrap_angle

DEFAULT_SPACING_M = 0.5  # dense resampling used for projections
ARC_SPACING_M = 1.0  # vertex spacing of generated arcs (chord sagitta 3 mm at a radius of 45 m)


class Path:
    """A planar polyline (N, 2) with arc length, vertex headings and curvature.

    The vertices are kept as given (a straight path has two), so building paths is cheap; projections use
    a dense resampling (every `spacing` m) built on first use."""

    def __init__(self, points: np.ndarray, spacing: float = DEFAULT_SPACING_M):
        points = np.asarray(points, dtype=np.float64)[:, :2]
        if points.shape[0] < 2:
            raise ValueError(f"a path needs at least 2 points, got {points.shape[0]}")
        keep = np.concatenate([[True], np.linalg.norm(np.diff(points, axis=0), axis=1) > 1e-9])
        points = points[keep]
        if len(points) < 2:
            raise ValueError("a path needs two distinct points")
        self.xy = _pin_long_segments(points, spacing)
        self.spacing = spacing
        self.s = polyline_arc_length(self.xy)
        d = np.gradient(self.xy, axis=0) if len(self.xy) > 2 else np.diff(self.xy, axis=0).repeat(2, axis=0)
        self.headings = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @cached_property
    def _dense(self) -> tuple[np.ndarray, cKDTree]:
        stations = np.arange(0.0, self.length, self.spacing)
        stations = np.append(stations, self.length) if stations[-1] < self.length else stations
        xy = np.stack([np.interp(stations, self.s, self.xy[:, 0]), np.interp(stations, self.s, self.xy[:, 1])], axis=-1)
        return stations, cKDTree(xy)

    @cached_property
    def segment_curvature(self) -> np.ndarray:
        """(N - 1,) signed curvature (1/m, positive = turning left) of each segment: heading change / length."""
        return np.diff(self.headings) / np.diff(self.s)

    def heading_at(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, self.s, self.headings)

    def curvature_at(self, s: np.ndarray | float) -> np.ndarray:
        """Curvature at arc lengths s (0 beyond the ends, where the path is extended straight)."""
        s = np.asarray(s, dtype=np.float64)
        index = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 2)
        return np.where((s < 0.0) | (s > self.length), 0.0, self.segment_curvature[index])

    def point_at(self, s: np.ndarray | float) -> np.ndarray:
        """Points (..., 2) at arc lengths s; linear extension beyond both ends."""
        s = np.asarray(s, dtype=np.float64)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        before, after = s < 0.0, s > self.length
        if np.any(before) or np.any(after):
            h0, h1 = self.headings[0], self.headings[-1]
            x = np.where(before, self.xy[0, 0] + s * np.cos(h0), x)
            y = np.where(before, self.xy[0, 1] + s * np.sin(h0), y)
            ds = s - self.length
            x = np.where(after, self.xy[-1, 0] + ds * np.cos(h1), x)
            y = np.where(after, self.xy[-1, 1] + ds * np.sin(h1), y)
        return np.stack([x, y], axis=-1)

    def pose_at(self, s: np.ndarray | float) -> np.ndarray:
        """Poses (..., 3) on the path at arc lengths s."""
        s = np.asarray(s, dtype=np.float64)
        return np.concatenate([self.point_at(s), wrap_angle(self.heading_at(s))[..., None]], axis=-1)

    def frenet_to_pose(self, s: np.ndarray, d: np.ndarray, d_prime: np.ndarray | None = None) -> np.ndarray:
        """Poses (..., 3) of a curve given by lateral offsets d(s) and their slopes dd/ds (default 0)."""
        s = np.asarray(s, dtype=np.float64)
        d = np.broadcast_to(np.asarray(d, dtype=np.float64), s.shape)
        d_prime = np.zeros_like(s) if d_prime is None else np.broadcast_to(d_prime, s.shape)
        if len(self.xy) == 2:  # a straight path (most roads): no interpolation needed
            h = float(self.headings[0])
            c, n = np.cos(h), np.sin(h)
            x = self.xy[0, 0] + s * c - d * n
            y = self.xy[0, 1] + s * n + d * c
            return np.stack([x, y, wrap_angle(h + np.arctan2(d_prime, 1.0))], axis=-1)
        base = self.pose_at(s)
        normal = np.stack([-np.sin(base[..., 2]), np.cos(base[..., 2])], axis=-1)
        xy = base[..., :2] + d[..., None] * normal
        stretch = 1.0 - self.curvature_at(s) * d
        heading = wrap_angle(base[..., 2] + np.arctan2(d_prime, stretch))
        return np.concatenate([xy, heading[..., None]], axis=-1)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frenet coordinates (s, d) of points (..., 2): arc length of the closest point and signed offset."""
        points = np.asarray(points, dtype=np.float64)
        flat = points.reshape(-1, 2)
        stations, tree = self._dense
        _, nearest = tree.query(flat)
        segment = np.clip(np.searchsorted(self.s, stations[nearest], side="right") - 1, 0, len(self.s) - 2)
        best_s = np.empty(len(flat))
        best_d = np.empty(len(flat))
        best_dist = np.full(len(flat), np.inf)
        last = len(self.xy) - 2  # index of the last segment
        for shift in (-2, -1, 0, 1, 2):  # the segment of the nearest dense point and its neighbours
            i0 = np.clip(segment + shift, 0, last)
            a, b = self.xy[i0], self.xy[i0 + 1]
            seg = b - a
            seg_len = np.linalg.norm(seg, axis=1)
            u = np.einsum("ij,ij->i", flat - a, seg) / seg_len
            # Only the first and last segments extend beyond their vertex (the path's linear extension).
            lo = np.where(i0 == 0, -np.inf, 0.0)
            hi = np.where(i0 == last, np.inf, seg_len)
            u = np.clip(u, lo, hi)
            foot = a + seg * (u / seg_len)[:, None]
            diff = flat - foot
            dist = np.linalg.norm(diff, axis=1)
            side = np.sign(seg[:, 0] * diff[:, 1] - seg[:, 1] * diff[:, 0])
            better = dist < best_dist - 1e-12
            best_dist = np.where(better, dist, best_dist)
            best_s = np.where(better, self.s[i0] + u, best_s)
            best_d = np.where(better, side * dist, best_d)
        return best_s.reshape(points.shape[:-1]), best_d.reshape(points.shape[:-1])

    def reversed(self) -> "Path":
        return Path(self.xy[::-1])


def _pin_long_segments(points: np.ndarray, spacing: float) -> np.ndarray:
    """Add a vertex `spacing` m inside each end of every long segment, so that vertex headings (central
    differences) stay exact along the segment and only blend near its ends."""
    seg = np.diff(points, axis=0)
    length = np.linalg.norm(seg, axis=1)
    long = np.flatnonzero(length > 3.0 * spacing)
    if long.size == 0 or len(points) == 2:
        return points
    out = [points[:1]]
    for i in range(len(seg)):
        if length[i] > 3.0 * spacing:
            u = spacing / length[i]
            out.append(np.stack([points[i] + u * seg[i], points[i + 1] - u * seg[i]]))
        out.append(points[i + 1 : i + 2])
    return np.concatenate(out, axis=0)


def concatenate(paths: list[Path]) -> Path:
    """One path through the given paths in order (duplicate joint points removed)."""
    points = [paths[0].xy]
    for path in paths[1:]:
        xy = path.xy
        if np.linalg.norm(xy[0] - points[-1][-1]) < 1e-6:
            xy = xy[1:]
        points.append(xy)
    return Path(np.concatenate(points, axis=0))


def straight(start: np.ndarray, heading: float, length: float) -> Path:
    """A straight path from `start` (2,) along `heading`."""
    direction = np.array([np.cos(heading), np.sin(heading)])
    return Path(np.stack([start, np.asarray(start) + length * direction]))


def arc(start: np.ndarray, heading: float, radius: float, angle: float) -> Path:
    """A circular arc from `start` (2,) with initial `heading`; angle > 0 turns left, < 0 turns right."""
    steps = max(4, int(np.ceil(abs(angle) * radius / ARC_SPACING_M)))
    phi = np.linspace(0.0, angle, steps + 1)
    sign = np.sign(angle) if angle != 0 else 1.0
    centre = np.asarray(start) + sign * radius * np.array([-np.sin(heading), np.cos(heading)])
    start_angle = heading - sign * np.pi / 2.0
    points = centre + radius * np.stack([np.cos(start_angle + phi), np.sin(start_angle + phi)], axis=-1)
    return Path(points)


@dataclass(frozen=True)
class Smoothstep:
    """A lateral transition d(s) from `d0` to `d1` between s0 and s1 (quintic, zero slope and curvature at
    both ends): lane changes, nudges, returning to the lane centre."""

    s0: float
    s1: float
    d0: float
    d1: float

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d, dd/ds) at arc lengths s."""
        s = np.asarray(s, dtype=np.float64)
        span = max(self.s1 - self.s0, 1e-6)
        u = np.clip((s - self.s0) / span, 0.0, 1.0)
        shape = u**3 * (10 - 15 * u + 6 * u**2)
        slope = 30 * u**2 * (1 - u) ** 2 / span
        delta = self.d1 - self.d0
        return self.d0 + delta * shape, delta * slope


@dataclass(frozen=True)
class QuinticReturn:
    """A lateral correction d(s) starting at s0 with offset d0 and slope m0 (zero curvature) and reaching
    0 with zero slope and curvature at s0 + length. Before s0 it is the history drift: the same slope m0
    fading linearly to zero over `history_length`, so the ego's past path is smooth too."""

    s0: float
    length: float
    d0: float
    m0: float
    history_length: float = 15.0

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(s, dtype=np.float64)
        L = self.length
        u = np.clip((s - self.s0) / L, 0.0, 1.0)
        # d(u) = d0 h0(u) + m0 L h1(u) with quintic Hermite bases (second derivatives 0 at both ends).
        h0 = 1 - 10 * u**3 + 15 * u**4 - 6 * u**5
        h1 = u - 6 * u**3 + 8 * u**4 - 3 * u**5
        dh0 = (-30 * u**2 + 60 * u**3 - 30 * u**4) / L
        dh1 = (1 - 18 * u**2 + 32 * u**3 - 15 * u**4) / L
        d_after = self.d0 * h0 + self.m0 * L * h1
        dp_after = self.d0 * dh0 + self.m0 * L * dh1
        # History: slope grows linearly from 0 (at s0 - H) to m0 (at s0).
        H = self.history_length
        r = np.clip(s - self.s0, -H, 0.0)
        d_before = self.d0 + self.m0 * (r + r**2 / (2 * H))
        dp_before = self.m0 * (1 + r / H)
        before = s < self.s0
        return np.where(before, d_before, d_after), np.where(before, dp_before, dp_after)


class LateralProfile:
    """The sum of lateral components d(s) (each a callable s -> (d, dd/ds)) relative to a reference path."""

    def __init__(self, components: tuple = ()):
        self.components = tuple(components)

    def __call__(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.asarray(s, dtype=np.float64)
        d, dp = np.zeros_like(s), np.zeros_like(s)
        for component in self.components:
            cd, cdp = component(s)
            d, dp = d + cd, dp + cdp
        return d, dp

    def plus(self, *components) -> "LateralProfile":
        return LateralProfile(self.components + tuple(components))
