"""CLI: ``python -m anytime_perception.training --data ../shared/datasets/road_signs``."""
from __future__ import annotations

import argparse
from dataclasses import fields

from .train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=f"(default {f.default})")
        elif f.name == "data":
            parser.add_argument(flag, required=True, help="road_signs root (images/ + annotations/)")
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            parser.add_argument(flag, type=kind, default=f.default, help=f"(default {f.default})")
    args = parser.parse_args(argv)
    print(train(TrainConfig(**vars(args))))


if __name__ == "__main__":
    main()
