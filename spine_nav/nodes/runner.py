"""Start nodes: one per process (console scripts) or several composed in one executor (`spine-nav up`).

Both read the same per-node parameter file (``config/nodes.yaml``, standard
``node_name: ros__parameters:`` layout) through ``--ros-args --params-file``,
so launch files, console scripts and the composed stack share one source of truth.
"""
from __future__ import annotations

import gc
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node

from spine_nav.nodes.registry import node_class

EXECUTORS = ("events", "single")

#: Python's GIL hand-over interval for processes that host nodes: 0.5 ms instead of the default 5 ms,
#: so a tracker-socket or servo thread waiting for the interpreter is not held up for a whole 5 ms
#: slice by a busy executor thread (seen here: 50-150 ms stale samples with the default under load).
NODE_PROCESS_SWITCH_INTERVAL_S = 0.0005


def tune_process_for_nodes() -> None:
    """Process-wide settings for a process that hosts spine_nav nodes (call once, from main)."""
    sys.setswitchinterval(NODE_PROCESS_SWITCH_INTERVAL_S)


def set_process_realtime(priority: int) -> str:
    """SCHED_FIFO at ``priority`` (1-99) for the calling thread; every thread it creates afterwards
    (rclpy/DDS, executor, socket and servo threads) inherits it. Call from main before building nodes.

    Why: on 2 cores the stack shares the CPUs with the simulators and whatever else runs; a node
    thread preempted while it holds the GIL stalls the 1 kHz servo behind it for tens of ms
    (priority inversion through the GIL, seen as 60-70 ms control-cycle overruns in the demo). Our
    threads all block (spin_once waits, recv, absolute-deadline sleep), so FIFO cannot spin the
    CPU away; the kernel's RT throttling bounds it anyway. Returns what happened, for the log.
    """
    if priority <= 0:
        return "normal scheduling"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
    except (PermissionError, OSError, AttributeError) as exc:
        return f"SCHED_FIFO {priority} refused ({exc}): normal scheduling"
    return f"SCHED_FIFO priority {priority}"


@contextmanager
def realtime_threads(priority: int):
    """:func:`set_process_realtime` for the threads created inside the ``with`` block; the calling
    thread returns to its previous policy on exit (e.g. the demo's simulators and recorder run under
    FIFO while the case runs, the report is drawn with normal priority afterwards)."""
    try:
        before = (os.sched_getscheduler(0), os.sched_getparam(0))
    except (OSError, AttributeError):
        before = None
    status = set_process_realtime(priority)
    try:
        yield status
    finally:
        if before is not None and priority > 0:
            try:
                os.sched_setscheduler(0, before[0], before[1])
            except (PermissionError, OSError):
                pass


def freeze_startup_objects() -> None:
    """Move everything allocated so far (modules, nodes, message classes) out of the cyclic GC's reach.

    Call once the nodes are built, in a process that hosts them. A full collection then only scans what
    the running nodes allocate, instead of pausing the executor to walk every object of rclpy, numpy and
    Pinocchio (``gc.freeze``; measured in `spine-nav bench guard`: node p99 1.04 -> 0.93 ms at 1 kHz).
    """
    gc.freeze()


def make_executor(kind: str = "events", context: Context | None = None) -> Executor:
    """``events``: rclpy.experimental.EventsExecutor (lowest latency, measured in bench guard);
    ``single``: SingleThreadedExecutor (rclpy's default)."""
    if kind == "events":
        from rclpy.experimental import EventsExecutor

        return EventsExecutor(context=context)
    if kind == "single":
        return SingleThreadedExecutor(context=context)
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")


def ros_args_for(params_file: str | Path | None) -> list[str]:
    if params_file is None:
        return []
    path = Path(params_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: parameter file not found")
    return ["--ros-args", "--params-file", str(path)]


def spin_until(executor: Executor, keep_going: Callable[[], bool], period_s: float = 0.05) -> None:
    """Spin ``executor`` with ``spin_once`` while ``keep_going()``.

    Not ``executor.spin()``: in rclpy 7.1 an EventsExecutor inside ``spin()`` hangs (no message out,
    SIGTERM ignored) when another thread publishes, and deadlocks when another thread shuts it down;
    a ``spin_once`` loop does neither (seen here; tests/test_ros_interfaces.py, tests/test_bridge_node.py).
    """
    try:
        while keep_going():
            executor.spin_once(timeout_sec=period_s)
    except rclpy.executors.ExternalShutdownException:
        pass


def run_node_main(node_factory: Callable[[], Node], argv: Sequence[str] | None = None) -> int:
    """Body of every node's ``main()``: init, configure -> activate a lifecycle node
    (:func:`spine_nav.nodes.lifecycle.bring_up`), spin until Ctrl-C / shutdown, release cleanly.

    Returns 1 with the reason on stderr when the node cannot be configured or activated."""
    from spine_nav.nodes.lifecycle import LifecycleError, bring_up

    tune_process_for_nodes()
    rclpy.init(args=list(argv) if argv is not None else sys.argv)
    node = node_factory()
    try:
        bring_up(node)
    except LifecycleError as exc:
        sys.stderr.write(f"error: {exc}\n")
        node.destroy_node()
        rclpy.try_shutdown()
        return 1
    executor = make_executor("events")
    executor.add_node(node)
    freeze_startup_objects()
    try:
        spin_until(executor, rclpy.ok)
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def load_stack_config(path: str | Path) -> dict:
    """Read ``config/stack.yaml``: ``nodes`` (list of node names) and ``params_file`` (relative to it)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: stack config not found") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ValueError(f"{p}: expected a mapping with a 'nodes' list")
    params = data.get("params_file")
    data["params_file"] = str((p.parent / params).resolve()) if params else None
    return data


class ComposedStack:
    """Several nodes in one process and one executor, spun in a background thread.

    Built = up: every node is constructed, the lifecycle nodes configured, the in-process links wired,
    then the lifecycle nodes activated (:func:`spine_nav.nodes.lifecycle.bring_up`'s two steps, in that
    order, so no socket thread runs before its in-process consumers are linked). A node that fails to
    configure or activate raises :class:`spine_nav.nodes.lifecycle.LifecycleError` naming it and why,
    after everything built so far was released.

    Use as a context manager in tests and the demo::

        with ComposedStack(["plan_publisher"], params_file="config/nodes.yaml") as stack:
            ...
    """

    def __init__(self, node_names: Sequence[str], params_file: str | Path | None = None,
                 executor: str = "events", extra_ros_args: Sequence[str] = ()) -> None:
        self.context = Context()
        self.executor: Executor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        args = ros_args_for(params_file)
        if extra_ros_args:
            args = (args or ["--ros-args"]) + list(extra_ros_args)
        rclpy.init(args=["spine_nav_stack", *args], context=self.context)
        self.nodes: dict[str, Node] = {}
        from spine_nav.nodes.in_process import link_nodes
        from spine_nav.nodes.lifecycle import ManagedNode, activate, configure

        #: in-process shortcuts wired between the composed nodes (spine_nav.nodes.in_process)
        self.links: list[str] = []
        try:
            for name in node_names:
                self.nodes[name] = node_class(name)(context=self.context)
            managed = [n for n in self.nodes.values() if isinstance(n, ManagedNode)]
            for node in managed:
                configure(node)
            self.links = link_nodes(self.nodes)
            for node in managed:
                activate(node)
        except Exception:
            self.close()
            raise
        self.executor = make_executor(executor, context=self.context)
        for node in self.nodes.values():
            self.executor.add_node(node)

    def start(self) -> "ComposedStack":
        self._thread = threading.Thread(target=self._spin, name="spine_nav_executor", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        spin_until(self.executor, lambda: not self._stop.is_set() and self.context.ok())

    def flush_latency_records(self) -> list[Path]:
        """Write the nodes' latency records now (:func:`spine_nav.nodes.latency_record.flush_latency_records`):
        what a stopping process does first, before :meth:`close`'s teardown, which can outlast a supervisor's
        stop grace under load. Returns the files written."""
        from spine_nav.nodes.latency_record import flush_latency_records

        return flush_latency_records(self.nodes.values())

    def close(self) -> None:
        """Stop spinning (bounded wait), then release the executor, the nodes and the context."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
        for node in self.nodes.values():
            node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> "ComposedStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class InnerNode:
    """A helper node with its own executor in a dedicated thread, for slow callbacks.

    A service that computes for a long time (registration: seconds; the arm's alignment IK: up to
    ~150 ms) must not block the node's other callbacks (joint feedback, tracker samples), whose
    absence would trip watchdogs. Put such services on an ``InnerNode``: same context, separate
    executor and thread (a spin_once loop, see :func:`spin_until`).
    """

    def __init__(self, name: str, context: Context) -> None:
        self.node = Node(name, context=context)
        self._context = context
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=spin_until, args=(self._executor, lambda: not self._stop.is_set() and self._context.ok()),
            name=name, daemon=True)
        self._thread.start()

    def destroy(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
