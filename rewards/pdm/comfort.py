"""Comfort (v1 C), history comfort (v2 HC) and two-frame extended comfort (v2 EC).

Six checks on Savitzky-Golay-filtered signals of a 10 Hz state sequence; a sequence is comfortable when
every value of every signal is strictly inside its bound. Filter windows and signals per version follow
NAVSIM (`pdm_comfort_metrics.py`): v2 shifts the longitudinal/lateral accelerations to the box centre
(only the x component gets the centripetal and angular terms) and uses 8/15/5-sample windows; v1 uses the
raw rear-axle accelerations and whole-sequence windows for the acceleration bounds and the jerk derivatives.
Values are rounded to 8 decimals before the bound tests, as in NAVSIM.

The Savitzky-Golay filter (scipy, mode "interp") is linear: it is applied here as a matrix, obtained once
per (length, window, order, derivative) by filtering the identity with scipy, and summed row by row, so a
plan's values never depend on the other plans of its batch (scipy's edge fit solves all rows of a batch
at once and its last bits do). The two agree to rounding error, far below the 8-decimal rounding.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import savgol_filter

from sim.conventions import PACIFICA
from sim.kinematics import StateIndex

MAX_ABS_MAG_JERK = 8.37  # m/s^3
MAX_ABS_LAT_ACCEL = 4.89  # m/s^2
MAX_LON_ACCEL = 2.40
MIN_LON_ACCEL = -4.05
MAX_ABS_YAW_ACCEL = 1.93  # rad/s^2
MAX_ABS_LON_JERK = 4.13  # m/s^3
MAX_ABS_YAW_RATE = 0.95  # rad/s

EC_ACCELERATION = 0.7  # RMS of the differences, m/s^2
EC_JERK = 0.5
EC_YAW_RATE = 0.1
EC_YAW_ACCEL = 0.1
EC_OVERLAP = 5  # the previous frame started 0.5 s earlier: 5 steps of 0.1 s

_DECIMALS = 8


@lru_cache(maxsize=64)
def _savgol_matrix(length: int, window: int, order: int, deriv: int, delta: float) -> np.ndarray:
    """(length, length) matrix M with savgol_filter(x) = M @ x for sequences of `length` samples."""
    return savgol_filter(np.eye(length), window_length=window, polyorder=order, deriv=deriv, delta=delta, axis=0)


def savgol(y: np.ndarray, window: int, order: int, deriv: int = 0, delta: float = 1.0) -> np.ndarray:
    """scipy's savgol_filter(y, window, order, deriv, delta, axis=-1) for y (P, T), row by row."""
    matrix = _savgol_matrix(y.shape[-1], window, order, deriv, float(delta))
    return (matrix[None, :, :] * y[:, None, :]).sum(axis=-1)


def _acceleration(states: np.ndarray, coordinate: str, version: str, window: int = 8) -> np.ndarray:
    n_time = states.shape[1]
    ax, ay = states[..., StateIndex.ACCELERATION_X], states[..., StateIndex.ACCELERATION_Y]
    if coordinate == "magnitude":
        signal = np.hypot(ax, ay)
    elif version == "v1":
        signal = ax if coordinate == "x" else ay
    elif coordinate == "x":  # shifted to the box centre: + d * w^2 + d * dw/dt on x only
        d = PACIFICA.rear_axle_to_center
        yaw_rate = states[..., StateIndex.ANGULAR_VELOCITY]
        signal = ax + d * yaw_rate**2 + d * states[..., StateIndex.ANGULAR_ACCELERATION]
    else:
        signal = ay + 0.0 * states[..., StateIndex.ANGULAR_VELOCITY] ** 2 + 0.0 * states[..., StateIndex.ANGULAR_ACCELERATION]
    signal = savgol(signal, min(window, n_time), 2)
    return np.round(signal, decimals=_DECIMALS)


def _derivative(y: np.ndarray, times: np.ndarray, window: int, poly_order: int, deriv: int) -> np.ndarray:
    window = min(window, len(times))
    dx = np.diff(times, axis=-1).mean()
    return savgol(y, window, poly_order, deriv, dx)


def _jerk(states, coordinate, times, version, window=15) -> np.ndarray:
    acceleration = _acceleration(states, coordinate, version)
    return np.round(_derivative(acceleration, times, min(window, states.shape[1]), 2, 1), decimals=_DECIMALS)


def _phase_unwrap(headings: np.ndarray) -> np.ndarray:
    two_pi = 2.0 * np.pi
    adjustments = np.zeros_like(headings)
    adjustments[..., 1:] = np.cumsum(np.round(np.diff(headings, axis=-1) / two_pi), axis=-1)
    return headings - two_pi * adjustments


def _yaw_derivative(states, times, deriv=1, poly_order=2) -> np.ndarray:
    headings = _phase_unwrap(states[..., StateIndex.HEADING])
    return np.round(_derivative(headings, times, 5, poly_order, deriv), decimals=_DECIMALS)


def _within(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.all((values > low) & (values < high), axis=-1)


def comfort_checks(states: np.ndarray, version: str) -> np.ndarray:
    """(P, 6) bool: lon accel, lat accel, jerk magnitude, lon jerk, yaw accel, yaw rate within bounds.

    states (P, T, 11) at uniform 0.1 s steps (NAVSIM treats a history-padded sequence as uniform too).
    """
    n_time = states.shape[1]
    times = np.arange(0, n_time).astype(np.float64) * 0.1
    accel_window = n_time if version == "v1" else 8
    jerk_window = n_time if version == "v1" else 15
    return np.stack(
        [
            _within(_acceleration(states, "x", version, accel_window), MIN_LON_ACCEL, MAX_LON_ACCEL),
            _within(_acceleration(states, "y", version, accel_window), -MAX_ABS_LAT_ACCEL, MAX_ABS_LAT_ACCEL),
            _within(_jerk(states, "magnitude", times, version, jerk_window), -MAX_ABS_MAG_JERK, MAX_ABS_MAG_JERK),
            _within(_jerk(states, "x", times, version, jerk_window), -MAX_ABS_LON_JERK, MAX_ABS_LON_JERK),
            _within(_yaw_derivative(states, times, deriv=2, poly_order=3), -MAX_ABS_YAW_ACCEL, MAX_ABS_YAW_ACCEL),
            _within(_yaw_derivative(states, times), -MAX_ABS_YAW_RATE, MAX_ABS_YAW_RATE),
        ],
        axis=-1,
    )


def is_comfortable(states: np.ndarray, version: str) -> np.ndarray:
    """(P,) 1.0 if all six checks pass, else 0.0."""
    return comfort_checks(states, version).all(axis=-1).astype(np.float64)


def history_padded(states: np.ndarray, history: np.ndarray) -> np.ndarray:
    """(P, H + T, 11): the logged history states (H, 11) in front of every simulated sequence (P, T, 11)."""
    padded = np.zeros((states.shape[0], len(history) + states.shape[1], states.shape[2]), dtype=np.float64)
    padded[:, : len(history)] = history
    padded[:, len(history) :] = states
    return padded


def _ec_features(states: np.ndarray, times: np.ndarray) -> list[np.ndarray]:
    return [
        _acceleration(states, "magnitude", "v2"),
        _jerk(states, "magnitude", times, "v2"),
        _yaw_derivative(states, times),
        _yaw_derivative(states, times, deriv=2),  # NAVSIM's extended comfort keeps polynomial order 2 here
    ]


def two_frame_extended_comfort(current: np.ndarray, previous: np.ndarray) -> float:
    """EC of a plan's simulated states (41, 11) given the previous frame's (41, 11), 0.5 s earlier.

    The two rollouts overlap on 36 states (current 0..35, previous 5..40); EC = 1 if the RMS differences of
    acceleration, jerk, yaw rate and yaw acceleration are all within their thresholds.
    """
    a = current[:-EC_OVERLAP][None]
    b = previous[EC_OVERLAP:][None]
    times = np.arange(a.shape[1]) * 0.1
    thresholds = (EC_ACCELERATION, EC_JERK, EC_YAW_RATE, EC_YAW_ACCEL)
    ok = True
    for fa, fb, limit in zip(_ec_features(a, times), _ec_features(b, times), thresholds):
        ok &= bool(np.sqrt(np.mean((fa - fb) ** 2, axis=1))[0] <= limit)
    return float(ok)
