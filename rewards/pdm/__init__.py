"""NAVSIM's PDM score for plans in a scene: PDMS (navsim v1.1) and EPDMS (navsim v2.2).

    from rewards.pdm import PDMScorer
    scorer = PDMScorer(version="v2")
    prepared = scorer.prepare(scene)            # sim.scene.Scene; PDM-Closed is cached on the scene
    results = scorer.score(prepared, plans)     # plans (G, 8, 3), ego frame, 0.5 s steps -> G dicts

Modules: `drivable` (map polygons, ego-area flags), `observation` (10 Hz objects from 2 Hz logs),
`metrics` (NC, DAC, DDC, TLC, EP, TTC, LK), `comfort` (C, HC, EC), `proposals` (scoring and aggregation
of proposals scored together), `pdm_closed` (the reference planner), `scorer` (the API), `__main__` (CLI).
"""
from rewards.pdm.scorer import PDMScorer, PlanError, PreparedScene

__all__ = ["PDMScorer", "PlanError", "PreparedScene"]
