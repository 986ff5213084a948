"""NAVSIM / OpenScene logs -> a scene dataset (`sim.dataset` shards + manifest), and the CLI
`python -m sim.navsim_logs` (also `python -m sim.navsim_convert`). Reading, conventions and trust are
described in `sim.navsim_logs`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from sim.navsim_logs import (OPENSCENE_IMAGE_SIZE, LogFormatError, MissingBlobError, NavsimLogReader,
                             read_scene_filter)
from sim.navsim_map import MapUnavailableError, NuplanMapSource


def convert_logs(reader: NavsimLogReader, out: str | Path, split: str, shard_size: int = 256,
                 progress: bool = True) -> dict:
    """Write every scene of `reader` as a dataset (`sim.dataset` shards + manifest) that SFT, GRPO and
    evaluation read like a synthetic one. NAVSIM scenes are `pos` samples of family "navsim". The manifest
    counts the scenes the reader skipped for missing blobs (`skipped_missing_blobs`); when every selected
    scene was skipped, `MissingBlobError` (with `skipped`) names the first missing blob."""
    from tqdm import tqdm

    from sim.dataset import SHARD_PATTERN, find_manifest, scene_to_row, write_manifest, write_shard

    out = Path(out)
    if find_manifest(out) is not None:
        raise FileExistsError(f"{out} already holds a dataset: choose another --out")
    rows, shards, count = [], [], 0
    bar = tqdm(desc=f"{split} scenes", unit="scene", disable=not progress)

    def flush():
        path = out / SHARD_PATTERN.format(len(shards))
        write_shard(path, rows, {"source": "navsim", "split": split})
        shards.append({"file": path.name, "rows": len(rows)})
        rows.clear()

    for scene in reader:
        scene.family = "navsim"
        rows.append(scene_to_row(scene, split))
        count += 1
        bar.update(1)
        if len(rows) == shard_size:
            flush()
    if rows:
        flush()
    bar.close()
    if count == 0 and reader.skipped:
        token, blob = reader.skipped[0]
        raise MissingBlobError(blob, token, reader.sensor_blobs, skipped=len(reader.skipped))
    if count == 0:
        raise LogFormatError(f"{reader.log_paths[0].parent}: no scene passed the filter (route, window length, tokens)")
    cfg = reader.camera_config
    manifest = {
        "split": split, "num_scenes": count, "source": "navsim",
        "logs": [str(p) for p in reader.log_paths],
        "counts": {"navsim": {"pos": count, "neg": 0, "rec": 0}},
        "counts_by_sample_type": {"pos": count, "neg": 0, "rec": 0},
        "skipped_missing_blobs": len(reader.skipped),
        "image_size": [cfg.height, cfg.width] if reader.with_images else None,
        "cameras": list(cfg.names) if reader.with_images else [], "shards": shards,
    }
    write_manifest(out, manifest)
    return manifest


CLI_DESCRIPTION = """\
Convert NAVSIM / OpenScene logs into a scene dataset for SFT, GRPO and evaluation.

NAVSIM's layout under $OPENSCENE_DATA_ROOT (as NAVSIM's download scripts unpack it):
  navsim_logs/trainval/<log_name>.pkl   sensor_blobs/trainval/<log_name>/CAM_F0/...
  navsim_logs/test/<log_name>.pkl       sensor_blobs/test/<log_name>/CAM_F0/...
  navsim_logs/mini/...                  sensor_blobs/mini/...
navtrain and navtest are not directories: navtrain is the trainval logs filtered by NAVSIM's navtrain
scene filter, navtest the test logs filtered by navtest.yaml (navsim/planning/script/config/common/
train_test_split/scene_filter/<name>.yaml: log names + scene tokens). Pass that YAML with
--scene-filter, or a file of scene tokens (one per line) with --tokens.

  python -m sim.navsim_logs --logs $OPENSCENE_DATA_ROOT/navsim_logs/trainval \\
      --sensor-blobs $OPENSCENE_DATA_ROOT/sensor_blobs/trainval \\
      --scene-filter scene_filter/navtrain.yaml --out data/navsim/navtrain --split train
  python -m sim.navsim_logs --logs $OPENSCENE_DATA_ROOT/navsim_logs/test \\
      --sensor-blobs $OPENSCENE_DATA_ROOT/sensor_blobs/test \\
      --scene-filter scene_filter/navtest.yaml --out data/navsim/navtest --split test
"""

CLI_EPILOG = """\
missing camera blobs: NAVSIM's navtrain download holds the trainval logs but the blobs of navtrain
scenes only. When scenes are selected by token (--tokens, or a --scene-filter listing tokens), a
selected scene whose blobs are missing stops the conversion with an error naming the blob; otherwise
such scenes are skipped, counted and reported at the end (and in the manifest's
skipped_missing_blobs). --missing-blobs overrides either default.

trust: a log pickle is a program, not just data. Logs are read with an unpickler that admits only the
plain data and numpy arrays OpenScene logs hold and refuses anything else before it runs, after a
format check (regular file, size, pickle header). Convert only logs from OpenScene / NAVSIM's own
distribution. --trust-pickles reads with plain pickle, which runs whatever the file says: only for
logs you trust that hold other types.
"""


def _image_size(text: str) -> tuple[int, int]:
    import argparse

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return w, h


def _missing_blob_message(err: MissingBlobError) -> str:
    what = (f"none of the {err.skipped} selected scenes has its camera blobs (first missing: {err.path}, "
            f"scene {err.token})") if err.skipped else f"camera blob {err.path} of scene {err.token} is missing"
    return (f"{what}. Check --sensor-blobs (sensor_blobs/<split> of the same split as --logs), select the "
            "scenes whose blobs you have with --scene-filter or --tokens, skip scenes without blobs with "
            "--missing-blobs skip, or convert without images with --no-images")


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m sim.navsim_logs", description=CLI_DESCRIPTION,
                                     epilog=CLI_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", required=True,
                        help="navsim_logs/<split> (trainval, test, mini) or one log pickle of it")
    parser.add_argument("--sensor-blobs", help="sensor_blobs/<split> of the same split (needed unless --no-images)")
    parser.add_argument("--out", required=True, help="dataset directory to write (must not hold a dataset)")
    parser.add_argument("--split", default="train", help="split name recorded in the dataset (default: train)")
    select = parser.add_mutually_exclusive_group()
    select.add_argument("--scene-filter", help="a NAVSIM scene-filter YAML (e.g. scene_filter/navtrain.yaml)")
    select.add_argument("--tokens", help="a file with one scene token per line")
    parser.add_argument("--missing-blobs", choices=("skip", "error"),
                        help="scenes whose camera blobs are missing: skip and count them, or stop with an error "
                             "(default: error when scenes are selected by token, skip otherwise)")
    parser.add_argument("--maps-root", help="nuPlan maps (default: $NUPLAN_MAPS_ROOT)")
    parser.add_argument("--no-map", action="store_true", help="scenes without map (imitation only; not scorable)")
    parser.add_argument("--no-images", action="store_true", help="no camera images (calibration only)")
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--source-image-size", type=_image_size, default=OPENSCENE_IMAGE_SIZE, metavar="WxH",
                        help="size of the logged images, for the intrinsics with --no-images (default: 1920x1080)")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="read log pickles with plain pickle, which runs code in them: only for trusted logs")
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args(argv)
    if not args.no_images and not args.sensor_blobs:
        parser.error("--sensor-blobs is required unless --no-images")
    try:
        selection: dict[str, Any] = {}
        if args.scene_filter:
            selection = read_scene_filter(args.scene_filter)
        elif args.tokens:
            try:
                selection = {"tokens": Path(args.tokens).read_text().split()}
            except OSError as e:
                raise ValueError(f"{args.tokens}: cannot read the token file ({e.strerror})") from e
        missing_blobs = args.missing_blobs or ("error" if selection.get("tokens") is not None else "skip")
        map_source = None if args.no_map else NuplanMapSource(args.maps_root, map_root_name="--maps-root",
                                                              without_map="pass --no-map")
        reader = NavsimLogReader(args.logs, args.sensor_blobs, with_map=not args.no_map, map_source=map_source,
                                 camera_config={"height": args.height, "width": args.width},
                                 with_images=not args.no_images, missing_blobs=missing_blobs,
                                 source_image_size=args.source_image_size, trusted=args.trust_pickles, **selection)
        manifest = convert_logs(reader, args.out, args.split, args.shard_size)
    except MissingBlobError as err:
        print(f"error: {_missing_blob_message(err)}", file=sys.stderr)
        return 2
    except (LogFormatError, MapUnavailableError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {manifest['num_scenes']} scenes in {len(manifest['shards'])} shard(s)")
    if reader.skipped:
        print(f"skipped {len(reader.skipped)} scene(s) whose camera blobs are missing under {args.sensor_blobs} "
              f"(first: {reader.skipped[0][1]})")
    if reader.missing_logs:
        print(f"{len(reader.missing_logs)} log(s) named by the filter are not in {args.logs} "
              f"(first: {reader.missing_logs[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
