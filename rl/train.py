"""GRPO post-training on Ray.

    python -m rl.train --config configs/tiny.yaml [key=value ...]

Starts a local Ray when none is running (or joins the cluster of RAY_ADDRESS / `ray.address`), and runs the
same way under `ray job submit --working-dir . -- python -m rl.train ...` against a cluster started with
`ray start --head`. Scaling is configuration only (rollout.num_workers, rollout.gpus_per_worker,
scorer.num_workers, learner.num_workers, learner.gpus_per_worker).

Before Ray starts, the config and what it names are checked (`rl.input_checks`): reward functions and their
kwargs, the `policy_init` policy directory, the datasets; a bad input exits with status 2 and an error that
names the key.

Trust: reward specs are code. `scorer.rewards[i].name` may name any importable function
(`package.module:function`) or a Python file (`path/to/file.py:function`); checking the config imports it
here, and every scorer worker imports it again, which runs the module's code. Use only configs and
plug-in files you trust.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from rl.config import TrainConfig
from rl.config_io import load_config
from rl.tracking import setup_console_logging


def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file in configs/")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. rollout.num_workers=4")
    args = parser.parse_args(argv)
    return load_config(TrainConfig, args.config, args.overrides)


def main(argv: Optional[list[str]] = None) -> int:
    """Exit status: 0 done, 2 a bad config or input (reported before Ray starts), 3 too many unscorable samples."""
    setup_console_logging()
    try:
        cfg = parse_args(argv)
        from rl.driver import GRPODriver

        driver = GRPODriver(cfg)  # checks what the config names (rl.input_checks) before Ray starts
    except (ValueError, FileNotFoundError) as err:  # ConfigError, InputError, DatasetError, CheckpointError, ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    from rl.grpo.unscorable import UnscorableShareError

    try:
        driver.run()
    except UnscorableShareError as err:  # too many samples could not be scored (scorer.max_unscorable_share)
        print(f"error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
