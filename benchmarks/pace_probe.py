"""Could a pace head choose its speed by scene from what it reads? A linear probe on the pace head's input.

`benchmarks/pace_choice.py` shows that trained pace heads drive nearly every scene at one speed. This asks whether
that is the head's training or its input. For a policy and two splits, per positive scene: the pace head's input
(the expert's final features at flow time 1 for the flow's plan, averaged over the waypoint tokens: what
`ActionExpert.pace_mean` reads; a policy without a head gets a new one, which changes no plan) and the v1 PDMS of
the flow's plan driven at each scale of `rl.evaluate.SPEED_SCALES`. A ridge regression from features to each
scale's PDMS gain over the plan as it is is fitted on the training split (its penalty chosen by 5-fold
cross-validation there); each test scene then drives at the scale with the highest predicted gain (the plan as it
is when no gain is predicted). Feature sets, each probed alike:

  expert     the pace head's input (hidden size of the expert)
  ego        the numbers the prompt gives (history poses, velocity, acceleration, command: the expert's history
             features), a control: what the expert features add beyond them
  family     the scenario family, one-hot: not an input of the policy, a reference for a choice by scene type

Reported on the test split: the plan as it is (speed 1), the best single scale (chosen on the training split, as a
scene-blind speed would be), each probe's PDMS, the per-scene oracle, and each probe's Spearman correlation of
chosen against best scale. Prints a table and writes its numbers as JSON with `--out`.

    python benchmarks/pace_probe.py --checkpoint runs/demo/grpo/policy --train runs/demo/data/train \
        --test runs/demo/data/test [--max-train 600] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import numpy as np
from scipy.stats import spearmanr

from rewards.pdm import PDMScorer
from rl.evaluate import SPEED_SCALES, PreparedScenes, best_scales, readable_scenes, slowed_scores
from rl.tracking import strict_json

FEATURE_SETS = ("expert", "ego", "family")
PENALTIES = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # ridge penalties, relative to the number of training scenes


def fit_ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression of y (S, K) on standardised x (S, D) with an unpenalised intercept: (mean, scale, weights
    (D, K), intercept (K,)). The penalty is per training scene (multiplied by S)."""
    mean, scale = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / scale
    weights = np.linalg.solve(z.T @ z + penalty * len(z) * np.eye(z.shape[1]), z.T @ (y - y.mean(0)))
    return mean, scale, weights, y.mean(0)


def predict_ridge(model: tuple, x: np.ndarray) -> np.ndarray:
    mean, scale, weights, intercept = model
    return ((x - mean) / scale) @ weights + intercept


def choose_penalty(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """The penalty of `PENALTIES` with the least squared error over `folds`-fold cross-validation."""
    order = np.random.default_rng(seed).permutation(len(x))
    parts = np.array_split(order, folds)
    errors = []
    for penalty in PENALTIES:
        error = 0.0
        for k in range(folds):
            train = np.concatenate([p for j, p in enumerate(parts) if j != k])
            model = fit_ridge(x[train], y[train], penalty)
            error += float(((predict_ridge(model, x[parts[k]]) - y[parts[k]]) ** 2).sum())
        errors.append(error)
    return PENALTIES[int(np.argmin(errors))]


def chosen_columns(predicted_gain: np.ndarray) -> np.ndarray:
    """Per scene, the column of the best predicted gain over the plan as it is (column 0, gain 0 by definition)."""
    return np.argmax(np.concatenate([np.zeros((len(predicted_gain), 1)), predicted_gain], 1), axis=1)


def probe(train_x: np.ndarray, train_scores: np.ndarray, test_x: np.ndarray, test_scores: np.ndarray,
          scales: tuple[float, ...]) -> dict:
    """Fit on the training split's gains (scores[:, 1:] - scores[:, :1]; column 0 is speed 1) and drive each test
    scene at its predicted best scale. Returns the test PDMS, the mean chosen scale, the rank correlation of chosen
    against best scale and the penalty."""
    gains = train_scores[:, 1:] - train_scores[:, :1]
    penalty = choose_penalty(train_x, gains)
    model = fit_ridge(train_x, gains, penalty)
    columns = chosen_columns(predict_ridge(model, test_x))
    chosen = np.asarray(scales)[columns]
    best = best_scales(test_scores, scales)
    corr = (spearmanr(chosen, best).statistic
            if np.ptp(chosen) > 0 and np.ptp(best) > 0 else None)
    return {"pdms": float(test_scores[np.arange(len(columns)), columns].mean()), "mean_scale": float(chosen.mean()),
            "rank_corr": None if corr is None or not np.isfinite(corr) else float(corr), "penalty": penalty}


def scene_features(policy, scenes: list, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the pace head's input per scene (S, hidden), the flow's plans (S, N, 3)), read by a hook on the head."""
    captured: list[np.ndarray] = []
    hook = policy.expert.pace_head.register_forward_pre_hook(
        lambda _module, args: captured.append(args[0].detach().float().cpu().numpy()))
    plans = []
    try:
        for i in range(0, len(scenes), batch_size):
            plans.append(policy.plan(scenes[i:i + batch_size], action_source="expert", drive_pace=False).trajectories)
    finally:
        hook.remove()
    return np.concatenate(captured), np.concatenate(plans)


def main(argv: Optional[list[str]] = None) -> int:
    import torch

    from rl.policy import SpanVLAPolicy
    from rl.policy.expert import history_features
    from rl.policy.policy_dir import CheckpointError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved policy (a pace head is added if it has none)")
    parser.add_argument("--train", required=True, help="the split the probe is fitted on (its positive scenes)")
    parser.add_argument("--test", required=True, help="the split it is scored on (its positive scenes)")
    parser.add_argument("--max-train", type=int, default=600, help="at most this many training scenes (seeded draw)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(1)
    try:
        policy = SpanVLAPolicy.load(args.checkpoint).eval()
    except CheckpointError as err:
        print(f"--checkpoint {args.checkpoint}: {err}", file=sys.stderr)
        return 2
    had_head = policy.expert.pace_head is not None
    if not had_head:
        policy.add_pace_head()
    splits = {"train": readable_scenes(args.train, limit=args.max_train, seed=args.seed),
              "test": readable_scenes(args.test)}
    for name, scenes in splits.items():
        if not scenes:
            print(f"--{name} {getattr(args, name)}: no readable positive scene", file=sys.stderr)
            return 2
    families = sorted({s.family for scenes in splits.values() for s in scenes})
    scales = tuple(SPEED_SCALES)
    scorer, prepared, interval = PDMScorer("v1"), PreparedScenes(), policy.config.expert.interval_s
    data = {}
    for name, scenes in splits.items():
        expert, plans = scene_features(policy, scenes, args.batch_size)
        data[name] = {
            "scores": slowed_scores(plans, scenes, scales, scorer, prepared, interval),  # (S, scales)
            "expert": expert,
            "ego": np.stack([history_features(s) for s in scenes]),
            "family": np.array([[s.family == f for f in families] for s in scenes], dtype=np.float64),
        }
    train, test = data["train"], data["test"]
    single = int(np.argmax(train["scores"].mean(0)))
    table = {
        "plan": float(test["scores"][:, 0].mean()),
        "best_single": float(test["scores"][:, single].mean()), "best_single_scale": scales[single],
        "oracle": float(test["scores"].max(1).mean()),
        "probes": {f: probe(train[f], train["scores"], test[f], test["scores"], scales) for f in FEATURE_SETS},
    }
    print(f"test scenes {len(splits['test'])}, training scenes {len(splits['train'])}; v1 PDMS on the test split")
    print(f"{'plan (speed 1)':<40} {table['plan']:.3f}")
    print(f"{'best single scale (' + format(table['best_single_scale'], 'g') + ', chosen on train)':<40} "
          f"{table['best_single']:.3f}")
    for name, row in table["probes"].items():
        corr = "-" if row["rank_corr"] is None else f"{row['rank_corr']:+.2f}"
        print(f"{'probe on ' + name + ' features':<40} {row['pdms']:.3f}  mean scale {row['mean_scale']:.2f}  "
              f"rank corr. {corr}")
    print(f"{'per-scene oracle':<40} {table['oracle']:.3f}")
    if args.out:
        record = {"checkpoint": args.checkpoint, "train": args.train, "test": args.test, "speed_scales": list(scales),
                  "had_pace_head": had_head, "train_scenes": len(splits["train"]), "test_scenes": len(splits["test"]),
                  "seconds": time.perf_counter() - began, **table}
        with open(args.out, "w") as f:
            f.write(strict_json(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
