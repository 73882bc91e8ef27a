"""Files named by parameters: a path, or a name under the package's share directory."""
from __future__ import annotations

from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

__all__ = ["PACKAGE", "resolve_share_path"]

PACKAGE = "anytime_perception"


def resolve_share_path(value: str, kind: str, default: str) -> Path:
    """An existing path, or ``share/anytime_perception/<kind>/<value>`` (``default`` if empty)."""
    value = value or default
    if Path(value).exists():
        return Path(value)
    try:
        shared = Path(get_package_share_directory(PACKAGE)) / kind / value
    except PackageNotFoundError:  # not installed through ament (e.g. a plain pip install)
        shared = None
    if shared is None or not shared.exists():
        raise FileNotFoundError(f"{value!r} is neither an existing path nor in share/{PACKAGE}/{kind}/")
    return shared
