"""Vehicle modes from YAML: MAC budget, frame deadline and CPU-load ceiling per mode.

```yaml
default_mode: normal
modes:
  normal:       {mac_budget: 1.0,  deadline_ms: 50, cpu_load_ceiling: 0.9}
  power_saving: {mac_budget: 0.35, deadline_ms: 80, cpu_load_ceiling: 0.6}
```
``mac_budget`` is a fraction of the full model in (0, 1] (a float) or an absolute MAC count (an
integer > 1). ``cpu_load_ceiling`` is the share of all cores used by other processes above which
refinement stops (1.0: never). Optional ``exit`` is the calibration target of early-exit gates in
this mode: ``{max_accuracy_drop: 0.01}`` (vs the last stage) or ``{max_mean_macs: 0.5}`` (fraction
of the full model); ``python -m anytime_perception.calibration`` turns it into thresholds.
Optional ``appeal`` allows appeals to a big network in this mode and is the target their
threshold is calibrated to: ``{max_accuracy_drop: 0.01}`` (vs the big network) or
``{max_appeal_rate: 0.3}``; absent or ``false``: no appeals in this mode.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ModeError", "VehicleMode", "ModeTable", "load_modes", "parse_modes", "default_modes_file"]

MODE_KEYS = {"mac_budget", "deadline_ms", "cpu_load_ceiling", "exit", "appeal"}
EXIT_TARGETS = ("max_accuracy_drop", "max_mean_macs")
APPEAL_TARGETS = ("max_accuracy_drop", "max_appeal_rate")


class ModeError(ValueError):
    """Invalid modes file or unknown mode; the message names the field."""


@dataclass(frozen=True)
class VehicleMode:
    """One mode with its MAC budget resolved to an absolute count."""

    name: str
    mac_budget: int
    deadline_ms: float
    cpu_load_ceiling: float
    exit_target: tuple[str, float] | None = None  # (one of EXIT_TARGETS, value) for calibration
    appeal_target: tuple[str, float] | None = None  # (one of APPEAL_TARGETS, value); None: no appeals

    @property
    def appeals(self) -> bool:
        """Whether frames may be appealed to a big network in this mode."""
        return self.appeal_target is not None


@dataclass(frozen=True)
class ModeTable:
    """All modes of a file and the default one."""

    modes: dict[str, VehicleMode]
    default_mode: str

    def get(self, name: str) -> VehicleMode:
        """The mode called ``name``; ModeError naming the known modes otherwise."""
        if name not in self.modes:
            raise ModeError(f"unknown vehicle mode {name!r}; known: {', '.join(sorted(self.modes))}")
        return self.modes[name]


def _number(spec: dict, key: str, where: str) -> float:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModeError(f"{where}.{key}: expected a number, got {value!r}")
    return value


def _mode(name: str, spec: Any, full_macs: int) -> VehicleMode:
    where = f"modes.{name}"
    if not isinstance(spec, dict):
        raise ModeError(f"{where}: expected a mapping with {sorted(MODE_KEYS)}")
    unknown = set(spec) - MODE_KEYS
    if unknown:
        raise ModeError(f"{where}: unknown keys {sorted(unknown)} (allowed {sorted(MODE_KEYS)})")
    budget = _number(spec, "mac_budget", where)
    if isinstance(budget, float) and 0 < budget <= 1:
        macs = int(round(budget * full_macs))
    elif isinstance(budget, int) and budget > 1:
        macs = budget
    else:
        raise ModeError(f"{where}.mac_budget: a fraction in (0, 1] or an integer MAC count > 1, got {budget!r}")
    deadline = _number(spec, "deadline_ms", where)
    if deadline <= 0:
        raise ModeError(f"{where}.deadline_ms: must be > 0, got {deadline}")
    ceiling = _number(spec, "cpu_load_ceiling", where)
    if not 0 <= ceiling <= 1:
        raise ModeError(f"{where}.cpu_load_ceiling: must be in [0, 1], got {ceiling}")
    return VehicleMode(name, macs, float(deadline), float(ceiling),
                       _target(spec.get("exit"), f"{where}.exit", EXIT_TARGETS),
                       _target(spec.get("appeal"), f"{where}.appeal", APPEAL_TARGETS))


def _target(spec: Any, where: str, keys: tuple[str, ...]) -> tuple[str, float] | None:
    """A ``{key: value}`` calibration target with one of ``keys`` and a value in [0, 1]; absent or false: None."""
    if spec is None or spec is False:
        return None
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in keys:
        raise ModeError(f"{where}: expected one of " + " or ".join(f"{{{k}: x}}" for k in keys) + f", got {spec!r}")
    key = next(iter(spec))
    value = _number(spec, key, where)
    if not 0 <= value <= 1:
        raise ModeError(f"{where}.{key}: must be in [0, 1], got {value}")
    return key, float(value)


def parse_modes(data: Any, full_macs: int) -> ModeTable:
    """Validate parsed YAML; fractions of the budget refer to ``full_macs``."""
    if not isinstance(data, dict) or not isinstance(data.get("modes"), dict) or not data["modes"]:
        raise ModeError("modes: expected a non-empty mapping of mode name -> settings")
    modes = {str(name): _mode(str(name), spec, full_macs) for name, spec in data["modes"].items()}
    default = str(data.get("default_mode", next(iter(modes))))
    if default not in modes:
        raise ModeError(f"default_mode: {default!r} is not one of {sorted(modes)}")
    return ModeTable(modes, default)


def default_modes_file() -> Path:
    """The package's ``config/modes.yaml``, wherever the package is: installed into a prefix
    (``<prefix>/share/anytime_perception/config``, by the CMake build or pip) or the source tree;
    not the current directory."""
    candidates = [Path(sys.prefix) / "share" / "anytime_perception" / "config" / "modes.yaml",
                  Path(__file__).resolve().parents[2] / "config" / "modes.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise ModeError(f"the package's modes file is in none of {[str(c) for c in candidates]}; pass --modes")


def load_modes(path: str | Path, full_macs: int) -> ModeTable:
    """Read and validate a modes YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ModeError(f"modes file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ModeError(f"modes file {path} is not valid YAML: {exc}") from exc
    return parse_modes(data, full_macs)
