"""The README's scene pictures: `python -m sim.pictures --out docs/images`.

One picture per family (a few families by default): the cameras at t = -1.5 s and t = 0, the bird's-eye
view with the ground truth (and the negative or recovery trajectory), and the scene's reasoning text.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from sim.bev import save_scene_picture
from sim.cameras import CameraConfig, render_cameras
from sim.conventions import SAMPLE_TYPES

# Families that together show lights, cross traffic, cones and a lane change; the ones the generator knows
# are drawn, and families spread over FAMILIES fill up to four.
PREFERRED_FAMILIES = ("red_light", "cut_in", "construction_zone", "unprotected_left")


def write_pictures(out: Path, families: Sequence[str], seed: int = 0, camera: Optional[CameraConfig] = None,
                   dpi: int = 100) -> list[Path]:
    """One picture per family at `out/<family>_<sample type>.png`; sample types cycle pos, neg, rec."""
    from sim.scenarios import make_scene

    camera = camera or CameraConfig(height=128, width=256)
    paths = []
    for i, family in enumerate(families):
        sample_type = SAMPLE_TYPES[i % len(SAMPLE_TYPES)]
        scene = make_scene(family, seed + i, sample_type)
        scene.cameras = render_cameras(scene, camera)
        paths.append(save_scene_picture(out / f"{family}_{sample_type}.png", scene, camera_frames=(0, -1), dpi=dpi))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    from sim.scenarios import FAMILIES

    parser = argparse.ArgumentParser(prog="python -m sim.pictures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--families", default=None, help=f"comma-separated families (default: {', '.join(PREFERRED_FAMILIES)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args(argv)
    if args.families is None:
        families = [f for f in PREFERRED_FAMILIES if f in FAMILIES]
        families += [f for f in FAMILIES[:: max(1, len(FAMILIES) // 4)] if f not in families][: 4 - len(families)]
    else:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; known: {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    for path in write_pictures(args.out, families, args.seed, CameraConfig(height=args.height, width=args.width)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
