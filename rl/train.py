"""GRPO post-training on Ray.

    python -m rl.train --config configs/tiny.yaml [key=value ...]

Starts a local Ray when none is running (or joins the cluster of RAY_ADDRESS / `ray.address`), and runs the
same way under `ray job submit --working-dir . -- python -m rl.train ...` against a cluster started with
`ray start --head`. Scaling is configuration only (rollout.num_workers, rollout.gpus_per_worker,
scorer.num_workers, learner.num_workers, learner.gpus_per_worker).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from rl.config import TrainConfig
from rl.config_io import ConfigError, load_config
from rl.tracking import setup_console_logging


def parse_args(argv: Optional[list[str]] = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML file in configs/")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. rollout.num_workers=4")
    args = parser.parse_args(argv)
    return load_config(TrainConfig, args.config, args.overrides)


def main(argv: Optional[list[str]] = None) -> int:
    setup_console_logging()
    from sim.dataset import DatasetError

    try:
        cfg = parse_args(argv)
        from rl.driver import GRPODriver

        driver = GRPODriver(cfg)
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    driver.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
