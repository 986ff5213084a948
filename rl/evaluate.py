"""Score a saved policy (or a baseline) with NAVSIM's PDMS / EPDMS on a dataset or a folder of scene JSON files.

    python -m rl.evaluate --checkpoint DIR --scenes DIR [--version v1|v2] [--out DIR]
    python -m rl.evaluate --baseline constant_velocity|ground_truth|human_log --scenes DIR [...]
    python -m rl.evaluate --checkpoint DIR --scenes DIR --speed-scale 0.85 [...]

`--speed-scale s` (0 < s <= 1) drives each of the policy's plans along its own path at s times its speed (pose k
taken at time s * t_k): a scene-blind slow-down, the baseline that tells a learned gain from driving slower
(`best_speed_scale` chooses s on a validation split).

`--scenes`: a dataset written by `python -m sim.generate` (any seed; e.g. runs/demo/data/test), one of its shard
files, a folder of scene JSON files (`../shared/spec/scene_json.md`) or one such file. Writes to --out:
  results.csv   one row per scene with the columns of NAVSIM's result CSV (v1: token, valid,
                no_at_fault_collisions, drivable_area_compliance, ego_progress,
                time_to_collision_within_bound, comfort, driving_direction_compliance, score; v2 adds
                traffic_light_compliance, lane_keeping, history_comfort, two_frame_extended_comfort) plus
                family, sample_type and error; a final `average` row over the valid scenes (failed scenes are
                reported with valid = False and their error, and left out of the average, as in NAVSIM);
  summary.json  the average, per scenario family and per sample type, and the failed scenes;
and prints the summary table. Only the policy needs camera images; the baselines score any scene.
Exit status: 0 when scenes were scored (a warning on stderr says how many failed, if any), 1 when every
scene failed (results.csv still lists each one's error), 2 for bad arguments or unreadable inputs.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from rl.policy.config import ACTION_SOURCES
from rl.tracking import strict_json
from sim.conventions import SAMPLE_TYPES
from sim.scene import Scene

if TYPE_CHECKING:
    from rewards.pdm.scorer import PDMScorer, PreparedScene

logger = logging.getLogger(__name__)

BASELINES = ("constant_velocity", "ground_truth", "human_log")
# The speed scales a slowed plan may take (`slowed`) when one is chosen on a validation split (`chosen_speed_scale`).
SPEED_SCALES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
# Long names accepted on the command line for the dataset's sample types.
SAMPLE_TYPE_ALIASES = {"positive": "pos", "negative": "neg", "recovery": "rec"}


class EvaluationError(ValueError):
    """An evaluation that cannot give a result: bad arguments, no scenes selected, or every scene failed."""


def parse_sample_types(text: str) -> Optional[list[str]]:
    """`--sample-types`: comma-separated pos / neg / rec (or positive / negative / recovery), or 'all' (None)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return None
    unknown = [t for t in names if t not in SAMPLE_TYPES and t not in SAMPLE_TYPE_ALIASES]
    if unknown or not names:
        valid = ", ".join(SAMPLE_TYPES)
        raise EvaluationError(f"--sample-types {text!r}: unknown sample type(s) {unknown or [text]}; valid: {valid}"
                              f" (or positive, negative, recovery), comma-separated, or 'all'")
    return list(dict.fromkeys(SAMPLE_TYPE_ALIASES.get(t, t) for t in names))
# scene_json keys -> NAVSIM result-CSV columns
V1_COLUMNS = {"NC": "no_at_fault_collisions", "DAC": "drivable_area_compliance", "EP": "ego_progress",
              "TTC": "time_to_collision_within_bound", "C": "comfort", "DDC_weight0": "driving_direction_compliance",
              "PDMS": "score"}
V2_COLUMNS = {"NC": "no_at_fault_collisions", "DAC": "drivable_area_compliance", "DDC": "driving_direction_compliance",
              "TLC": "traffic_light_compliance", "EP": "ego_progress", "TTC": "time_to_collision_within_bound",
              "LK": "lane_keeping", "HC": "history_comfort", "EC": "two_frame_extended_comfort", "EPDMS": "score"}
# Families whose typical mistakes the negative samples show (collisions with the lead, cut-ins, red lights).
NEGATIVE_PRONE_FAMILIES = ("cut_in", "lead_braking", "red_light", "stop_and_go", "vru_crossing", "unprotected_left")


def columns_for(version: str) -> dict[str, str]:
    return V1_COLUMNS if version == "v1" else V2_COLUMNS


# --- scenes ---------------------------------------------------------------------------------------------------

def iter_scenes(path: str | Path, sample_types: Optional[Sequence[str]] = None) -> tuple[int, Iterator[Scene]]:
    """(count, scenes) from a dataset directory / shard, a folder of scene JSON files, or one JSON file."""
    from sim.dataset import LEGACY_MANIFEST_NAME, MANIFEST_NAME, SceneDataset, find_manifest
    from sim.generate_resume import LEGACY_SPLITS_SUMMARY, SPLITS_SUMMARY
    from sim.scene_json import load_scene_json

    SUMMARY_FILES = (MANIFEST_NAME, LEGACY_MANIFEST_NAME, SPLITS_SUMMARY, LEGACY_SPLITS_SUMMARY)  # not scenes

    path = Path(path)
    json_files = sorted(path.glob("*.json")) if path.is_dir() else ([path] if path.suffix == ".json" else [])
    json_files = [f for f in json_files if f.name not in SUMMARY_FILES]
    is_dataset = path.is_file() and path.suffix == ".parquet" or path.is_dir() and (
        find_manifest(path) is not None or any(path.glob("shard-*.parquet")))
    if is_dataset:
        dataset = SceneDataset(path)
        where = {"sample_type": list(sample_types)} if sample_types else None
        count = dataset.read(["token"], where=where).num_rows
        if count == 0:
            present = dataset.read(["sample_type"]).column("sample_type").to_pylist()
            have = ", ".join(f"{t} {present.count(t)}" for t in SAMPLE_TYPES if t in present) or "no scenes"
            raise EvaluationError(f"--scenes {path}: no scenes of sample type(s) {list(sample_types or [])}"
                                  f" (it holds: {have}); choose them with --sample-types")
        return count, dataset.scenes(where=where)
    if json_files:
        def load() -> Iterator[Scene | UnreadableScene]:
            for file in json_files:
                try:
                    scene, _, _ = load_scene_json(file)
                except Exception as err:  # reported as a failed scene, like NAVSIM's failed tokens
                    yield UnreadableScene(file.stem, f"{type(err).__name__}: {err}")
                    continue
                if not sample_types or scene.sample_type in sample_types:
                    yield scene
        return len(json_files), load()
    raise FileNotFoundError(f"--scenes {path}: not a dataset (_manifest.json / shard-*.parquet) nor scene JSON files")


@dataclass
class UnreadableScene:
    """A scene file that could not be read: reported as a failed row."""

    token: str
    error: str
    family: str = ""
    sample_type: str = ""


# --- planners -------------------------------------------------------------------------------------------------

def constant_velocity_plan(scene: Scene, horizon: int = 8, interval_s: float = 0.5) -> np.ndarray:
    """(horizon, 3): keep the current velocity (ego frame) and heading."""
    t = (np.arange(horizon) + 1) * interval_s
    return np.stack([scene.ego.vx * t, scene.ego.vy * t, np.zeros(horizon)], axis=-1)


def ground_truth_plan(scene: Scene, horizon: int = 8, interval_s: float = 0.5) -> np.ndarray:
    """The scene's ground truth resampled to the plan's grid (rec scenes: the recovery; 5 s at 0.5 s stored)."""
    if scene.future is None:
        raise ValueError(f"scene {scene.token!r} has no ground-truth future")
    from rl.policy.trajectory import resample_poses

    return resample_poses(np.asarray(scene.future, dtype=np.float64), 0.5, horizon, interval_s)


def human_log_plan(scene: Scene, horizon: int = 8, interval_s: float = 0.5) -> np.ndarray:
    """The drive the scene's log holds (`human_trajectory`, 0.5 s apart) on the plan's grid: NAVSIM's human agent.
    In the synthetic world with human logs, a logged mistake where the human made one."""
    if scene.human_trajectory is None:
        raise ValueError(f"scene {scene.token!r} has no logged drive (human_trajectory)")
    from rl.policy.trajectory import resample_poses

    return resample_poses(np.asarray(scene.human_trajectory, dtype=np.float64), 0.5, horizon, interval_s)


BASELINE_PLANS = {"constant_velocity": constant_velocity_plan, "ground_truth": ground_truth_plan,
                  "human_log": human_log_plan}


@dataclass
class Planner:
    """Plans for a batch of scenes: the policy (expert or action tokens) or a baseline; with `speed_scale` < 1
    each plan is driven along its path at that fraction of its speed (`slowed`)."""

    name: str
    policy: object = None
    action_source: Optional[str] = None
    horizon: int = 8
    interval_s: float = 0.5
    speed_scale: float = 1.0
    drive_pace: bool = True  # False: a policy's plans as its flow draws them, before its pace head drives them

    @property
    def label(self) -> str:
        """The planner as results name it: its name, and its speed scale when it slows its plans."""
        return self.name if self.speed_scale == 1.0 else f"{self.name} at {self.speed_scale:g} x speed"

    def __call__(self, scenes: list[Scene]) -> np.ndarray:
        if self.policy is not None:
            missing = [s.token for s in scenes if not s.cameras or any(c.images is None for c in s.cameras)]
            if missing:
                raise ValueError(f"scenes {missing[:3]} have no camera images: the policy needs them (baselines do not)")
            plans = self.policy.plan(scenes, action_source=self.action_source, drive_pace=self.drive_pace).trajectories
        else:
            make = BASELINE_PLANS[self.name]
            plans = np.stack([make(s, self.horizon, self.interval_s) for s in scenes])
        return slowed(plans, self.speed_scale, self.interval_s)


def check_speed_scale(speed_scale: float) -> float:
    if not 0.0 < speed_scale <= 1.0:
        raise ValueError(f"--speed-scale {speed_scale}: must lie in (0, 1] (a plan is only known up to its last pose)")
    return float(speed_scale)


def slowed(plans: np.ndarray, speed_scale: float, interval_s: float) -> np.ndarray:
    """Plans (..., N, 3) (ego frame, a pose every `interval_s`) driven along the same path at `speed_scale` times
    their speed: pose k becomes the plan's pose at time speed_scale * t_k (linear interpolation, the origin at
    t = 0). Scale 1 returns the plans unchanged."""
    from rl.policy.trajectory import resample_poses

    if check_speed_scale(speed_scale) == 1.0:
        return plans
    return resample_poses(plans, interval_s, plans.shape[-2], interval_s * speed_scale)


def load_planner(checkpoint: Optional[str], baseline: Optional[str], action_source: Optional[str],
                 speed_scale: float = 1.0) -> Planner:
    check_speed_scale(speed_scale)
    if baseline:
        if baseline not in BASELINES:
            raise ValueError(f"--baseline {baseline!r}: expected one of {BASELINES}")
        return Planner(baseline, speed_scale=speed_scale)
    import torch

    from rl.policy import SpanVLAPolicy

    from rl.policy.policy_dir import CheckpointError

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        policy = SpanVLAPolicy.load(checkpoint, device=device).eval()
    except CheckpointError as err:
        raise EvaluationError(f"--checkpoint {checkpoint}: {err}") from None
    source = action_source or policy.config.plan_source
    e = policy.config.expert
    return Planner(f"policy[{source}]", policy, source, e.horizon, e.interval_s, speed_scale)


# --- scoring --------------------------------------------------------------------------------------------------

class PreparedScenes:
    """The plan-independent part of scoring (`PDMScorer.prepare`: map, occupancy, PDM-Closed), kept per
    (scene token, NAVSIM version) for the scenes of one source, so that evaluating several planners on one split
    prepares each scene once (it is most of a baseline's scoring time). Holds about 60 kB per scene and version.
    """

    def __init__(self, source: Optional[str | Path] = None):
        self.source = Path(source).resolve() if source is not None else None  # None: not tied to a path
        self._per_scene: dict[str, dict] = {}  # token -> that scene's cache (`PDMScorer.prepare_cached`)

    def __len__(self) -> int:
        """How many (scene, version) preparations are kept."""
        return sum(len(c) for c in self._per_scene.values())

    def get(self, scorer: "PDMScorer", scene: Scene) -> "PreparedScene":
        """`scorer.prepare(scene)`, computed on the first request for its token and version."""
        return scorer.prepare_cached(scene, self._per_scene.setdefault(scene.token, {}))


def evaluate(planner: Planner, scenes: Iterator[Scene], total: int, versions: Sequence[str] = ("v1",),
             batch_size: int = 8, show_progress: bool = True,
             prepared: Optional[PreparedScenes] = None) -> dict[str, pd.DataFrame]:
    """Plan every scene once and score it with each NAVSIM version: {version: one row per scene (NAVSIM columns
    + family, sample_type, error)}; failed scenes have valid = False and their error. `prepared` keeps the
    scenes' preparation for later evaluations of the same scenes (a fresh one by default)."""
    from rewards.pdm import PDMScorer

    scorers = {v: PDMScorer(v) for v in versions}
    prepared = prepared if prepared is not None else PreparedScenes()
    rows: dict[str, list] = {v: [] for v in versions}

    def failed(token, family, sample_type, error, version):
        return {"token": token, "valid": False, **{c: math.nan for c in columns_for(version).values()},
                "family": family, "sample_type": sample_type, "error": error}

    bar = tqdm(total=total, desc=f"evaluate {planner.label}", unit="scene", disable=not show_progress, dynamic_ncols=True)
    for batch in _batches(scenes, batch_size):
        for s in (s for s in batch if isinstance(s, UnreadableScene)):
            for v in versions:
                rows[v].append(failed(s.token, "", "", f"reading: {s.error}", v))
        readable = [s for s in batch if not isinstance(s, UnreadableScene)]
        if readable:
            try:
                plans, plan_error = planner(readable), None
            except Exception as err:  # a planner failure fails the batch's scenes, reported
                plans, plan_error = [None] * len(readable), f"planner: {type(err).__name__}: {err}"
            for scene, plan in zip(readable, plans):
                for v in versions:
                    row = failed(scene.token, scene.family, scene.sample_type, plan_error, v)
                    if plan is not None:
                        try:
                            scorer = scorers[v]
                            result = scorer.score(prepared.get(scorer, scene), plan[None],
                                                  interval_s=planner.interval_s)[0]
                            names = columns_for(v)
                            row.update({names[k]: (math.nan if result.get(k) is None else float(result[k])) for k in names})
                            row["valid"], row["error"] = True, None
                        except Exception as err:
                            row["error"] = f"scorer: {type(err).__name__}: {err}"
                    rows[v].append(row)
        bar.update(len(batch))
    bar.close()
    return {v: pd.DataFrame(r) for v, r in rows.items()}


def _batches(items: Iterator[Scene], size: int) -> Iterator[list[Scene]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def with_average_row(frame: pd.DataFrame, version: str) -> pd.DataFrame:
    """Append NAVSIM's `average` row: column means over the valid scenes."""
    valid = frame[frame["valid"]]
    average = {"token": "average", "valid": bool(len(valid)), "family": "", "sample_type": "", "error": None}
    average.update({c: float(valid[c].mean()) if len(valid) else math.nan for c in columns_for(version).values()})
    return pd.concat([frame, pd.DataFrame([average])], ignore_index=True)


def summarise(frame: pd.DataFrame, version: str) -> dict:
    """Averages overall, per family, per sample type and over the negative-prone families; failures."""
    cols = list(columns_for(version).values())
    valid = frame[frame["valid"]]

    def means(part: pd.DataFrame) -> dict:
        out = {c: float(part[c].mean()) for c in cols}
        out["num_scenes"] = int(len(part))
        out["at_fault_collision_rate"] = float((part["no_at_fault_collisions"] < 1.0).mean()) if len(part) else math.nan
        return out

    prone = valid[valid["family"].isin(NEGATIVE_PRONE_FAMILIES)]
    return {
        "version": version,
        "average": means(valid),
        "by_family": {f: means(g) for f, g in sorted(valid.groupby("family"))},
        "by_sample_type": {t: means(g) for t, g in sorted(valid.groupby("sample_type"))},
        "negative_prone_families": means(prone),
        "num_scenes": int(len(frame)),
        "num_failed": int((~frame["valid"]).sum()),
        "failed": [{"token": r.token, "error": r.error} for r in frame[~frame["valid"]].itertuples()],
    }


def format_summary(summary: dict, title: str = "") -> str:
    """A plain-text table: score and sub-scores per family, then the averages."""
    version = summary["version"]
    keys = [k for k in columns_for(version) if k not in ("DDC_weight0",)]
    names = columns_for(version)
    header = f"{'':24s}{'n':>5s}" + "".join(f"{k:>7s}" for k in keys) + f"{'coll%':>7s}"
    lines = [title, header] if title else [header]

    def line(label: str, m: dict) -> str:
        return f"{label:24s}{m['num_scenes']:5d}" + "".join(f"{m[names[k]]:7.3f}" for k in keys) + \
            f"{100 * m['at_fault_collision_rate']:7.1f}"

    for family, m in summary["by_family"].items():
        lines.append(line(family, m))
    for sample_type, m in summary["by_sample_type"].items():
        lines.append(line(f"[{sample_type}]", m))
    if summary["negative_prone_families"]["num_scenes"]:
        lines.append(line("negative-prone families", summary["negative_prone_families"]))
    lines.append(line("average", summary["average"]))
    if summary["failed"]:
        lines.append(f"failed scenes: {len(summary['failed'])} (see results.csv)")
    return "\n".join(lines)


def write_results(out: str | Path, frame: pd.DataFrame, summary: dict) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with_average_row(frame, summary["version"]).to_csv(out_dir / "results.csv", index=False)
    (out_dir / "summary.json").write_text(strict_json(summary))


def run_evaluation(scenes: str, out: Optional[str], versions: Sequence[str] = ("v1",), checkpoint: Optional[str] = None,
                   baseline: Optional[str] = None, action_source: Optional[str] = None,
                   sample_types: Optional[Sequence[str]] = None, batch_size: int = 8,
                   show_progress: bool = True, prepared: Optional[PreparedScenes] = None,
                   speed_scale: float = 1.0) -> dict[str, dict]:
    """Evaluate (planning each scene once) and return {version: summary}. With `out`, writes results.csv and
    summary.json there (one version) or under <out>/<version>/ (several). `prepared`, shared by evaluations of
    the same `scenes`, prepares each scene once for all of them. `speed_scale` < 1 scores the plans `slowed`."""
    if prepared is not None and prepared.source != Path(scenes).resolve():
        raise ValueError(f"--scenes {scenes}: the prepared scenes given are those of {prepared.source}")
    planner = load_planner(checkpoint, baseline, action_source, speed_scale)
    total, stream = iter_scenes(scenes, sample_types)
    frames = evaluate(planner, stream, total, versions, batch_size, show_progress, prepared)
    summaries = {}
    for version, frame in frames.items():
        if frame.empty:
            raise EvaluationError(f"--scenes {scenes}: no scenes of sample type(s) {list(sample_types or [])}"
                                  " to score; choose them with --sample-types")
        summary = summarise(frame, version)
        summary["planner"] = planner.label
        summary["scenes"] = str(scenes)
        if out:
            write_results(Path(out) if len(versions) == 1 else Path(out) / version, frame, summary)
        summaries[version] = summary
    return summaries


def named_checkpoints(checkpoints: str, names: Optional[str] = None) -> list[tuple[str, str]]:
    """[(name, directory)] of comma-separated `checkpoints` and their comma-separated `names` (default: the
    directories themselves), as the benchmarks that compare several policies take them; ValueError when the two
    lists differ in length."""
    paths = [c.strip() for c in checkpoints.split(",") if c.strip()]
    labels = [n.strip() for n in names.split(",")] if names else paths
    if len(labels) != len(paths):
        raise ValueError(f"--names gives {len(labels)} names for {len(paths)} checkpoints")
    return list(zip(labels, paths))


def planner_identity(spec: dict) -> dict:
    """What an evaluation is of: the planner's spec (`run_evaluation`'s checkpoint / baseline / action_source /
    speed_scale) and, for a checkpoint, the name, size and modification time of each of its files, so that a policy
    trained again at the same path is evaluated again."""
    identity = dict(spec)
    if spec.get("checkpoint") is not None:
        root = Path(spec["checkpoint"])
        identity["checkpoint files"] = [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns]
                                        for f in sorted(root.rglob("*")) if f.is_file()]
    return identity


def cached_evaluation(scenes: str | Path, out: Path, versions: Sequence[str], spec: dict,
                      sample_types: Optional[Sequence[str]] = ("pos",),
                      prepared: Optional[PreparedScenes] = None) -> dict[str, dict]:
    """`run_evaluation` of the planner `spec` into `out` (`out/<version>/` for several versions), reusing the
    summaries there only while `out/planner.json` (its `planner_identity`) matches: results of another planner,
    another speed scale or another policy at the same path are never reported for this one. -> {version: summary}."""
    from rl.checkpoint import write_json_atomic

    done = [(out / v if len(versions) > 1 else out) / "summary.json" for v in versions]  # where run_evaluation writes
    identity, record = planner_identity(spec), out / "planner.json"
    if all(f.is_file() for f in done) and record.is_file() and json.loads(record.read_text()) == identity:
        return {v: json.loads(f.read_text()) for v, f in zip(versions, done)}
    if record.is_file() or any(f.is_file() for f in done):
        logger.info("%s: its results are of another planner or policy (or from before planner.json); evaluating "
                    "again", out)
    results = run_evaluation(str(scenes), str(out), versions, sample_types=sample_types, prepared=prepared, **spec)
    write_json_atomic(record, identity)
    return results


def readable_scenes(path: str | Path, sample_types: Optional[Sequence[str]] = ("pos",), limit: Optional[int] = None,
                    seed: int = 0) -> list[Scene]:
    """The scenes of `path` (`iter_scenes`) of `sample_types` (None: all) that could be read; unreadable ones
    are skipped. With `limit`, at most that many of them, drawn with `seed` and kept in the split's order."""
    _, stream = iter_scenes(path, None if sample_types is None else list(sample_types))
    scenes = [s for s in stream if not isinstance(s, UnreadableScene)]
    if limit is not None and len(scenes) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(scenes), limit, replace=False))
        scenes = [scenes[i] for i in keep]
    return scenes


def best_scales(scores: np.ndarray, scales: Sequence[float]) -> np.ndarray:
    """Each row's best scale of `scales` (scores (S, len(scales))); ties go to the larger scale."""
    order = np.argsort(scales)[::-1]  # larger scales first: argmax keeps the first of equal maxima
    return np.asarray(scales)[order][np.argmax(scores[:, order], axis=1)]


def plan_scenes(planner: Planner, scenes: list[Scene], batch_size: int = 8) -> np.ndarray:
    """The planner's plans (S, N, 3) for `scenes`, planned in batches of `batch_size`."""
    return np.concatenate([planner(batch) for batch in _batches(iter(scenes), batch_size)])


def slowed_scores(plans: np.ndarray, scenes: list[Scene], scales: Sequence[float], scorer, prepared: PreparedScenes,
                  interval_s: float) -> np.ndarray:
    """(S, len(scales)) v1 PDMS (EPDMS for a v2 `scorer`) of each scene's plan (plans (S, N, 3), ego frame) driven
    at each speed scale (`slowed`); each scene is prepared once through `prepared`."""
    moved = np.stack([slowed(plans, s, interval_s) for s in scales], 1)  # (S, scales, N, 3)
    key = "PDMS" if scorer.version == "v1" else "EPDMS"
    return np.array([[r[key] for r in scorer.score(prepared.get(scorer, scene), group, interval_s=interval_s)]
                     for scene, group in zip(scenes, moved)])


def best_speed_scale(checkpoint: str, scenes: str, scales: Sequence[float], version: str = "v1",
                     prepared: Optional[PreparedScenes] = None, action_source: Optional[str] = None,
                     max_scenes: Optional[int] = None) -> tuple[float, dict[float, float]]:
    """The speed scale (of `scales`) whose `slowed` plans of the policy (from `action_source`, default its config's)
    score the best mean PDMS (EPDMS for v2) on the positive scenes of `scenes` (a validation or training split:
    choose it there, report it on the test split; at most `max_scenes` of them, a seeded draw), and the mean score
    of each scale. The policy plans each scene once; ties go to the larger scale (the plan as it is)."""
    from rewards.pdm import PDMScorer

    for s in scales:
        check_speed_scale(s)
    planner = load_planner(checkpoint, None, action_source)
    prepared = prepared if prepared is not None else PreparedScenes()
    scorer = PDMScorer(version)
    readable = readable_scenes(scenes, limit=max_scenes)
    if not readable:
        raise EvaluationError(f"--scenes {scenes}: no readable positive scene to choose a speed scale on")
    plans = plan_scenes(planner, readable)  # (S, N, 3)
    ordered = sorted(set(float(x) for x in scales), reverse=True)
    scores = slowed_scores(plans, readable, ordered, scorer, prepared, planner.interval_s)  # (S, scales)
    means = {s: float(m) for s, m in zip(ordered, scores.mean(0))}
    best = max(ordered, key=lambda s: (round(means[s], 12), s))
    return best, means


def chosen_speed_scale(checkpoint: str, split: str | Path, record: Path, scales: Sequence[float] = SPEED_SCALES,
                       action_source: Optional[str] = None, max_scenes: Optional[int] = None) -> dict:
    """`best_speed_scale` of the policy on `split` (a validation split, or a draw of `max_scenes` of a training
    split's), kept in the JSON file `record` and read back from it when it exists: {"speed scale": the chosen
    scale, "val PDMS": {"<scale>": mean PDMS on `split`}}."""
    if record.is_file():
        return json.loads(record.read_text())
    scale, means = best_speed_scale(checkpoint, str(split), scales, action_source=action_source, max_scenes=max_scenes)
    chosen = {"speed scale": scale, "val PDMS": {f"{s:g}": m for s, m in means.items()}}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(strict_json(chosen))
    return chosen


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status: 0 scored (some scenes may have failed: a warning says how many), 1 every scene failed,
    2 bad arguments or inputs."""
    from rewards.pdm.scorer import VERSIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--checkpoint", help="a saved policy directory (e.g. <run>/ckpt/step_N/policy or an SFT policy)")
    who.add_argument("--baseline", choices=BASELINES)
    parser.add_argument("--scenes", required=True, help="dataset dir / shard, folder of scene JSON files, or one file")
    parser.add_argument("--version", choices=(*VERSIONS, "both"), default="v1",
                        help="NAVSIM v1 (PDMS), v2 (EPDMS), or both (written to <out>/v1 and <out>/v2)")
    parser.add_argument("--out", help="folder for results.csv and summary.json")
    parser.add_argument("--action-source", choices=ACTION_SOURCES, help="policy trajectories (default: its config)")
    parser.add_argument("--sample-types", default="pos",
                        help=f"comma-separated sample types to score: {', '.join(SAMPLE_TYPES)} (or positive, negative,"
                             " recovery), or 'all'")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--speed-scale", type=float, default=1.0,
                        help="drive each plan along its path at this fraction of its speed, in (0, 1] (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sample_types = parse_sample_types(args.sample_types)
        versions = VERSIONS if args.version == "both" else (args.version,)
        summaries = run_evaluation(args.scenes, args.out, versions, args.checkpoint, args.baseline,
                                   args.action_source, sample_types, args.batch_size, speed_scale=args.speed_scale)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = 0
    for version, summary in summaries.items():
        failed, total = summary["num_failed"], summary["num_scenes"]
        first = "; ".join(f"{f['token']}: {f['error']}" for f in summary["failed"][:3])
        where = ""
        if args.out:
            csv = Path(args.out) / ("" if len(summaries) == 1 else version) / "results.csv"
            where = f" (each scene's error: {csv})"
        if failed == total:
            print(f"error: NAVSIM {version}: all {total} scenes failed, nothing was scored{where}; first: {first}",
                  file=sys.stderr)
            status = 1
            continue
        print(format_summary(summary, f"{summary['planner']} on {args.scenes} (NAVSIM {version})"))
        if failed:
            print(f"warning: NAVSIM {version}: {failed} of {total} scenes failed and are left out of the average"
                  f"{where}; first: {first}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
