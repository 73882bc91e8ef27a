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


def _interrupt_once(signum: int, frame: object) -> None:
    """SIGINT handler: the first Ctrl-C interrupts the spin; every later one is ignored from that
    moment on. Under `ros2 launch` Ctrl-C reaches the node twice (the terminal signals the whole
    process group, and launch forwards it); a second KeyboardInterrupt raised while the first one
    unwinds rclpy (e.g. inside a Future's finaliser) would print a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_node(make_node: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """Create the node and spin it until shutdown. A bad model, modes file or parameter at
    start-up is logged as ``cannot start: ...`` (exit 1); SIGINT/SIGTERM end it cleanly (exit 0)."""
    signal.signal(signal.SIGINT, _interrupt_once)  # before rclpy.init: its handler chains to this one
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
        # no SIGINT may interrupt the bounded clean-up (also when SIGTERM ended the spin)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
