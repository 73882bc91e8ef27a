"""CLI: AppealNet's predictor q(x) on a trained nested detector (little: stage 0, big: the full model).

    python -m anytime_perception.training.appeal_detector --detector models/road_signs_anywidth/weights.pt \
        --data ../shared/datasets/road_signs --out runs/appeal_detector

The detector stays frozen (its stage-0 weights are shared by every later stage). For every training
image, and ``--passes`` randomly scaled and placed copies of it, the approximator loss is the
CenterNet loss of the little stage's heads and the big network's loss that of the last stage's
(white-box), or 0 with ``--black-box`` (the big detector as an oracle). The predictor is trained
with AppealNet's joint loss and its dynamic Lagrange multiplier (``training.appeal``). Writes
``<out>/last.pt`` (detector + predictor, for ``python -m anytime_perception.export``) and
``<out>/result.json`` (losses and q on the validation split, wall time, command).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.augment import AugmentConfig
from ..nets import AnyWidthDetector
from ..nets.checkpoint import build_from_checkpoint, load_checkpoint
from ..nets.appeal_detector import DetectorPredictor, detector_predictor
from ..nets.centernet import centernet_loss
from .appeal import LagrangeMultiplier, joint_loss
from .cli import command_line, configure_torch, run_cli
from .dataset import DetectionDataset

__all__ = ["load_detector", "per_image_loss", "collect", "fit_predictor", "main"]


def load_detector(path: str | Path) -> tuple[AnyWidthDetector, dict]:
    """A detector and its checkpoint (``weights_only``; a model directory reads its weights.pt)."""
    state = load_checkpoint(path)
    return build_from_checkpoint(state), state


def per_image_loss(pred: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
    """The CenterNet loss of every image of a batch ``[N]`` (each normalised by its own objects)."""
    losses = []
    for i in range(len(target["mask"])):
        parts = centernet_loss({k: v[i: i + 1] for k, v in pred.items()}, {k: v[i: i + 1] for k, v in target.items()})
        losses.append(sum(parts.values()))
    return torch.stack(losses)


@torch.no_grad()
def collect(model: AnyWidthDetector, predictor: DetectorPredictor, loader: DataLoader,
            desc: str = "collect") -> tuple[Tensor, Tensor, Tensor]:
    """Predictor features ``[N, F]``, little-stage and last-stage losses ``[N]`` over ``loader``."""
    features, little, big = [], [], []
    for images, targets in tqdm(loader, desc=desc, leave=False):
        carry: dict[str, Tensor] = {}
        heads = []
        for k in range(model.num_stages):
            new, out = model.forward_stage(images, carry, k)
            carry.update(new)
            heads.append(out)
        features.append(predictor.features(carry, heads[predictor.stage]))
        little.append(per_image_loss(heads[predictor.stage], targets))
        big.append(per_image_loss(heads[-1], targets))
    return torch.cat(features), torch.cat(little), torch.cat(big)


def fit_predictor(predictor: DetectorPredictor, features: Tensor, little: Tensor, big: Tensor,
                  multiplier: LagrangeMultiplier, epochs: int, lr: float = 0.05, batch_size: int = 64,
                  seed: int = 0) -> list[dict[str, float]]:
    """Train the predictor on collected features and losses (``big`` zeros: black-box)."""
    predictor.fit_standardisation(features)
    optimizer = torch.optim.Adam(predictor.linear.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in tqdm(range(epochs), desc="predictor", leave=False):
        for index in torch.randperm(len(features), generator=generator).split(batch_size):
            q = predictor.score(features[index])
            loss, predictor_loss = joint_loss(little[index], q, big[index], multiplier.beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            multiplier.update(float(predictor_loss))
            history.append({"loss": loss.item(), "predictor_loss": float(predictor_loss), "beta": multiplier.beta})
    return history


def _rank_correlation(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two ``[N]`` tensors (no ties expected)."""
    ranks = [x.argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m anytime_perception.training.appeal_detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", required=True, help="detector checkpoint (training or the exported weights.pt)")
    p.add_argument("--data", required=True, help="road_signs root")
    p.add_argument("--out", required=True)
    p.add_argument("--stage", type=int, default=0, help="the little detector: stages 0..stage")
    p.add_argument("--black-box", action="store_true", help="the big detector is an oracle (its loss is 0)")
    p.add_argument("--passes", type=int, default=4, help="augmented passes over the training split")
    p.add_argument("--epochs", type=int, default=60, help="epochs of the predictor over the collected features")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--target", type=float, default=0.5, help="target of the predictor loss mean(-log q)")
    p.add_argument("--beta", type=float, default=0.1, help="initial Lagrange multiplier")
    p.add_argument("--limit", type=int, default=0, help="use only this many training images (smoke runs)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _loader(data: str, split: str, model: AnyWidthDetector, labels: tuple[str, ...], augment: bool, limit: int,
            seed: int) -> DataLoader:
    # the predictor's recipe keeps the random flips it was measured with
    dataset = DetectionDataset.from_path(data, split, model.config.input_size, model.config.output_stride,
                                         AugmentConfig(flip=0.5) if augment else None, seed, classes=labels)
    if limit:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return DataLoader(dataset, batch_size=16, shuffle=False)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad data or checkpoints end it with one ``error:`` line (exit 2)."""
    args = _parse(argv)
    return run_cli(lambda: _run(args, argv))


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    configure_torch(args.threads, args.seed)
    model, state = load_detector(args.detector)
    labels = tuple(state["labels"])
    if not 0 <= args.stage < model.num_stages - 1:
        raise ValueError(f"--stage must be an early stage (0..{model.num_stages - 2}), got {args.stage}")
    predictor = detector_predictor(model, args.stage)
    start = time.time()
    passes = [collect(model, predictor, _loader(args.data, "train", model, labels, True, args.limit, args.seed + p),
                      desc=f"pass {p + 1}/{args.passes}") for p in range(args.passes)]
    features, little, big = (torch.cat(parts) for parts in zip(*passes))
    if args.black_box:
        big = torch.zeros_like(big)
    multiplier = LagrangeMultiplier(args.beta, args.target)
    history = fit_predictor(predictor, features, little, big, multiplier, args.epochs, args.lr, seed=args.seed)
    val_features, val_little, val_big = collect(model, predictor, _loader(args.data, "val", model, labels, False,
                                                                           args.limit, args.seed), desc="validation")
    with torch.no_grad():
        q = predictor.score(val_features)
    wall = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"stage": args.stage, "black_box": args.black_box}
    torch.save({**{k: v for k, v in state.items() if k not in ("appeal_head", "appeal")}, "model": model.state_dict(),
                "appeal_head": predictor.state_dict(), "appeal": meta}, out / "last.pt")
    result = {**meta, "train_samples": len(features), "final_beta": multiplier.beta,
              "final_predictor_loss": sum(h["predictor_loss"] for h in history[-20:]) / min(20, len(history)),
              "val_mean_q": float(q.mean()),
              # q should fall as the gain of appealing (little loss - big loss) rises: negative is right
              "val_rank_correlation_q_gain": _rank_correlation(q, val_little - val_big),
              "val_rank_correlation_q_little_loss": _rank_correlation(q, val_little),
              "val_little_loss": float(val_little.mean()), "val_big_loss": float(val_big.mean()), "wall_s": wall,
              "command": command_line("anytime_perception.training.appeal_detector", argv)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("val_mean_q", "val_rank_correlation_q_gain",
                                              "val_rank_correlation_q_little_loss", "final_beta", "wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
