"""SteppingNet: nested subnets with a learned neuron-to-subnet assignment (classifiers, detectors).

Every hidden neuron (a conv channel or a fully connected unit) has a *level*: the smallest subnet
it belongs to (``num_subnets`` means removed). Subnet ``i`` uses the neurons of level ``<= i``,
and a synapse from neuron ``a`` into neuron ``b`` exists only if ``level(a) <= level(b)``: new
neurons never feed old ones, so a neuron's activation is the same in every subnet that has it
and a larger subnet reuses all activations of the smaller ones. The output layer is shared:
the logits of subnet ``i`` are the bias plus the contributions of the inputs of level ``<= i``,
so they grow additively, one increment per subnet.

``forward_increment(image, carry, k)`` computes exactly the neurons of level ``k`` from the cached
activations of levels ``< k`` and adds their share to the logits; evaluation and the per-increment
ONNX export use it. Training computes the same function with one masked op per layer (fewer, larger
ops; the tests check outputs and gradients equal the increments'). Weights may also
be pruned by magnitude with revivable (straight-through) masks; ``macs(k)`` counts what the dense
graphs execute, ``macs(k, count_pruned=False)`` only the weights the masks keep (the paper's count).
The importance scales ``r`` sit on each neuron's weighted sum (the paper's Eq. 1) or, as an option,
on its output (``SCALE_AT``). With one subnet and every level
0 the class is a plain CNN: the original network SteppingNet starts from.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .layers import batch_norm_channels

__all__ = ["ConvSpec", "SteppingSpec", "SteppingNet", "LENET_3C1L", "LENET_5", "ARCHITECTURES", "SCALE_AT"]

Carry = dict[str, Tensor]
# where the importance scale ``r`` of a neuron multiplies (``forward(..., scales, scale_at)``):
# "weighted_sum": on its weighted sum, before the bias and the activation (the paper's Eq. 1-2; with
# BatchNorm, on the normalised sum times the BN scale, before the BN shift); "output": on its output
# after BatchNorm, ReLU and pooling (ours; the runs recorded before this option)
SCALE_AT = ("weighted_sum", "output")


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer: ``channels`` filters of ``kernel x kernel``, BN, ReLU, optional 2x2 max-pool.

    ``lateral`` (a top-down neck step): index of an earlier conv layer; the previous layer's output
    is upsampled (nearest) to that layer's resolution and concatenated with its output as input.
    """

    channels: int
    kernel: int = 5
    padding: int = 2
    pool: bool = True
    stride: int = 1
    dilation: int = 1
    lateral: int = -1


@dataclass(frozen=True)
class SteppingSpec:
    """A chain of conv layers, then either fully connected hidden layers and a linear output
    (``head="linear"``, a LeNet-style classifier) or a 1x1 convolution over the last feature map
    (``head="conv"``, dense outputs such as CenterNet heads). ``num_classes``: output channels."""

    name: str
    convs: tuple[ConvSpec, ...]
    hidden: tuple[int, ...] = ()
    num_classes: int = 10
    input_size: int = 32
    head: str = "linear"

    def __post_init__(self) -> None:
        if self.head not in ("linear", "conv") or (self.head == "conv" and self.hidden):
            raise ValueError(f"{self.name}: head must be 'linear' or 'conv' (conv: no hidden FC layers)")
        for l, c in enumerate(self.convs):
            if c.lateral != -1 and not 0 <= c.lateral < l - 1:
                raise ValueError(f"{self.name}: conv {l} has lateral {c.lateral}; it must name a conv "
                                 f"layer before conv {l - 1}")
        sides = [after for _, after in self.sizes()]
        for l, c in enumerate(self.convs):
            if c.lateral >= 0 and sides[c.lateral] % sides[l - 1]:
                raise ValueError(f"{self.name}: conv {l}: the previous map ({sides[l - 1]}) does not "
                                 f"upsample to its lateral's ({sides[c.lateral]})")

    def sizes(self) -> list[tuple[int, int]]:
        """Side of every conv layer's output map before and after its pooling."""
        sizes: list[tuple[int, int]] = []
        for c in self.convs:
            size = sizes[c.lateral][1] if c.lateral >= 0 else (sizes[-1][1] if sizes else self.input_size)
            size = (size + 2 * c.padding - c.dilation * (c.kernel - 1) - 1) // c.stride + 1
            sizes.append((size, size // 2 if c.pool else size))
        return sizes

    def upsampling(self) -> list[int]:
        """Per conv layer, the factor its previous layer's map is upsampled by (1: no lateral input)."""
        sides = [after for _, after in self.sizes()]
        return [sides[c.lateral] // sides[l - 1] if c.lateral >= 0 else 1 for l, c in enumerate(self.convs)]

    def geometry(self) -> tuple[list[int], int]:
        """Output positions (H*W) of every conv layer, and per channel after the last one."""
        sizes = self.sizes()
        return [conv * conv for conv, _ in sizes], sizes[-1][1] ** 2

    def expanded(self, ratio: float) -> "SteppingSpec":
        """Every hidden layer widened by ``ratio`` (SteppingNet's starting point)."""
        return replace(self, convs=tuple(replace(c, channels=round(c.channels * ratio)) for c in self.convs),
                       hidden=tuple(round(h * ratio) for h in self.hidden))

    def with_classes(self, num_classes: int) -> "SteppingSpec":
        return replace(self, num_classes=num_classes)


LENET_3C1L = SteppingSpec("lenet_3c1l", (ConvSpec(32), ConvSpec(32), ConvSpec(64)))
LENET_5 = SteppingSpec("lenet5", (ConvSpec(6, 5, 0), ConvSpec(16, 5, 0)), (120, 84))
ARCHITECTURES: dict[str, SteppingSpec] = {s.name: s for s in (LENET_3C1L, LENET_5)}


class SteppingNet(nn.Module):
    """A network whose hidden neurons are split into ``num_subnets`` nested levels.

    Buffers ``level<l>`` (one int per neuron of hidden layer ``l``) and ``prune<l>`` (one bool per
    weight of weighted layer ``l``, the output layer last) are part of the state dict.
    """

    def __init__(self, spec: SteppingSpec, num_subnets: int = 1) -> None:
        super().__init__()
        self.spec, self.num_subnets = spec, num_subnets
        channels = [3] + [c.channels for c in spec.convs]
        inputs = [i + (spec.convs[c.lateral].channels if c.lateral >= 0 else 0) for i, c in zip(channels, spec.convs)]
        self.convs = nn.ModuleList(nn.Conv2d(i, c.channels, c.kernel, padding=c.padding, bias=False)
                                   for i, c in zip(inputs, spec.convs))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c.channels) for c in spec.convs)
        self.conv_out_hw, self.final_hw = spec.geometry()
        self._upsampling = spec.upsampling()
        # a linear head reads the last conv map flattened: hw features per channel
        self.flat_hw = self.final_hw if spec.head == "linear" else 1
        features = [channels[-1] * self.flat_hw] + list(spec.hidden)
        self.fcs = nn.ModuleList(nn.Linear(i, o) for i, o in zip(features, spec.hidden))
        self.out = (nn.Linear(features[-1], spec.num_classes) if spec.head == "linear"
                    else nn.Conv2d(channels[-1], spec.num_classes, 1))
        for l, width in enumerate(self.widths):
            self.register_buffer(f"level{l}", torch.zeros(width, dtype=torch.long))
        for l, layer in enumerate(self.weighted_layers):
            self.register_buffer(f"prune{l}", torch.ones_like(layer.weight, dtype=torch.bool))
        self._groups: list[list[Tensor]] | None = None

    # ---- structure -------------------------------------------------------------------------

    @property
    def num_hidden(self) -> int:
        return len(self.convs) + len(self.fcs)

    @property
    def widths(self) -> list[int]:
        return [c.channels for c in self.spec.convs] + list(self.spec.hidden)

    @property
    def weighted_layers(self) -> list[nn.Module]:
        return [*self.convs, *self.fcs, self.out]

    def levels(self, l: int) -> Tensor:
        """Level of every neuron of hidden layer ``l``."""
        return getattr(self, f"level{l}")

    def prune_mask(self, l: int) -> Tensor:
        return getattr(self, f"prune{l}")

    def set_levels(self, l: int, levels: Tensor) -> None:
        """Assign levels of hidden layer ``l`` (values in ``0..num_subnets``; the last = removed).

        Every layer keeps at least one neuron in subnet 0, so every subnet has a path to the output.
        """
        if levels.shape != self.levels(l).shape or levels.min() != 0 or levels.max() > self.num_subnets:
            raise ValueError(f"layer {l}: levels must have shape {tuple(self.levels(l).shape)}, "
                             f"values in 0..{self.num_subnets} and at least one 0")
        self.levels(l).copy_(levels)
        self._groups = None

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # levels change with the state
        super()._load_from_state_dict(*args, **kwargs)
        self._groups = None

    def groups(self, l: int) -> list[Tensor]:
        """Indices of the neurons of hidden layer ``l`` at each level ``0..num_subnets-1``."""
        if self._groups is None:
            self._groups = [[torch.nonzero(self.levels(h) == k).squeeze(1) for k in range(self.num_subnets)]
                            for h in range(self.num_hidden)]
        return self._groups[l]

    def level_counts(self) -> Tensor:
        """[num_hidden, num_subnets + 1]: how many neurons of each level (last: removed) each layer has."""
        return torch.stack([torch.bincount(self.levels(l), minlength=self.num_subnets + 1)
                            for l in range(self.num_hidden)])

    def idle_neurons(self) -> list[Tensor]:
        """Per hidden layer, a mask of the neurons that cannot reach the output of their own subnet.

        A level-``k`` neuron feeds only neurons of level ``>= k`` and subnet ``k`` has none above
        ``k``, so it reaches subnet ``k``'s output only if every later hidden layer has a level-``k``
        neuron; otherwise subnet ``k`` (and its exported increment) spends its MACs for nothing.
        """
        present = self.level_counts()[:, : self.num_subnets] > 0  # [layer, level]
        idle = []
        for l in range(self.num_hidden):
            connected = present[l + 1:].all(0)  # per level: every later layer has one
            levels = self.levels(l)
            idle.append((levels < self.num_subnets) & ~connected[levels.clamp(max=self.num_subnets - 1)])
        return idle

    def constant_neurons(self, tol: float = 1e-3) -> list[Tensor]:
        """Per hidden layer, a mask of the neurons (not removed) whose output is the same for every
        input: every unpruned incoming weight it uses (inputs of its level or below), or its BatchNorm
        scale, below ``tol`` in magnitude. Such a neuron spends its MACs and adds nothing its
        subnet's bias could not."""
        constant = []
        for l in range(self.num_hidden):
            weight = (self.weighted_layers[l].weight * self.prune_mask(l)).detach().abs()
            weight = weight.flatten(2).amax(2) if weight.dim() > 2 else weight  # [out, in]
            levels = self.levels(l)
            used = torch.as_tensor(self.input_levels(l), device=levels.device)[None, :] <= levels[:, None]
            flat = (weight * used).amax(1) < tol
            if l < len(self.convs):
                flat |= self.norms[l].weight.detach().abs() < tol
            constant.append(flat & (self.levels(l) < self.num_subnets))
        return constant

    def constant_per_level(self, tol: float = 1e-3) -> list[list[tuple[int, int]]]:
        """Per hidden layer and level: (constant neurons, neurons) (``constant_neurons``)."""
        counts = []
        for l, constant in enumerate(self.constant_neurons(tol)):
            levels = self.levels(l)
            counts.append([(int((constant & (levels == k)).sum()), int((levels == k).sum()))
                           for k in range(self.num_subnets)])
        return counts

    def restart_output_increments(self) -> int:
        """Restart the last hidden layer's increment neurons (levels ``1 .. num_subnets - 1``):
        BatchNorm scale 1 and shift 0 (an FC unit: bias 0), output weights 0. Every subnet's output
        is then subnet 0's, and each restarted neuron is active on about half of its inputs, so its
        subnet's loss trains it. Returns how many neurons were restarted."""
        l = self.num_hidden - 1
        levels = self.levels(l)
        idx = torch.nonzero((levels > 0) & (levels < self.num_subnets)).squeeze(1)
        with torch.no_grad():
            if l < len(self.convs):
                self.norms[l].weight[idx] = 1.0
                self.norms[l].bias[idx] = 0.0
            else:
                self.fcs[l - len(self.convs)].bias[idx] = 0.0
            self.out.weight[:, self._features(l, idx)] = 0.0
        return int(idx.numel())

    def input_levels(self, l: int) -> np.ndarray:
        """Level of every input feature of weighted layer ``l`` (image channels: level 0)."""
        if l == 0:
            return np.zeros(3, np.int64)
        levels = self.levels(l - 1).cpu().numpy()
        if l == len(self.convs):
            return np.repeat(levels, self.flat_hw)
        lateral = self._lateral(l)
        return levels if lateral is None else np.concatenate([levels, self.levels(lateral).cpu().numpy()])

    def _lateral(self, l: int) -> int | None:
        """The lateral input layer of hidden layer ``l`` (``ConvSpec.lateral``), if it has one."""
        return self.spec.convs[l].lateral if l < len(self.convs) and self.spec.convs[l].lateral >= 0 else None

    def macs(self, subnet: int, count_pruned: bool = True) -> int:
        """Multiply-accumulates of subnet ``subnet``.

        Args:
            subnet: subnet index.
            count_pruned: count the weights the pruning masks switch off too (default): what the
                exported graphs execute (they are dense) and what the manifest records. False: only
                the weights the masks keep, the paper's count (its pruning removes their MACs).
        """
        if not count_pruned:
            return self._unpruned_macs(subnet)
        total = 0
        for l in range(self.num_hidden + 1):
            inputs = np.sort(self.input_levels(l))
            if l == self.num_hidden:  # shared output layer (a 1x1 conv head runs at every position)
                positions = self.final_hw if self.spec.head == "conv" else 1
                total += positions * self.spec.num_classes * int(np.searchsorted(inputs, subnet, side="right"))
                continue
            levels = self.levels(l).cpu().numpy()
            fan_in = np.searchsorted(inputs, levels[levels <= subnet], side="right").sum()
            per_input = self.conv_out_hw[l] * self.spec.convs[l].kernel ** 2 if l < len(self.convs) else 1
            total += int(fan_in) * per_input
        return total

    def _unpruned_macs(self, subnet: int) -> int:
        """``macs(subnet)`` counting only the weights the pruning masks keep."""
        total = 0
        for layer in range(self.num_hidden + 1):
            mask = self.prune_mask(layer)
            kept = (mask.flatten(2).sum(2) if mask.dim() > 2 else mask).to(torch.float64)  # [out, in]
            inputs = torch.as_tensor(self.input_levels(layer), device=mask.device)
            onehot = F.one_hot(inputs, self.num_subnets + 1).to(torch.float64)  # [in, level]
            upto = (kept @ onehot).cumsum(1)  # [out, level j]: kept weights from inputs of level <= j
            if layer == self.num_hidden:  # shared output layer: every output reads the inputs of level <= subnet
                positions = self.final_hw if self.spec.head == "conv" else 1
                total += positions * round(float(upto[:, subnet].sum()))
                continue
            levels = self.levels(layer)
            rows = torch.nonzero(levels <= subnet).squeeze(1)
            positions = self.conv_out_hw[layer] if layer < len(self.convs) else 1
            total += positions * round(float(upto[rows, levels[rows]].sum()))
        return total

    def weight_owners(self) -> list[tuple[nn.Parameter, Tensor]]:
        """Each parameter with the level that owns each of its elements (for LR suppression).

        A hidden layer's weights and BN/bias belong to the level of their output neuron; the
        output layer's weights belong to the level of their input feature, its bias to level 0.
        """
        pairs: list[tuple[nn.Parameter, Tensor]] = []
        for l, layer in enumerate(self.weighted_layers[:-1]):
            levels = self.levels(l)
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            pairs.append((layer.weight, levels.view(shape).expand_as(layer.weight)))
            extras = (self.norms[l].weight, self.norms[l].bias) if l < len(self.convs) else (layer.bias,)
            pairs.extend((p, levels) for p in extras)
        inputs = torch.as_tensor(self.input_levels(self.num_hidden), device=self.out.weight.device)
        shape = (1, -1) + (1,) * (self.out.weight.dim() - 2)
        pairs.append((self.out.weight, inputs.view(shape).expand_as(self.out.weight)))
        pairs.append((self.out.bias, torch.zeros_like(self.out.bias, dtype=torch.long)))
        return pairs

    # ---- computation -----------------------------------------------------------------------

    def _weight(self, l: int) -> Tensor:
        """Weight of weighted layer ``l`` with its pruning mask, straight-through (revivable)."""
        w = self.weighted_layers[l].weight
        return w + (w * self.prune_mask(l) - w).detach()

    def _features(self, l: int, idx: Tensor) -> Tensor:
        """Input features that neurons ``idx`` of hidden layer ``l`` give the next layer."""
        if l != len(self.convs) - 1 or self.flat_hw == 1:
            return idx
        # the last conv is flattened: channel c covers features c*hw .. c*hw+hw-1
        return (idx[:, None] * self.flat_hw + torch.arange(self.flat_hw, device=idx.device)).flatten()

    def _input_index(self, l: int, k: int) -> Tensor:
        """Columns of weighted layer ``l`` read at increment ``k``: its inputs of level ``<= k``
        (the previous layer's, then the lateral layer's)."""
        cols = self._features(l - 1, torch.cat(self.groups(l - 1)[: k + 1]))
        lateral = self._lateral(l)
        if lateral is None:
            return cols
        return torch.cat([cols, self.widths[l - 1] + torch.cat(self.groups(lateral)[: k + 1])])

    def _layer_input(self, l: int, image: Tensor, carry: Carry, new: Carry, k: int) -> tuple[Tensor, Tensor]:
        """(input tensor, column index) of hidden layer ``l`` at increment ``k``."""
        if l == 0:
            return image, torch.arange(3, device=image.device)
        def levels_up_to_k(layer: int) -> list[Tensor]:
            return [t for j in range(k + 1) if (t := new.get(f"h{layer}.{j}", carry.get(f"h{layer}.{j}"))) is not None]

        parts = levels_up_to_k(l - 1)
        if l >= len(self.convs):  # FC layers (only with a linear head)
            parts = [t.flatten(1) for t in parts]
        if (lateral := self._lateral(l)) is not None:
            parts = [self._upsample(t, l) for t in parts] + levels_up_to_k(lateral)
        return torch.cat(parts, 1), self._input_index(l, k)

    def _upsample(self, x: Tensor, l: int) -> Tensor:
        """The previous layer's output ``x`` at the resolution of layer ``l``'s lateral input."""
        factor = self._upsampling[l]
        return F.interpolate(x, scale_factor=factor, mode="nearest") if factor != 1 else x

    def forward_increment(self, image: Tensor, carry: Carry, k: int, scales: list[Tensor] | None = None,
                          scale_at: str = "weighted_sum") -> tuple[Carry, Tensor]:
        """Increment ``k``: the level-``k`` neurons of every layer, then the logits of subnet ``k``.

        Args:
            image: [N, 3, S, S] normalised input.
            carry: ``"h<layer>.<level>"`` -> activation for levels ``< k`` and ``"logits.<k-1>"``.
            k: increment (subnet) index.
            scales: optional per-neuron multipliers ``r`` (ones) per hidden layer; their gradients
                are SteppingNet's importance signal.
            scale_at: where ``r`` multiplies (``SCALE_AT``): the weighted sum (the paper's Eq. 1)
                or the neuron's output after BN/ReLU/pooling (ours).

        Returns:
            The new carry entries (non-empty level-``k`` groups and ``"logits.<k>"``) and the logits.
        """
        new: Carry = {}
        for l in range(self.num_hidden):
            idx_out = self.groups(l)[k]
            if idx_out.shape[0] == 0:
                continue
            x, idx_in = self._layer_input(l, image, carry, new, k)
            r_sum, r_out = self._split_scales(scales, scale_at, l, idx_out)
            h = self._hidden(l, x, self._weight(l)[idx_out][:, idx_in], idx_out, r_sum)
            new[f"h{l}.{k}"] = h if r_out is None else h * r_out.view((1, -1) + (1,) * (h.dim() - 2))
        last = self.num_hidden - 1
        logits = self._bias() if k == 0 else carry[f"logits.{k - 1}"]
        if f"h{last}.{k}" in new:
            logits = logits + self._output(new[f"h{last}.{k}"], self._features(last, self.groups(last)[k]))
        new[f"logits.{k}"] = logits
        return new, logits

    def _hidden(self, l: int, x: Tensor, w: Tensor, idx_out: Tensor, r: Tensor | None = None) -> Tensor:
        """Neurons ``idx_out`` of hidden layer ``l`` from input ``x`` and their weight rows ``w``;
        ``r`` (optional, one per neuron) multiplies the weighted sum before the bias (Eq. 1)."""
        if l >= len(self.convs):
            bias = self.fcs[l - len(self.convs)].bias[idx_out]
            if r is None:
                return F.relu(F.linear(x, w, bias))
            return F.relu(F.linear(x, w) * r + bias)  # [N, out]
        spec = self.spec.convs[l]
        h = F.conv2d(x, w, stride=spec.stride, padding=spec.padding, dilation=spec.dilation)
        h = F.relu(batch_norm_channels(self.norms[l], h, idx_out, r))
        return F.max_pool2d(h, 2) if spec.pool else h

    @staticmethod
    def _split_scales(scales: list[Tensor] | None, scale_at: str, l: int,
                      idx: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The scales ``r`` of neurons ``idx`` of layer ``l``, as (on the weighted sum, on the output)."""
        if scale_at not in SCALE_AT:
            raise ValueError(f"scale_at must be one of {SCALE_AT}, got {scale_at!r}")
        if scales is None:
            return None, None
        r = scales[l][idx]
        return (r, None) if scale_at == "weighted_sum" else (None, r)

    def _bias(self) -> Tensor:
        return self.out.bias.view((1, -1) + (1,) * (self.out.weight.dim() - 2))

    def _output(self, x: Tensor, cols: Tensor) -> Tensor:
        """The output layer's contribution of input features ``cols`` (``x``: their activations)."""
        w = self._weight(self.num_hidden)[:, cols]
        return F.conv2d(x, w) if self.spec.head == "conv" else F.linear(x.flatten(1), w)

    def _forward_fused(self, image: Tensor, subnet: int, scales: list[Tensor] | None,
                       scale_at: str = "weighted_sum") -> Tensor:
        """Subnet ``subnet`` layer by layer over all its neurons at once, the weights masked to
        ``level(in) <= level(out)``: the function of the summed increments in fewer, larger ops."""
        x, cols = image, torch.arange(3, device=image.device)
        outputs: list[tuple[Tensor, Tensor]] = []  # per hidden layer: activations and their columns
        for l in range(self.num_hidden):
            idx = torch.cat(self.groups(l)[: subnet + 1])  # neurons of subnet ``subnet``, by level
            x = x.flatten(1) if l == len(self.convs) else x  # [N, C, H, W] -> [N, C*H*W] before FC
            if (lateral := self._lateral(l)) is not None:
                side, side_cols = outputs[lateral]
                x, cols = torch.cat([self._upsample(x, l), side], 1), torch.cat([cols, self.widths[l - 1] + side_cols])
            in_levels = torch.as_tensor(self.input_levels(l), device=x.device)[cols]
            mask = in_levels[None, :] <= self.levels(l)[idx][:, None]  # [out, in]
            w = self._weight(l)[idx][:, cols]
            r_sum, r_out = self._split_scales(scales, scale_at, l, idx)
            h = self._hidden(l, x, w * mask.view(mask.shape + (1,) * (w.dim() - 2)), idx, r_sum)
            x = h if r_out is None else h * r_out.view((1, -1) + (1,) * (h.dim() - 2))
            cols = self._features(l, idx)
            outputs.append((x, cols))
        return self._bias() + self._output(x, cols)

    def forward(self, image: Tensor, subnet: int | None = None, scales: list[Tensor] | None = None,
                scale_at: str = "weighted_sum") -> Tensor:
        """Logits of subnet ``subnet`` (default: the largest).

        In training mode the subnet is computed fused (``_forward_fused``: one masked op per layer,
        the fast way to train); otherwise as its increments, exactly what the export runs.
        ``scales``/``scale_at``: the importance scales ``r`` (``forward_increment``).
        """
        subnet = self.num_subnets - 1 if subnet is None else subnet
        if self.training:
            return self._forward_fused(image, subnet, scales, scale_at)
        carry: Carry = {}
        for k in range(subnet + 1):
            new, logits = self.forward_increment(image, carry, k, scales, scale_at)
            carry.update(new)
        return logits

    def forward_all(self, image: Tensor) -> list[Tensor]:
        """Logits of every subnet from one pass (each increment computed once)."""
        carry: Carry = {}
        outputs = []
        for k in range(self.num_subnets):
            new, logits = self.forward_increment(image, carry, k)
            carry.update(new)
            outputs.append(logits)
        return outputs
