"""An example reward plug-in: time headway to the vehicle ahead along the plan.

Load it from the config by module path or by file path:

    scorer:
      rewards:
        - {name: "rewards.plugins.time_headway:time_headway", weight: 0.2, kwargs: {target_s: 2.0}}
        - {name: "rewards/plugins/time_headway.py:time_headway", weight: 0.2}

For every plan pose (0.5 s apart) it looks for agents whose box centre lies in a corridor ahead of the ego
(lateral offset below `corridor_m`) at the same time, and takes the gap to the nearest divided by the ego's
speed there. reward = min(1, min headway / target_s); 1 when nothing is ahead or the ego is stopped.
"""
from __future__ import annotations

import numpy as np

from sim.conventions import AGENT_CURRENT_INDEX, PACIFICA
from sim.geometry import absolute_to_relative


def time_headway(batch, target_s: float = 2.0, corridor_m: float = 1.8, min_speed_mps: float = 1.0):
    out = []
    for item in batch:
        plan = np.asarray(item.trajectory, dtype=np.float64)
        dt = item.interval_s
        scene_poses = item.scene.to_scene_frame(plan)
        previous = np.vstack([item.scene.to_scene_frame(np.zeros(3))[None], scene_poses[:-1]])
        speeds = np.linalg.norm(scene_poses[:, :2] - previous[:, :2], axis=1) / dt
        headways = []
        for k, (pose, speed) in enumerate(zip(scene_poses, speeds)):
            t = (k + 1) * dt
            frame = AGENT_CURRENT_INDEX + int(round(t / 0.5))
            if speed < min_speed_mps:
                continue
            for agent in item.scene.agents:
                if frame >= len(agent.poses) or np.isnan(agent.poses[frame, 0]):
                    continue
                rel = absolute_to_relative(pose, agent.poses[frame])
                gap = rel[0] - PACIFICA.front_length - agent.length / 2.0
                if rel[0] > 0 and abs(rel[1]) < corridor_m:
                    headways.append(max(gap, 0.0) / speed)
        headway = min(headways) if headways else float("inf")
        out.append({"reward": float(min(1.0, headway / target_s)), "min_headway_s": float(min(headway, 99.0))})
    return out
