"""Lifecycle plumbing shared by the hardware-facing nodes (tracker_bridge, arm_guide, sim_arm, console_bridge).

These are ROS 2 managed nodes (``rclpy.lifecycle.Node``; ``ros2 lifecycle set /tracker_bridge activate``
works on a full ROS install). What each state means for them (docs/nodes.md, "Lifecycle (managed nodes)"):

``unconfigured``
    Parameters declared (with their descriptors; ROS refuses an out-of-range value already here).
    Nothing else exists: no topic, no socket, no thread.
``inactive`` (after configure)
    Parameters parsed and validated, files read (URDF, case), core objects built, publishers,
    subscriptions, services and timers created, ports reserved (bound, not listening: a connection is
    refused, and a port in use fails the configure). Timers are created stopped; nothing is published.
``active`` (after activate)
    Sockets listen / connect, threads run (tracker socket, 1 kHz servo, web server), timers fire.
``deactivate`` stops all of that (the node is inactive again); ``cleanup`` destroys what configure made
(back to unconfigured); ``shutdown`` (also from :meth:`ManagedNode.destroy_node`) does whatever of the two
is needed.

A node subclasses :class:`ManagedNode` and writes four hooks: :meth:`~ManagedNode.configure`,
:meth:`~ManagedNode.activate`, :meth:`~ManagedNode.deactivate`, :meth:`~ManagedNode.cleanup`. Everything
else is here: exceptions become ``FAILURE`` with one log line naming the cause (the node stays in its
state; :attr:`ManagedNode.transition_error` keeps the text), entities created by ``configure`` are
destroyed on cleanup (or after a failed configure), timers follow the active state.

:func:`bring_up` drives configure -> activate in process (``run_node_main``, :class:`ComposedStack`,
``spine-nav up``, the demo's node processes) and raises :class:`LifecycleError` with the node's reason.
"""
from __future__ import annotations

import socket
from typing import Callable

from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.node import Node

from spine_nav.nodes.parameters import declare_node_parameters

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class LifecycleError(RuntimeError):
    """A node could not be configured or activated; the message names the node and why."""


class ManagedNode(LifecycleNode):
    """Base of the hardware-facing nodes: parameters declared here, the rest in the four hooks.

    ``self.params``: name -> value of every declared parameter (:mod:`spine_nav.nodes.parameters`).
    ``self.active``: True between a successful activate and the next deactivate (read it in callbacks
    that must not act while inactive, e.g. a service that would move the arm).
    """

    def __init__(self, node_name: str, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.params = declare_node_parameters(self)
        #: why the last configure / activate failed ("<node>: configure failed: <cause>"), None after a success
        self.transition_error: str | None = None
        self.active = False
        self._configured = self._configuring = False
        self._owned: list[tuple[Callable, object]] = []  # (destroy function, entity) made by configure()
        self._closers: list[Callable[[], None]] = []  # at_cleanup() registrations

    # ---------------------------------------------------------------- hooks (override)
    def configure(self) -> None:
        """Parse and validate ``self.params``, open files, build the core, create publishers, subscriptions,
        services and timers, reserve ports. Raise (ValueError, OSError, ...) with a message naming the bad
        parameter / file / port: the node then stays unconfigured."""

    def activate(self) -> None:
        """Start sockets and threads (timers created by configure are started by the base)."""

    def deactivate(self) -> None:
        """Stop what activate started (timers are stopped by the base)."""

    def cleanup(self) -> None:
        """Release what configure took besides ROS entities (those the base destroys). Also called after a
        failed configure: attributes not built yet must be tolerated."""

    def create_timer(self, *args, **kwargs):
        """rclpy's, but a timer created by configure starts stopped (the base starts it on activate)."""
        if getattr(self, "_configuring", False):
            kwargs["autostart"] = False
        return super().create_timer(*args, **kwargs)

    def at_cleanup(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` on cleanup / shutdown (or after a failed configure), after :meth:`cleanup`, last
        registered first: for what configure opened besides ROS entities (an inner node, a record to write)."""
        self._closers.append(fn)

    # ---------------------------------------------------------------- state
    @property
    def state_label(self) -> str:
        """``unconfigured``, ``inactive``, ``active`` or ``finalized`` (or a transition state while in one)."""
        return self._state_machine.current_state[1]

    def _entities(self) -> list[tuple[Callable, object]]:
        return ([(self.destroy_publisher, e) for e in self.publishers]
                + [(self.destroy_subscription, e) for e in self.subscriptions]
                + [(self.destroy_service, e) for e in self.services]
                + [(self.destroy_client, e) for e in self.clients]
                + [(self.destroy_timer, e) for e in self.timers])

    def _own_timers(self) -> list:
        return [e for destroy, e in self._owned if destroy == self.destroy_timer]

    def _step(self, what: str, hook: Callable[[], None]) -> bool:
        try:
            hook()
        except Exception as exc:  # noqa: BLE001 - every cause becomes FAILURE with its text in the log
            text = str(exc) or type(exc).__name__
            prefix = f"{self.get_name()}: "
            self.transition_error = f"{prefix}{what} failed: {text[len(prefix):] if text.startswith(prefix) else text}"
            self.get_logger().error(self.transition_error)
            return False
        return True

    def _release(self) -> None:
        """cleanup() and destroy what configure made (after a cleanup, a shutdown or a failed configure)."""
        errors = []
        for fn in [self.cleanup, *reversed(self._closers)]:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - release everything else anyway, then log
                errors.append(str(exc) or type(exc).__name__)
        for destroy, entity in reversed(self._owned):
            destroy(entity)
        self._owned, self._closers, self._configured = [], [], False
        if errors:
            self.get_logger().error(f"{self.get_name()}: cleanup: {'; '.join(errors)}")

    # ---------------------------------------------------------------- transitions (rclpy callbacks)
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        before = {id(e) for _, e in self._entities()}
        self.transition_error = None
        self._configuring = True
        try:
            ok = self._step("configure", self.configure)
        finally:
            self._configuring = False
        self._owned = [(d, e) for d, e in self._entities() if id(e) not in before]
        self._configured = True
        if not ok:
            self._release()
        return SUCCESS if ok else FAILURE

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.transition_error = None
        if not self._step("activate", self.activate):
            self._step("deactivate", self.deactivate)  # stop whatever part of activate had started
            return FAILURE
        for timer in self._own_timers():
            timer.reset()
        self.active = True
        return SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Always succeeds: a stop that raised is logged, the node is inactive anyway."""
        self.active = False
        for timer in self._own_timers():
            timer.cancel()
        self._step("deactivate", self.deactivate)
        return SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self.active:
            self.on_deactivate(state)
        if self._configured:
            self._release()
        return SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        return self.on_shutdown(state)

    def destroy_node(self) -> None:
        """Shut down (deactivate + cleanup as needed), then destroy the node."""
        if self.state_label in ("unconfigured", "inactive", "active"):
            self.trigger_shutdown()
        super().destroy_node()


def _transition(node: ManagedNode, trigger: Callable, what: str) -> None:
    if trigger() != SUCCESS:
        raise LifecycleError(node.transition_error or f"{node.get_name()}: {what} failed")


def configure(node: ManagedNode) -> None:
    """``trigger_configure``; :class:`LifecycleError` naming the node and the cause if it fails (the node
    stays unconfigured)."""
    _transition(node, node.trigger_configure, "configure")


def activate(node: ManagedNode) -> None:
    """``trigger_activate``; :class:`LifecycleError` if it fails (the node stays inactive)."""
    _transition(node, node.trigger_activate, "activate")


def bring_up(node: Node) -> None:
    """configure -> activate a :class:`ManagedNode` in process (other nodes: nothing to do); raises
    :class:`LifecycleError` naming the node and the cause when a transition fails."""
    if isinstance(node, ManagedNode):
        configure(node)
        activate(node)


def reserve_port(host: str, port: int, what: str) -> socket.socket:
    """Bind ``host:port`` without listening (a connection to it is refused) and return the socket: the port is
    ours from configure to activate. OSError naming ``what`` and the port when it is in use. ``port`` 0 binds a
    free port (read it with ``getsockname()[1]`` and listen on that one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise OSError(f"parameter port: {what} cannot use {host}:{port} ({exc.strerror or exc})") from None
    return sock
