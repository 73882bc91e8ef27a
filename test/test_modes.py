"""Vehicle-mode YAML validation."""
from __future__ import annotations

import pytest

from anytime_perception.runtime import ModeError, load_modes
from anytime_perception.runtime.modes import parse_modes

from conftest import MODES_FILE


def test_shipped_modes_file_is_valid():
    table = load_modes(MODES_FILE, full_macs=1000)
    assert {"normal", "power_saving"} <= set(table.modes)
    assert table.default_mode == "normal"
    assert table.get("power_saving").mac_budget < table.get("normal").mac_budget


def test_budget_as_fraction_or_absolute():
    table = parse_modes({"modes": {"a": {"mac_budget": 0.25, "deadline_ms": 10, "cpu_load_ceiling": 1.0},
                                   "b": {"mac_budget": 500, "deadline_ms": 10, "cpu_load_ceiling": 0.5}}}, 1000)
    assert table.get("a").mac_budget == 250
    assert table.get("b").mac_budget == 500
    assert table.default_mode == "a"


@pytest.mark.parametrize("modes, message", [
    ({}, "non-empty mapping"),
    ({"a": {"mac_budget": 0.5, "deadline_ms": 10}}, "cpu_load_ceiling: expected a number"),
    ({"a": {"mac_budget": 0, "deadline_ms": 10, "cpu_load_ceiling": 1}}, "modes.a.mac_budget"),
    ({"a": {"mac_budget": 1.5, "deadline_ms": 10, "cpu_load_ceiling": 1}}, "modes.a.mac_budget"),
    ({"a": {"mac_budget": 0.5, "deadline_ms": -1, "cpu_load_ceiling": 1}}, "modes.a.deadline_ms"),
    ({"a": {"mac_budget": 0.5, "deadline_ms": 10, "cpu_load_ceiling": 2}}, "modes.a.cpu_load_ceiling"),
    ({"a": {"mac_budget": 0.5, "deadline_ms": 10, "cpu_load_ceiling": 1, "speed": 3}}, "unknown keys"),
    ({"a": {"mac_budget": True, "deadline_ms": 10, "cpu_load_ceiling": 1}}, "expected a number"),
])
def test_invalid_modes_are_refused(modes, message):
    with pytest.raises(ModeError, match=message):
        parse_modes({"modes": modes}, 1000)


def test_unknown_default_mode_is_refused():
    with pytest.raises(ModeError, match="default_mode"):
        parse_modes({"default_mode": "x", "modes": {"a": {"mac_budget": 1.0, "deadline_ms": 1,
                                                          "cpu_load_ceiling": 1}}}, 10)


def test_invalid_yaml_file_is_refused(tmp_path):
    path = tmp_path / "modes.yaml"
    path.write_text("modes: {normal: [")
    with pytest.raises(ModeError, match="not valid YAML"):
        load_modes(path, 10)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModeError, match="modes file"):
        load_modes(tmp_path / "none.yaml", 10)


def test_unknown_mode_lookup_lists_known_modes():
    table = load_modes(MODES_FILE, 1000)
    with pytest.raises(ModeError, match="unknown vehicle mode 'warp'.*normal"):
        table.get("warp")
