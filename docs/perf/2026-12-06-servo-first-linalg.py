"""Before/after: a ServoLoop (SCHED_FIFO 50 + mlockall, empty cycle) while another thread makes the process's first
numpy.linalg + scipy dposv calls; max gap between servo cycle starts around those calls. argv[1]: 'before' (no warm-up)."""
import sys, threading, time
import numpy as np
from spine_nav.arm import servo
if sys.argv[1] == "before":
    servo.warm_blas_buffers = lambda: []
loop = servo.ServoLoop(lambda t: None, 0.001, realtime=True, record=True).start()
t_wait = time.monotonic()
while len(loop.stats.starts_ns) < 300 and time.monotonic() - t_wait < 60:
    time.sleep(0.05)
n0 = len(loop.stats.starts_ns)
def first_calls():
    from scipy.linalg.lapack import dposv
    t0 = time.perf_counter(); np.linalg.det(np.eye(3)); dposv(2.0 * np.eye(5), np.ones((5, 2)))
    print(f"  first det + dposv in another thread: {(time.perf_counter() - t0) * 1e3:.1f} ms")
t = threading.Thread(target=first_calls); t.start(); t.join(); time.sleep(0.2)
loop.stop()
s = np.diff(np.asarray(loop.stats.starts_ns[n0:], dtype=np.int64)) * 1e-6
print(f"{sys.argv[1]}: realtime {loop.stats.realtime}; servo cycle-start gap max {s.max():.2f} ms, p99 {np.percentile(s, 99):.2f} ms")
