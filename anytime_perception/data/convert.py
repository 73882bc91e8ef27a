"""CLI: convert a labelled detection set between COCO, YOLO and VOC, optionally renaming or
merging classes, keeping some classes, taking one split or a subset.

    python -m anytime_perception.data.convert --data ../shared/datasets/road_signs --to coco \\
        --out sets/two_class/instances.json --rename speedlimit=sign,crosswalk=sign,stop=sign,trafficlight=light

``--out`` is the .json file for COCO and a folder for YOLO and VOC. Images are copied.
"""
from __future__ import annotations

import argparse
import sys

from .detection import DataError
from .formats import FORMATS, load_split
from .writers import WRITERS


def _mapping(text: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise DataError(f"--rename takes old=new pairs separated by commas, got {text!r}")
    return {old.strip(): new.strip() for old, new in pairs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.data.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="source set (COCO .json, YOLO folder, VOC folder)")
    p.add_argument("--format", default="auto", choices=FORMATS)
    p.add_argument("--images", help="COCO source: folder its file_name entries are relative to")
    p.add_argument("--to", required=True, choices=sorted(WRITERS))
    p.add_argument("--out", required=True, help="COCO: the .json to write; YOLO, VOC: the folder")
    p.add_argument("--split", default="all", choices=["all", "train", "val"], help="which part of the source")
    p.add_argument("--rename", default="", help="old=new,... (several old names may map to one new)")
    p.add_argument("--classes", default="", help="after renaming, keep only these classes (comma-separated)")
    p.add_argument("--limit", type=int, default=0, help="a seeded random subset of this many images")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        data = load_split(args.data, args.split, args.format, images=args.images)
        data = data.rename(_mapping(args.rename)) if args.rename else data
        if args.classes:
            data = data.select_classes([n.strip() for n in args.classes.split(",") if n.strip()])
        data = data.subset(args.limit, args.seed)
        WRITERS[args.to](data, args.out)
    except (DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {data.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
