"""How the package's executables run a node: start-up errors as one clear line, spin, clean exit."""
from __future__ import annotations

import signal
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from ..runtime import ManifestError, ModeError

__all__ = ["run_node"]

STARTUP_ERRORS = (ManifestError, ModeError, FileNotFoundError, ValueError)


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Create the node and spin it until shutdown. A bad model, modes file or parameter at
    start-up is logged as ``cannot start: ...`` (exit 1); SIGINT/SIGTERM end it cleanly (exit 0)."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except STARTUP_ERRORS as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # a signal shut the context down while a callback was publishing: a normal exit
    finally:
        # Ctrl-C under `ros2 launch` reaches the node twice (the terminal signals the whole process
        # group, and launch forwards it): the second one must not interrupt the bounded clean-up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
