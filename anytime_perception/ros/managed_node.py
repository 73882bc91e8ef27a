"""The managed (lifecycle) variant of the node: ``anytime_managed_node``, same parameters and
topics as ``anytime_node``, driven through the standard lifecycle transitions.

- configure: load the model and modes, open the topics (a bad model, modes file or parameter
  fails the transition with the reason; the node stays unconfigured);
- activate: answer frames;  deactivate: stop answering them, nothing unloaded;
- cleanup: close the topics and unload the model;  shutdown: the same, from any state.

    ros2 run anytime_perception anytime_managed_node      # or: ros2 launch ... node.launch.py managed:=true
    ros2 lifecycle set /anytime_perception configure
    ros2 lifecycle set /anytime_perception activate
"""
from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from .lifecycle import STARTUP_ERRORS, run_node
from .node import AnytimePerception

__all__ = ["ManagedAnytimePerceptionNode", "main"]


class ManagedAnytimePerceptionNode(AnytimePerception, LifecycleNode):
    """``AnytimePerception`` under lifecycle management: unconfigured until told otherwise."""

    active = False

    def __init__(self, **kwargs) -> None:
        LifecycleNode.__init__(self, "anytime_perception", **kwargs)
        self._declare_parameters()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except STARTUP_ERRORS as exc:
            self._unconfigure()
            self.get_logger().error(f"cannot configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.get_logger().info("active: answering frames")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.get_logger().info("inactive: frames are not answered (the model stays loaded)")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unconfigure()
        self.get_logger().info("unconfigured: model unloaded")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._unconfigure()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        self.active = False
        self._unconfigure()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the managed node (it starts unconfigured; parameters are checked at configure)."""
    return run_node(ManagedAnytimePerceptionNode, "anytime_perception", args)
