"""The console's floor (issue 17): a bare server and a bare page, measured like the console.

Bare server (its own process, like `spine-nav console`): an rclpy node on an EventsExecutor spun with
``spin_once`` (as the console's), a raw subscription to ``tracking/tool_tip`` (the console's QoS), and
a ``websockets`` server on 127.0.0.1 that serves :data:`PAGE` at ``/`` and pushes each sample's stamp
(seconds, text) to the page at ``/ws`` as it arrives. Bare page: WebSocket -> one dot on a 2D canvas in
the same headless Chromium with the same flags (:mod:`spine_nav.console.browser`); the latency is taken
as the console page takes it: tracker stamp -> end of the requestAnimationFrame callback that first draws
the sample (``performance.timeOrigin + performance.now()``, same host clock), read with
``window.floorMetrics(reset)``. Input floor (trainee mode, ``spine-nav bench console --trainee``): a key
on the bare page is sent over the WebSocket, the bare server echoes it at once, and the page records
key -> end of the frame that draws the echo (``input_to_drawn_ms``), the bare round trip of trainee
mode's key -> server -> stack -> page.

Run: ``python -m spine_nav.bench.console_floor PORT`` (prints ``{"listening": PORT}`` once serving;
SIGTERM ends it).
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading

PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>floor</title></head>
<body style="margin:0;background:#111"><canvas id="c" width="1140" height="920"></canvas><script>
const ctx = document.getElementById('c').getContext('2d');
const now = () => performance.timeOrigin + performance.now();
const m = { latencies_ms: [], frame_times_ms: [], pending: [], samples: 0, messages: 0, input_ms: [], inputs: [] };
let last = null;
const ws = new WebSocket(`ws://${location.host}/ws`);
ws.onmessage = (ev) => {
  m.messages++;
  if (ev.data[0] === 'k') { m.inputs.push(parseFloat(ev.data.slice(1))); last = (last || 0) + 0.1; return; }
  const s = parseFloat(ev.data); m.samples++; m.pending.push(s * 1000); last = s;
};
// the input floor: a key -> WebSocket -> the bare server echoes it -> drawn (trainee mode's round trip, bare)
window.addEventListener('keydown', () => { if (ws.readyState === 1) ws.send('k' + now().toFixed(3)); }, true);
function frame() {
  if (m.pending.length || m.inputs.length) {
    ctx.fillStyle = '#111'; ctx.fillRect(0, 0, 1140, 920);
    const a = (last % 5) / 5 * 2 * Math.PI;
    ctx.fillStyle = '#4f4'; ctx.beginPath(); ctx.arc(570 + 300 * Math.cos(a), 460 + 300 * Math.sin(a), 6, 0, 2 * Math.PI); ctx.fill();
    const t = now();
    for (const s of m.pending) m.latencies_ms.push(t - s);
    for (const s of m.inputs) m.input_ms.push(t - s);
    m.pending.length = 0; m.inputs.length = 0;
  }
  m.frame_times_ms.push(performance.now());
  if (m.frame_times_ms.length > 4000) m.frame_times_ms.splice(0, 2000);
  requestAnimationFrame(frame);
}
window.floorMetrics = (reset = false) => {
  const out = { latencies_ms: m.latencies_ms.slice(), frame_times_ms: m.frame_times_ms.slice(), samples: m.samples,
                messages: m.messages, connected: ws.readyState === 1, input_to_drawn_ms: m.input_ms.slice() };
  if (reset) { m.latencies_ms.length = 0; m.frame_times_ms.length = 0; m.samples = 0; m.messages = 0; m.input_ms.length = 0; }
  return out;
};
requestAnimationFrame(frame);
</script></body></html>"""


def serve(port: int) -> int:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.context import Context
    from websockets.asyncio.server import broadcast
    from websockets.asyncio.server import serve as ws_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    from spine_nav.nodes.cdr import stamp_of_pose_stamped
    from spine_nav.nodes.qos import SENSOR_QOS
    from spine_nav.nodes.runner import make_executor

    clients: set = set()
    state: dict = {}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.set())

    async def handler(ws) -> None:
        clients.add(ws)
        try:
            async for msg in ws:
                if isinstance(msg, str) and msg.startswith("k"):  # an input: echoed at once (the input floor)
                    await ws.send(msg)
        finally:
            clients.discard(ws)

    async def process_request(connection, request):
        if request.path == "/ws":
            return None
        return Response(200, "OK", Headers({"Content-Type": "text/html; charset=utf-8",
                                            "Content-Length": str(len(PAGE)), "Connection": "close"}), PAGE)

    async def main() -> None:
        state["loop"] = asyncio.get_running_loop()
        async with ws_serve(handler, "127.0.0.1", port, process_request=process_request, compression=None) as srv:
            print(json.dumps({"listening": srv.sockets[0].getsockname()[1]}), flush=True)
            while not stop.is_set():
                await asyncio.sleep(0.1)

    def on_tool(data: bytes) -> None:
        sec, nanosec = stamp_of_pose_stamped(data)
        loop = state.get("loop")
        if loop is not None:
            loop.call_soon_threadsafe(broadcast, set(clients), f"{sec + nanosec * 1e-9:.9f}")

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("console_floor", context=ctx)
    node.create_subscription(PoseStamped, "tracking/tool_tip", on_tool, SENSOR_QOS, raw=True)
    ex = make_executor("events", context=ctx)
    ex.add_node(node)
    th = threading.Thread(target=lambda: asyncio.run(main()), name="floor_ws", daemon=True)
    th.start()
    try:
        while not stop.is_set():
            ex.spin_once(timeout_sec=0.1)
    finally:
        stop.set()
        th.join(timeout=5)
        ex.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return 0


class FloorServer:
    """The bare server as a child process (ready once it prints its port); ``close()`` ends it."""

    def __init__(self, env: dict | None = None, timeout_s: float = 30.0) -> None:
        import subprocess

        self.proc = subprocess.Popen([sys.executable, "-m", "spine_nav.bench.console_floor", "0"], env=env,
                                     stdout=subprocess.PIPE, text=True)
        box: dict = {}
        t = threading.Thread(target=lambda: box.update(line=self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout_s)
        if not box.get("line"):
            self.close()
            raise RuntimeError(f"console floor server did not start within {timeout_s} s")
        self.port = int(json.loads(box["line"])["listening"])
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self) -> None:
        from spine_nav.children import stop_child

        stop_child(self.proc)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
