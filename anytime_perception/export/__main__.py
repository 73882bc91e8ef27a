"""CLI: ``python -m anytime_perception.export --checkpoint runs/anywidth/last.pt --out models/NAME``."""
from __future__ import annotations

import argparse

import torch

from ..data.road_signs import CLASSES
from ..nets import build_model
from ..training.dataset import MEAN, STD
from ..training.train import load_checkpoint
from .stages import export_stages, verify_stages


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (last.pt)")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--name", default=None, help="model name in the manifest (default: out dir name)")
    args = parser.parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    cfg = state["config"]
    model = build_model(cfg["model"], num_classes=len(CLASSES), input_size=cfg["input_size"])
    model.load_state_dict(state["model"])
    path = export_stages(model, args.out, args.name or args.out.rstrip("/").split("/")[-1], CLASSES, MEAN, STD)
    torch.save({"model": model.state_dict(), "config": cfg}, f"{args.out}/weights.pt")
    size = cfg["input_size"]
    error = verify_stages(model, args.out, torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    print(f"wrote {path}; max |onnx - torch| over all stage heads = {error:.2e}")


if __name__ == "__main__":
    main()
