"""SteppingNet on real CIFAR-10 images: nesting invariant, construction, baselines, increment export."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from functools import partial

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import stepping_report  # experiments/ (conftest puts it on sys.path)
from anytime_perception.export.stages import verify_stages
from anytime_perception.export.stepping import export_stepping
from anytime_perception.nets.slimmable import SlimmableClassifier, fit_ratios
from anytime_perception.nets.stepping import LENET_3C1L, LENET_5, ConvSpec, SteppingNet, SteppingSpec
from anytime_perception.runtime.engine import AnytimeEngine
from anytime_perception.runtime.model import AnytimeModel
from anytime_perception.runtime.modes import load_modes
from anytime_perception.training import stepping_run
from anytime_perception.training.classification import batches, load_classification
from anytime_perception.nets.checkpoint import load_checkpoint
from anytime_perception.training.stepping import (SteppingConfig, assign_regular_levels, construct,
                                                  distillation_loss, make_optimizer, move_neurons, our_options,
                                                  scoped_weight_decay, suppress_gradients, update_pruning)

from conftest import CIFAR10, MODES_FILE


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    assert CIFAR10.is_file(), f"real data expected at {CIFAR10}"
    return load_classification(str(CIFAR10), train_limit=1024, test_limit=256,
                               cache_dir=str(tmp_path_factory.mktemp("cache")))


# a top-down step: conv 3 reads conv 2 upsampled x2 next to conv 1 (``ConvSpec.lateral``)
LATERAL = SteppingSpec("lateral", (ConvSpec(8, 3, 1, pool=False), ConvSpec(12, 3, 1, pool=False, stride=2),
                                   ConvSpec(12, 3, 1, pool=False, stride=2), ConvSpec(10, 1, 0, pool=False, lateral=1),
                                   ConvSpec(8, 3, 1, pool=False)), num_classes=6, head="conv")


def _random_levels(model: SteppingNet, seed: int = 0) -> SteppingNet:
    g = torch.Generator().manual_seed(seed)
    for l in range(model.num_hidden):
        levels = torch.randint(0, model.num_subnets + 1, model.levels(l).shape, generator=g)
        levels[0] = 0
        model.set_levels(l, levels)
    for bn in model.norms:  # non-trivial BN statistics
        bn.running_mean.normal_(generator=g)
        bn.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


def _dense_reference(model: SteppingNet, x: torch.Tensor, subnet: int) -> torch.Tensor:
    """Subnet ``subnet`` as one dense masked network: W[o, i] kept iff level(i) <= level(o) <= subnet."""
    h, in_levels = x, torch.zeros(3, dtype=torch.long)
    for l in range(model.num_hidden):
        levels = model.levels(l)
        if l == len(model.convs):
            h, in_levels = h.flatten(1), in_levels.repeat_interleave(model.flat_hw)
        mask = (in_levels[None, :] <= levels[:, None]) & (levels[:, None] <= subnet)
        weight = model.weighted_layers[l].weight
        active = (levels <= subnet).float()
        if l < len(model.convs):
            spec = model.spec.convs[l]
            h = F.relu(model.norms[l](F.conv2d(h, weight * mask[:, :, None, None], padding=spec.padding)))
            h = (F.max_pool2d(h, 2) if spec.pool else h) * active.view(1, -1, 1, 1)
        else:
            h = F.relu(F.linear(h, weight * mask, model.fcs[l - len(model.convs)].bias)) * active
        in_levels = levels
    if not model.spec.hidden:
        h, in_levels = h.flatten(1), in_levels.repeat_interleave(model.flat_hw)
    return F.linear(h, model.out.weight * (in_levels <= subnet).float()[None], model.out.bias)


@pytest.mark.parametrize("spec", [LENET_3C1L, LENET_5.expanded(2.0)], ids=lambda s: s.name)
def test_increments_equal_the_dense_masked_subnets(spec):
    model = _random_levels(SteppingNet(spec, 3))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        outputs = model.forward_all(x)
        for subnet in range(3):
            reference = _dense_reference(model, x, subnet)
            assert torch.allclose(outputs[subnet], reference, atol=1e-4)
            assert torch.allclose(model(x, subnet), reference, atol=1e-4)


@pytest.mark.parametrize("scale_at", ["weighted_sum", "output"])
@pytest.mark.parametrize("spec", [LENET_3C1L.expanded(0.5), LENET_5.expanded(2.0), LATERAL], ids=lambda s: s.name)
def test_training_forward_equals_the_increments(spec, scale_at):
    """Training runs each subnet fused (one masked op per layer): same outputs and gradients."""
    model = _random_levels(SteppingNet(spec, 3), seed=4).train()
    x = torch.randn(8, 3, 32, 32)
    for subnet in range(3):
        scales = [torch.ones(w, requires_grad=True) for w in model.widths]
        fused = model(x, subnet, scales, scale_at)
        fused.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()] + [r.grad.clone() for r in scales]
        model.zero_grad()
        scales = [torch.ones(w, requires_grad=True) for w in model.widths]
        carry = {}
        for k in range(subnet + 1):
            new, increments = model.forward_increment(x, carry, k, scales, scale_at)
            carry.update(new)
        increments.square().sum().backward()
        reference = [p.grad.clone() for p in model.parameters()] + [r.grad.clone() for r in scales]
        model.zero_grad()
        assert torch.allclose(fused, increments, atol=1e-4)
        assert all(torch.allclose(g, r, atol=1e-3) for g, r in zip(grads, reference))


def _lenet5_by_hand(model: SteppingNet, x: torch.Tensor, r: list[torch.Tensor], scale_at: str) -> torch.Tensor:
    """The logits of a one-subnet LeNet-5 in eval mode, written out layer by layer, with the importance
    scales ``r`` on each neuron's weighted sum (Eq. 1; with BN: on gamma x the normalised sum, before
    the shift) or on its output after BN/ReLU/pooling."""
    def column(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 1, 1)

    on_sum = scale_at == "weighted_sum"
    h = x
    for c, (conv, bn) in enumerate(zip(model.convs, model.norms)):
        normed = (conv(h) - column(bn.running_mean)) / torch.sqrt(column(bn.running_var) + bn.eps) * column(bn.weight)
        h = F.max_pool2d(F.relu(normed * (column(r[c]) if on_sum else 1) + column(bn.bias)), 2)
        h = h if on_sum else h * column(r[c])
    h = h.flatten(1)
    for i, fc in enumerate(model.fcs):
        weighted = F.linear(h, fc.weight)
        r_fc = r[len(model.convs) + i]
        h = F.relu(weighted * r_fc + fc.bias) if on_sum else F.relu(weighted + fc.bias) * r_fc
    return model.out(h)


@pytest.mark.parametrize("scale_at", ["weighted_sum", "output"])
def test_importance_scale_sits_where_scale_at_says(scale_at):
    """Eq. 1: d_j = relu(r_j * sum_k d_jk w_jk + b_j). With r_j = 0 an FC unit outputs relu(b_j) and a
    conv channel relu(BN shift) for every input (the paper's placement); on the output (ours) both 0."""
    model = SteppingNet(LENET_5, 1).eval()  # every neuron at level 0
    with torch.no_grad():
        for bn in model.norms:  # non-trivial BN statistics
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
        model.fcs[0].bias.fill_(0.5)
        model.norms[1].bias.fill_(0.25)
    r = [torch.ones(w) for w in model.widths]
    r[1][3], r[2][7], r[2][8], r[3][0] = 0.0, 0.0, 2.0, 0.5
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        new, logits = model.forward_increment(x, {}, 0, r, scale_at)
        assert torch.allclose(logits, _lenet5_by_hand(model, x, r, scale_at), atol=1e-4)
        conv2, fc1 = new["h1.0"][:, 3], new["h2.0"][:, 7]  # every neuron is level 0: in index order
        if scale_at == "weighted_sum":
            assert torch.allclose(conv2, torch.full_like(conv2, 0.25))
            assert torch.allclose(fc1, torch.full_like(fc1, 0.5))
        else:
            assert not conv2.any() and not fc1.any()
        unscaled = model.forward_increment(x, {}, 0)[1]
        assert not torch.allclose(logits, unscaled)  # the scales act
    with pytest.raises(ValueError, match="scale_at"):
        model.forward_increment(x, {}, 0, r, "bias")


@pytest.mark.parametrize("spec", [LENET_3C1L, LATERAL], ids=lambda s: s.name)
def test_new_neurons_never_feed_old_ones(spec):
    """Changing a level-2 neuron's weights leaves subnets 0 and 1 bit-identical."""
    model = _random_levels(SteppingNet(spec, 3), seed=1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model.forward_all(x)
        for l, conv in enumerate(model.convs):
            conv.weight[model.levels(l) == 2] += 1.0
        after = model.forward_all(x)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.equal(before[2], after[2])


def test_levels_are_validated():
    model = SteppingNet(LENET_5, 2)
    with pytest.raises(ValueError, match="at least one 0"):
        model.set_levels(0, torch.ones(6, dtype=torch.long))
    with pytest.raises(ValueError, match="values in 0..2"):
        model.set_levels(0, torch.tensor([0, 1, 2, 3, 0, 0]))


def test_lateral_inputs_are_upsampled_and_validated():
    model = SteppingNet(LATERAL, 1)
    assert [side for _, side in LATERAL.sizes()] == [32, 16, 8, 16, 16]
    assert model.convs[3].in_channels == 12 + 12
    # conv 3 runs 1x1 on 16x16 over both inputs, conv 4 3x3 on 16x16, the 1x1 head on 16x16
    assert model.macs(0) - SteppingNet(replace(LATERAL, convs=LATERAL.convs[:3]), 1).macs(0) == (
        16 * 16 * 10 * 24 + 16 * 16 * 8 * 10 * 9 + 16 * 16 * 6 * 8 - 8 * 8 * 6 * 12)
    with pytest.raises(ValueError, match="lateral"):
        SteppingSpec("bad", (ConvSpec(8, 3, 1), ConvSpec(8, 3, 1, lateral=0)))
    odd = (ConvSpec(8, 3, 0, pool=False, stride=2), ConvSpec(10, 1, 0, pool=False, lateral=0))  # 16 -> 7, 7 -/-> 32
    with pytest.raises(ValueError, match="upsample"):
        SteppingNet(replace(LATERAL, convs=LATERAL.convs[:2] + odd), 1)


def test_macs_match_a_hand_count():
    model = SteppingNet(LENET_5, 2)
    # conv 3->6 5x5 on 28x28, conv 6->16 5x5 on 10x10, fc 400->120->84->10
    assert model.macs(1) == 28 * 28 * 6 * 75 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    levels = torch.tensor([0, 0, 0, 1, 1, 1])
    model.set_levels(0, levels)  # conv2 neurons (level 0) now read only the 3 level-0 channels
    assert model.macs(0) == 28 * 28 * 3 * 75 + 10 * 10 * 16 * 75 + 400 * 120 + 120 * 84 + 84 * 10


def test_unpruned_macs_leave_out_exactly_the_masked_weights():
    """``macs(k)`` counts what the dense graphs execute; ``macs(k, count_pruned=False)`` (the paper's
    count) drops one MAC per output position of every weight the pruning masks switch off."""
    model = SteppingNet(LENET_5, 2)
    model.set_levels(2, (torch.arange(120) >= 100).long())  # fc1 units 100.. in subnet 1
    model.set_levels(3, (torch.arange(84) >= 80).long())  # fc2 units 80.. in subnet 1
    dense = [model.macs(k) for k in range(2)]
    assert [model.macs(k, count_pruned=False) for k in range(2)] == dense
    with torch.no_grad():
        model.prune_mask(0)[0, 0, 0, :2] = False  # two conv1 taps: 28 x 28 positions each
        model.prune_mask(2)[5, :3] = False  # three fc1 weights of a subnet-0 unit
        model.prune_mask(2)[110, 0] = False  # one fc1 weight of a subnet-1 unit
        model.prune_mask(4)[:, 80] = False  # the output weights of a subnet-1 fc2 unit: 10
    assert [model.macs(k) for k in range(2)] == dense  # the graphs stay dense
    assert model.macs(0, count_pruned=False) == dense[0] - 2 * 28 * 28 - 3
    assert model.macs(1, count_pruned=False) == dense[1] - 2 * 28 * 28 - 3 - 1 - 10


def test_pruning_rules():
    """The paper prunes |w| < 1e-5; ours prunes below a fraction of the layer's mean |w|."""
    model = SteppingNet(LENET_5, 1)
    with torch.no_grad():
        fc = model.fcs[0].weight
        fc.fill_(1.0)
        fc[0, :4] = torch.tensor([0.0, 5e-6, 2e-5, 0.04])
    update_pruning(model, 1e-5)  # the paper's rule and threshold (SteppingConfig's defaults)
    assert model.prune_mask(2)[0, :4].tolist() == [False, False, True, True]
    update_pruning(model, 0.05, "layer_mean")
    assert model.prune_mask(2)[0, :4].tolist() == [False, False, False, False]
    assert int((~model.prune_mask(2)).sum()) == 4
    cfg = SteppingConfig()
    assert (cfg.prune_threshold, cfg.prune_rule, cfg.count_pruned_macs) == (1e-5, "absolute", False)
    with pytest.raises(ValueError, match="prune_rule"):
        SteppingConfig(prune_rule="global")


def test_our_options_name_every_departure_from_the_paper():
    assert our_options(asdict(SteppingConfig())) == []
    ours = SteppingConfig(ranking="importance_per_mac", funnel_free=True, scoped_decay=True, scale_at="output",
                          prune_rule="layer_mean", prune_threshold=0.05, count_pruned_macs=True)
    assert our_options(asdict(ours)) == ["per-MAC ranking", "funnel-free", "scoped decay", "r after BN/ReLU/pool",
                                         "pruning 0.05 x mean abs(w)", "pruned weights' MACs counted"]
    # a config recorded before scale_at, prune_rule and count_pruned_macs existed used ours
    recorded = {k: v for k, v in asdict(SteppingConfig(prune_threshold=0.05)).items()
                if k not in ("scale_at", "prune_rule", "count_pruned_macs")}
    assert our_options(recorded) == ["r after BN/ReLU/pool", "pruning 0.05 x mean abs(w)",
                                     "pruned weights' MACs counted"]
    other = SteppingConfig(prune_threshold=1e-3, gamma=0.5)
    assert our_options(asdict(other)) == ["pruning abs(w) < 0.001", "gamma 0.5"]


def test_lr_suppression_scales_gradients_by_beta_power():
    model = _random_levels(SteppingNet(LENET_5, 3), seed=2).train()
    loss = model(torch.randn(4, 3, 32, 32), 2).sum()
    loss.backward()
    raw = model.convs[1].weight.grad.clone()
    suppress_gradients(model.weight_owners(), 2, 0.5)
    owner = model.levels(1)
    for level, factor in ((0, 0.25), (1, 0.5), (2, 1.0)):
        rows = owner == level
        assert torch.allclose(model.convs[1].weight.grad[rows], raw[rows] * factor)


def test_constant_neurons_are_those_with_no_used_weight_or_no_bn_scale():
    model = _random_levels(SteppingNet(LENET_5, 3), seed=2)
    assert not any(c.any() for c in model.constant_neurons())
    fc, conv = model.weighted_layers[2], 0
    with torch.no_grad():
        used = torch.as_tensor(model.input_levels(2))[None, :] <= model.levels(2)[:, None]
        fc.weight[0][used[0]] = 0.0  # unused weights (inputs of higher levels) may stay large
        model.norms[0].weight[conv] = 0.0
        removed = int(torch.nonzero(model.levels(1) == 3)[0])
        model.convs[1].weight[removed] = 0.0  # removed neurons never count
    constant = model.constant_neurons()
    assert constant[2][0] and int(constant[2].sum()) == 1 and constant[0][conv] and int(constant[0].sum()) == 1
    assert not constant[1].any()


def test_scoped_decay_decays_only_the_trained_subnets_weights():
    model = _random_levels(SteppingNet(LENET_5, 3), seed=2).train()
    cfg = SteppingConfig(scoped_decay=True, weight_decay=0.1)
    optimizer = make_optimizer(model, cfg)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]}
    assert not decayed & {id(p) for p in model.parameters()}  # every weight has an owner: decayed by hand
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    scoped_weight_decay(model.weight_owners(), 1, cfg.weight_decay)
    weight, grad, owner = model.convs[1].weight, model.convs[1].weight.grad, model.levels(1)
    assert torch.allclose(grad[owner <= 1], 0.1 * weight[owner <= 1]) and not grad[owner == 2].any()
    unscoped = make_optimizer(model, SteppingConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in unscoped.param_groups] == [0.1]


@pytest.mark.parametrize("spec", [LENET_5, LATERAL], ids=["fc_last", "conv_last"])
def test_restarted_output_increments_leave_every_subnet_at_subnet_0(spec):
    model = _random_levels(SteppingNet(spec, 3), seed=3)
    last = model.num_hidden - 1
    levels = model.levels(last)
    increments = (levels > 0) & (levels < 3)
    assert increments.any() and (levels == 0).any()
    x = torch.randn(2, 3, 32, 32)
    before = model.forward_all(x)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.allclose(before[2], before[0])
    restarted = model.restart_output_increments()
    assert restarted == int(increments.sum())
    after = model.forward_all(x)
    assert torch.allclose(after[0], before[0]) and all(torch.allclose(a, after[0]) for a in after[1:])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, kept[k])}
    if last < len(model.convs):
        assert changed <= {f"norms.{last}.weight", f"norms.{last}.bias", "out.weight"}
        assert (model.norms[last].weight[increments] == 1).all() and (model.norms[last].bias[increments] == 0).all()
        assert torch.equal(model.norms[last].weight[~increments], kept[f"norms.{last}.weight"][~increments])
    else:
        bias = model.fcs[last - len(model.convs)].bias
        assert changed <= {f"fcs.{last - len(model.convs)}.bias", "out.weight"} and (bias[increments] == 0).all()


OURS = {"ranking": "importance_per_mac", "scale_at": "output", "prune_rule": "layer_mean", "prune_threshold": 0.05,
        "count_pruned_macs": True}


@pytest.mark.parametrize("options", [{}, {"funnel_free": True}, {**OURS, "funnel_free": True},
                                     {"prune_rule": "layer_mean", "prune_threshold": 0.05}],
                         ids=["paper", "funnel_free", "ours", "paper_count_with_our_pruning"])
def test_construction_meets_mac_targets(cifar, options):
    torch.manual_seed(0)
    spec = LENET_5.with_classes(10)
    original = SteppingNet(spec, 1).macs(0)
    targets = [round(f * original) for f in (0.15, 0.30, 0.60, 0.85)]
    model = SteppingNet(spec.expanded(2.0), 4)
    cfg = SteppingConfig(iterations=6, batches_per_iteration=4, lr=0.02, **options)
    stream = batches(cifar, 64, torch.Generator().manual_seed(0))
    construct(model, stream, partial(distillation_loss, gamma=1.0, temperature=1.0), targets, cfg)
    macs = [model.macs(i, cfg.count_pruned_macs) for i in range(4)]  # the count the targets are met in
    if not cfg.count_pruned_macs and cfg.prune_rule == "layer_mean":  # ~5 % pruned: the graphs run more
        assert all(model.macs(i) > m for i, m in enumerate(macs))
    assert macs == sorted(macs) and all(m <= t for m, t in zip(macs, targets))
    assert macs[0] >= 0.5 * targets[0]  # moved just past the target, not emptied
    assert all(int((model.levels(l) == 4).sum()) > 0 for l in range(model.num_hidden))  # some removed
    assert all(model.macs(i) > model.macs(i - 1) for i in range(1, 4))  # every subnet adds neurons
    assert _no_idle_neurons(model)  # ... and every one of them reaches its subnet's output


def _with_increment(model: SteppingNet) -> SteppingNet:
    """Every layer's last neuron in subnet 1, so a move into level 1 keeps the increment connected."""
    for l, width in enumerate(model.widths):
        model.set_levels(l, (torch.arange(width) == width - 1).long())
    return model


def _no_idle_neurons(model: SteppingNet) -> bool:
    return not any(mask.any() for mask in model.idle_neurons())


def test_move_neurons_moves_least_important_first():
    model = _with_increment(SteppingNet(LENET_5.expanded(2.0), 2))
    importance = [torch.arange(w, dtype=torch.float) + 100 * l for l, w in enumerate(model.widths)]
    move_neurons(model, importance, [model.macs(0) // 2, model.macs(1)], chunk=1, min_neurons=1)
    moved = [torch.nonzero(model.levels(l) == 1).squeeze(1).tolist() for l in range(model.num_hidden)]
    assert moved[0] == [0, 11]  # one neuron, the globally least important, covers the 1-MAC chunk
    assert moved[1:] == [[31], [239], [167]]


def test_per_mac_ranking_moves_the_neuron_that_saves_most():
    model = _with_increment(SteppingNet(LENET_5.expanded(2.0), 2))
    equal = [torch.ones(w) for w in model.widths]
    move_neurons(model, equal, [model.macs(0) // 2, model.macs(1)], chunk=1, ranking="importance_per_mac")
    moved = [int((model.levels(l) == 1).sum()) for l in range(model.num_hidden)]
    assert moved == [2, 1, 1, 1]  # a first-layer channel: by far the most MACs per neuron


def test_funnel_free_moves_widen_the_later_layers_first():
    """Per MAC a first-layer channel moves first; funnel-free, it may enter increment 1 only once
    every later layer holds as large a share of its neurons there, so the chain starts at the output."""
    model = _with_increment(SteppingNet(LENET_5.expanded(2.0), 2))
    equal = [torch.ones(w) for w in model.widths]
    move_neurons(model, equal, [model.macs(0) // 2, model.macs(1)], chunk=1, ranking="importance_per_mac",
                 funnel_free=True)
    assert [int((model.levels(l) == 1).sum()) for l in range(model.num_hidden)] == [1, 1, 1, 2]
    move_neurons(model, equal, [model.macs(0) // 2, model.macs(1)], chunk=400_000, ranking="importance_per_mac",
                 funnel_free=True)
    counts = model.level_counts()
    shares = counts[:, 1] / counts.sum(1)
    assert int(counts[0, 1]) == 2 and bool((shares[1:] >= shares[0]).all())  # the channel moved, behind wide layers


def test_layer_relative_ranking_ignores_each_layers_scale():
    model = _with_increment(SteppingNet(LENET_5.expanded(2.0), 2))
    importance = [torch.ones(w) for w in model.widths]
    importance[0] = 100 * torch.arange(1.0, 13.0)  # first layer: large scale, channel 0 far below its mean
    importance[3][0] = 0.5  # smallest absolute importance, but only half its layer's mean
    move_neurons(model, importance, [model.macs(0) // 2, model.macs(1)], chunk=1, ranking="layer_relative")
    assert int(model.levels(0)[0]) == 1 and int(model.levels(3)[0]) == 0


def test_move_neurons_keeps_every_increment_connected():
    """A subnet never pays for neurons that cannot reach its output (a level-k neuron feeds only
    levels >= k, so every later layer needs a level-k neuron)."""
    model = SteppingNet(LENET_5.expanded(2.0), 3)
    importance = [torch.full((w,), 10.0) for w in model.widths]
    importance[0][0] = 0.0  # least important: a first-layer channel, but no later layer has level 1
    full = model.macs(0)
    move_neurons(model, importance, [full // 2, full, full], chunk=1)
    assert _no_idle_neurons(model) and int((model.levels(3) == 1).sum()) == 1  # the chain starts at the output

    model = _with_increment(SteppingNet(LENET_5.expanded(2.0), 3))
    importance = [torch.full((w,), 10.0) for w in model.widths]
    importance[3][-1] = 0.0  # least important: the last link of increment 1 to the output
    move_neurons(model, importance, [model.macs(0), model.macs(0) + 1, model.macs(1)], chunk=1)
    assert _no_idle_neurons(model) and int((model.levels(3) == 1).sum()) == 1


def test_per_layer_floors_keep_the_last_layer_as_wide_as_the_output():
    """The last hidden layer is the least important and the target takes everything: with a floor
    of 10 (the outputs, ``full_rank_output``) there, subnet 0 keeps 10 of its neurons."""
    model = SteppingNet(LENET_5.expanded(2.0), 2)
    importance = [torch.full((w,), 10.0) for w in model.widths]
    importance[3][:] = 0.0
    floors = [1, 1, 1, 10]
    move_neurons(model, importance, [1, model.macs(1)], chunk=1e12, min_neurons=floors)
    kept = [int((model.levels(l) == 0).sum()) for l in range(model.num_hidden)]
    assert kept == floors and _no_idle_neurons(model)


def test_move_neurons_stops_just_under_the_target():
    """Near its target a subnet moves a cheap neuron rather than a whole first-layer channel."""
    model = _with_increment(SteppingNet(LENET_5.expanded(2.0), 2))
    importance = [torch.full((w,), 10.0) for w in model.widths]
    importance[0][0] = 0.0  # least important, but moving it saves > 58k MACs
    target = model.macs(0) - 500
    move_neurons(model, importance, [target, model.macs(1)], chunk=1e9)
    assert int(model.levels(0)[0]) == 0 and target - 300 <= model.macs(0) <= target


def test_baselines_hit_the_same_mac_points():
    spec = LENET_3C1L
    original = SteppingNet(spec, 1).macs(0)
    targets = [round(f * original) for f in (0.1, 0.3, 0.5, 0.85)]
    slim = SlimmableClassifier(spec, fit_ratios(spec, targets))
    anywidth = SteppingNet(spec.expanded(1.8), 4)
    assign_regular_levels(anywidth, targets)
    for model in (slim, anywidth):
        for i, target in enumerate(targets):
            assert 0.85 * target <= model.macs(i) <= target
    assert [len(o) for o in slim.forward_all(torch.zeros(2, 3, 32, 32))] == [2] * 4


def test_increment_export_executes_each_mac_once(tmp_path):
    model = _random_levels(SteppingNet(LENET_3C1L.expanded(0.75), 4), seed=3)
    update_pruning(model, 0.05, "layer_mean")  # masked weights are zeros in the graphs, still multiplied
    assert all(model.macs(k, count_pruned=False) < model.macs(k) for k in range(4))
    export_stepping(model, tmp_path, "stepping_test", tuple("abcdefghij"), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    runtime = AnytimeModel(tmp_path)
    stage_macs = [s.macs for s in runtime.manifest.stages]  # counted from each ONNX graph
    increments = [model.macs(k) - (model.macs(k - 1) if k else 0) for k in range(4)]
    assert stage_macs == increments
    assert sum(stage_macs) == model.macs(3) == runtime.manifest.full_model.macs
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model.forward_all(image)
    assert verify_stages([{"logits": e} for e in expected], tmp_path, image) < 1e-4
    carry: dict[str, np.ndarray] = {}
    for k in range(4):  # the runtime keeps the carry between stage calls
        new, heads, _ = runtime.run_stage(k, image.numpy(), carry)
        carry.update(new)
        assert np.allclose(heads["logits"], expected[k].numpy(), atol=1e-4)


def test_engine_publishes_a_classifier_as_one_whole_image_detection(tmp_path):
    export_stepping(_random_levels(SteppingNet(LENET_5, 2)), tmp_path, "c", tuple("abcdefghij"),
                    (0, 0, 0), (1, 1, 1))
    model = AnytimeModel(tmp_path)
    engine = AnytimeEngine(model, load_modes(MODES_FILE, model.manifest.total_macs), score_threshold=0.0)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    results = engine.process(image)
    assert [r.stage for r in results] == [0, 1]
    for r in results:
        (d,) = r.detections
        assert (d.center_x, d.center_y, d.width, d.height) == pytest.approx((32, 24, 64, 48))
        assert d.label == "abcdefghij"[d.class_id] and 0.1 <= d.score <= 1.0


def test_cli_trains_resumes_reuses_a_construction_and_exports(tmp_path, cifar, capsys):
    common = ["--data", str(CIFAR10), "--arch", "lenet5", "--train-limit", "512", "--test-limit", "256",
              "--batch-size", "64"]
    runs = tmp_path / "runs" / "cifar10_lenet5"
    assert stepping_run.main(["original", *common, "--epochs", "1", "--out", str(runs / "original")]) == 0
    teacher = ["--teacher", str(runs / "original" / "last.pt")]
    step = ["stepping", *common, *teacher, "--iterations", "3", "--batches-per-iteration", "2", "--funnel-free",
            "--scoped-decay", "--out", str(runs / "stepping")]
    assert stepping_run.main([*step, "--epochs", "1"]) == 0
    assert stepping_run.main([*step, "--epochs", "2", "--resume"]) == 0  # continues, no second construction
    wall = json.loads((runs / "stepping" / "result.json").read_text())["wall_s"]
    assert stepping_run.main([*step, "--epochs", "2", "--resume"]) == 0  # nothing left: evaluates only
    result = json.loads((runs / "stepping" / "result.json").read_text())
    assert len(result["subnet_accuracy"]) == 4 and result["macs_fraction"] == sorted(result["macs_fraction"])
    # the paper's count meets the targets; the graphs execute the dense count
    assert result["macs_fraction_unpruned"][-1] <= 0.85 + 1e-9 and result["config"]["funnel_free"] is True
    assert all(u <= d for u, d in zip(result["macs_fraction_unpruned"], result["macs_fraction"]))
    assert result["config"]["scoped_decay"] is True
    keys = ("ranking", "scale_at", "prune_rule", "prune_threshold", "count_pruned_macs")
    paper = {k: result["config"][k] for k in keys}
    assert paper == {"ranking": "importance", "scale_at": "weighted_sum", "prune_rule": "absolute",
                     "prune_threshold": 1e-5, "count_pruned_macs": False}
    # constant neurons per layer and level, recorded after the construction's last iteration
    (iteration, counts), = result["constant_trace"]
    assert iteration == 3 and len(counts) == 4 and all(len(layer) == 4 for layer in counts)
    assert result["wall_s"].keys() == {"construct", "train"} and result["wall_s"] == pytest.approx(wall, abs=1.0)
    # a retraining ablation reuses the construction; one with other construction settings is refused
    ablation = [*step, "--epochs", "1", "--no-kd", "--construction", str(runs / "stepping")]
    assert stepping_run.main([*ablation, "--out", str(runs / "stepping_no_kd")]) == 0
    no_kd = json.loads((runs / "stepping_no_kd" / "result.json").read_text())
    assert no_kd["level_counts"] == result["level_counts"] and no_kd["kd"] is False
    assert no_kd["construction_from"] == str(runs / "stepping") and no_kd["wall_s"]["construct"] == wall["construct"]
    assert no_kd["constant_trace"] == result["constant_trace"]
    assert stepping_run.main([*ablation, "--restart-output-increments", "--out", str(tmp_path / "restarted")]) == 0
    restarted = json.loads((tmp_path / "restarted" / "result.json").read_text())
    last_layer = result["level_counts"][-1]  # neurons per level of the last hidden layer, removed last
    assert restarted["restarted_neurons"] == sum(last_layer[1:-1]) > 0
    assert stepping_run.main([*ablation, "--seed", "1", "--out", str(tmp_path / "other")]) == 2
    assert "(seed differ)" in capsys.readouterr().err and not (tmp_path / "other" / "result.json").exists()
    # a construction recorded before scale_at, prune_rule and count_pruned_macs existed used our options:
    # it is reused by a run that names them, and refused by one with the paper's defaults
    recorded = load_checkpoint(runs / "stepping" / "constructed.pt")
    config = recorded["settings"]["config"]
    for key in ("scale_at", "prune_rule", "count_pruned_macs"):
        del config[key]
    config["prune_threshold"] = 0.05
    (tmp_path / "recorded").mkdir()
    torch.save(recorded, tmp_path / "recorded" / "constructed.pt")
    legacy = [*step, "--epochs", "1", "--no-kd", "--construction", str(tmp_path / "recorded")]
    ours = ["--scale-at", "output", "--prune-rule", "layer_mean", "--prune-threshold", "0.05", "--count-pruned-macs"]
    assert stepping_run.main([*legacy, *ours, "--out", str(tmp_path / "legacy")]) == 0
    assert stepping_run.main([*legacy, "--out", str(tmp_path / "legacy_paper")]) == 2
    assert "(config differ)" in capsys.readouterr().err
    # the baselines train on plain cross-entropy unless told to use SteppingNet's KD and LR suppression
    for recipe in ([], ["--baseline-recipe", "stepping"]):
        assert stepping_run.main(["anywidth", *common, *teacher, "--epochs", "1", *recipe,
                                  "--out", str(tmp_path / f"anywidth{len(recipe)}")]) == 0
    plain, kd = (json.loads((tmp_path / f"anywidth{n}" / "result.json").read_text()) for n in (0, 2))
    assert (plain["kd"], plain["beta"], plain["baseline_recipe"]) == (False, 1.0, "plain")
    assert (kd["kd"], kd["beta"], kd["baseline_recipe"]) == (True, 0.9, "stepping")
    assert stepping_run.main([*step, "--epochs", "1", "--baseline-recipe", "stepping",
                              "--out", str(tmp_path / "refused")]) == 2
    assert "only applies to the anywidth and slimmable" in capsys.readouterr().err
    # the report reads the checkpoints for the constant-neuron table
    assert stepping_report.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    tables = (tmp_path / "report" / "steppingnet_tables.md").read_text()
    constant = tables[tables.index("## Constant (dead) neurons"):tables.index("## Plots")]
    assert "| stepping | " in constant and "| stepping_no_kd | " in constant and " of " in constant
    total = [sum(layer[k] for layer in counts) for k in range(4)]
    assert f"| 3 | {' | '.join(map(str, total))} |" in tables[tables.index("## Constant neurons during construction"):]
    from anytime_perception.export.__main__ import main as export_main
    export_main(["--checkpoint", str(runs / "stepping" / "last.pt"), "--out", str(tmp_path / "model")])
    runtime = AnytimeModel(tmp_path / "model")
    assert runtime.manifest.task == "classification" and runtime.manifest.labels[0] == "airplane"


def test_cli_refuses_bad_inputs_with_one_line(tmp_path, capsys):
    assert stepping_run.main(["original", "--data", str(tmp_path / "missing.zip"), "--out", str(tmp_path / "o")]) == 2
    assert "dataset not found" in capsys.readouterr().err
    corrupt = tmp_path / "teacher.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert stepping_run.main(["stepping", "--data", str(CIFAR10), "--train-limit", "256", "--test-limit", "64",
                              "--teacher", str(corrupt), "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_report_writes_table_structure_and_plots(tmp_path):
    """Every row names the options it used (runs recorded before an option existed: what they used);
    the paper's Table I row is quoted next to ours."""
    common = {"arch": "lenet5", "original_macs": 1000, "command": "python -m ...", "wall_s": {"train": 60.0}}
    per_mac = {"ranking": "importance_per_mac"}  # recorded before scale_at, prune_rule, count_pruned_macs
    every = [0.15, 0.3, 0.6, 0.85]
    runs = {"original": {"subnet_accuracy": [0.7], "macs_fraction": [1.0]},
            "stepping": {"subnet_accuracy": [0.4, 0.5, 0.6, 0.65], "macs_fraction": [0.14, 0.28, 0.55, 0.8],
                         "level_counts": [[1, 1, 2, 2, 6], [10, 0, 0, 0, 30]],
                         "wall_s": {"construct": 120.0, "train": 60.0}, "config": per_mac,
                         "constant_trace": [[50, [[0, 0, 1, 2], [0, 0, 0, 3]]], [60, [[0, 0, 1, 2], [0, 0, 1, 3]]],
                                            [73, [[0, 0, 2, 2], [0, 1, 0, 3]]]]},
            "stepping_paper": {"subnet_accuracy": [0.3, 0.4, 0.55, 0.6], "macs_fraction": every,
                               "config": asdict(SteppingConfig()), "beta": 0.9},
            "stepping_paper_ranking": {"subnet_accuracy": [0.35, 0.5, 0.6, 0.65],
                                       "macs_fraction": [0.14, 0.28, 0.55, 0.8], "config": {"ranking": "importance"}},
            "stepping_funnel_free": {"subnet_accuracy": [0.45, 0.55, 0.62, 0.67], "macs_fraction": every,
                                     "config": {**per_mac, "funnel_free": True}},
            "stepping_scoped_decay": {"subnet_accuracy": [0.45, 0.58, 0.66, 0.7], "macs_fraction": every,
                                      "config": {**per_mac, "scoped_decay": True}},
            "anywidth": {"subnet_accuracy": [0.3, 0.5, 0.6, 0.66], "macs_fraction": every},
            "anywidth_plain": {"subnet_accuracy": [0.28, 0.5, 0.6, 0.67], "macs_fraction": every, "kd": False,
                               "beta": 1.0, "baseline_recipe": "plain"},
            "anywidth_scoped_decay": {"subnet_accuracy": [0.3, 0.52, 0.6, 0.68], "macs_fraction": every,
                                      "config": {"scoped_decay": True}},
            "anywidth_no_kd": {"subnet_accuracy": [0.31, 0.5, 0.61, 0.69], "macs_fraction": every, "kd": False},
            "slimmable_no_kd": {"subnet_accuracy": [0.32, 0.5, 0.6, 0.66], "macs_fraction": [0.12, 0.25, 0.55, 0.8],
                                "kd": False},
            "stepping_no_kd": {"subnet_accuracy": [0.41, 0.52, 0.63, 0.7], "macs_fraction": [0.14, 0.28, 0.55, 0.8],
                               "config": per_mac, "kd": False}}
    for method, result in runs.items():
        (tmp_path / "runs" / "cifar10_lenet5" / method).mkdir(parents=True)
        (tmp_path / "runs" / "cifar10_lenet5" / method / "result.json").write_text(json.dumps({**common, **result}))
    assert stepping_report.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    tables = (tmp_path / "out" / "steppingnet_tables.md").read_text()
    recorded = "r after BN/ReLU/pool + pruning 0.05 x mean abs(w) + pruned weights' MACs counted"
    per_mac_row = f"SteppingNet, ours: per-MAC ranking + {recorded}"
    assert f"| {per_mac_row} | 40.00 / 14.00 / 0.571 |" in tables
    assert "| SteppingNet, paper's formulation | 30.00 / 15.00 / 0.429 |" in tables
    assert f"| SteppingNet, ours: {recorded} | 35.00 / 14.00 / 0.500 |" in tables  # the paper's ranking only
    # any-width at 28 % MACs: between its 15 % (30 %) and 30 % (50 %) subnets -> 47.33 %; 14 % is below its range
    # (the plain any-width column comes first: at 28 % it interpolates 28 % and 50 % to 47.07 %)
    assert "| 2 | 28.0 | 50.00 | 47.07 | +2.93 | 47.33 | +2.67 |" in tables
    assert "| 1 | 14.0 | 40.00 | - | - |" in tables
    funnel_free = f"SteppingNet, ours: per-MAC ranking + funnel-free + {recorded}"
    assert f"| {funnel_free} | 45.00 / 15.00 / 0.643 |" in tables
    assert f"### cifar10_lenet5: {funnel_free}" in tables
    assert "| 2 | 30.0 | 55.00 | 50.00 | +5.00 | 50.00 | +5.00 |" in tables
    scoped = f"SteppingNet, ours: per-MAC ranking + scoped decay + {recorded}"
    assert f"### cifar10_lenet5: {scoped}" in tables
    assert "| 2 | 30.0 | 58.00 | 50.00 | +8.00 | 50.00 | +8.00 | 52.00 | +6.00 |" in tables
    assert "any-width, ours: SteppingNet's KD + LR suppression + scoped decay A (%) | difference" in tables
    assert "| any-width, ours: SteppingNet's KD + LR suppression | 30.00 / 15.00 / 0.429 |" in tables
    assert "| any-width, plain cross-entropy | 28.00 / 15.00 / 0.400 |" in tables
    assert "| any-width, ours: LR suppression | 31.00 / 15.00 / 0.443 |" in tables
    assert "| slimmable, plain cross-entropy | 32.00 / 12.00 / 0.457 |" in tables  # slimmable has no suppression
    paper = "paper's SteppingNet (Table I, row \"LeNet-5 Cifar10\"; original 74.96 %)"
    assert f"| {paper} | 51.80 / 13.64 / 0.691 |" in tables
    assert "| stepping | 1 / 2 / 4 / 6 (of 12) | 10 / 10 / 10 / 10 (of 40) |" in tables
    assert "| stepping | 3.0 (construct 2.0, train 1.0) |" in tables
    # the construction trace: every 50 iterations and the last, summed over the layers
    trace = tables[tables.index("### cifar10_lenet5: stepping\n"):]
    assert "| 50 | 0 | 0 | 1 | 5 |" in trace and "| 73 | 0 | 1 | 2 | 5 |" in trace and "| 60 |" not in trace
    # the ablation of the constructions that have variants: here only "stepping", with and without KD
    ablation = tables[tables.index("## Ablation (Fig. 8)"):tables.index("## Structure")]
    assert f"### Ablation (cifar10_lenet5): {per_mac_row}" in ablation
    assert "| full | 40.00 | 50.00 | 60.00 | 65.00 | 14.0 / 28.0 / 55.0 / 80.0 |" in ablation
    assert "| without KD | 41.00 | 52.00 | 63.00 | 70.00 |" in ablation and "funnel-free" not in ablation
    assert (tmp_path / "out" / "steppingnet_ablation_cifar10_lenet5_stepping.png").stat().st_size > 0
    assert (tmp_path / "out" / "steppingnet_cifar10_lenet5.png").stat().st_size > 0
