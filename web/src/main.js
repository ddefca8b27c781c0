// spine_nav console page: receives the stack's state over a WebSocket and draws it.
// Messages only update the state; one requestAnimationFrame loop draws what changed since the
// last frame (slices when the tool, the screws' colours or an image changed; the readout when the
// guard changed; nothing when nothing changed). Every tool sample's tracker time (stamp_s, and
// covers_s: samples the server replaced by this newer one before sending) is carried to the frame
// that first shows it, for the latency measurement (window.consoleMetrics(), read by the benchmark
// and the tests). The 3D view renders in a worker (view3d_worker.js), off this thread.
import { SliceView } from './slices.js';
import { tipOf, axisOf } from './geometry.js';
import * as panel from './panel.js';
import { initTrainee } from './trainee.js';

const STALE_AFTER_S = 0.25;      // a live stream older than this is stale (page says so; issue: within 0.5 s)
const BEAT_LOST_AFTER_S = 0.3;   // no heartbeat from the server for this long: server gone
const MAX_SAMPLES = 20000;
const MAX_DPR = 2;

const st = {
  caseInfo: null, plan: null, tool: null, guard: null, arm: null,
  health: {}, levels: {}, diag: {}, training: [],
  beat: null, beatAt: 0, selected: null, lastGuardActive: null,
  win: 1800, lev: 400, connected: false,
  // what the next frame has to redraw
  redraw: { slices: true, guard: true },
  changed: new Set(['levels', 'health', 'arm', 'training', 'diag']), // panel sections to rebuild
};
const TIMING = { slices: 0, view3d: 0, panel: 0, n: 0 };
const metrics = { server_ms: [], recv_ms: [], latencies_ms: [], frame_times_ms: [], pending: [], samples: 0, frames: 0, messages: 0 };
const view3dStats = { renders: 0, render_ms: 0 };
const nowEpochMs = () => performance.timeOrigin + performance.now();

const views = ['axial', 'sagittal', 'coronal'].map((a) => new SliceView(document.getElementById(a), a));
const params = new URLSearchParams(location.search);
let view3d = null;
if (params.get('view3d') !== '0') {
  try { view3d = start3D(document.getElementById('view3d')); } catch (e) { view3dUnavailable(e.message); }
}

// ---- 3D view (worker) -------------------------------------------------------------------------
function view3dUnavailable(message) {
  view3d = null;
  document.getElementById('view3d').textContent = `3D view unavailable: ${message}`;
}

function start3D(container) {
  const w = container.clientWidth || 330, h = container.clientHeight || 290;
  const dpr = Math.min(MAX_DPR, window.devicePixelRatio || 1);
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`; canvas.style.height = `${h}px`; canvas.style.display = 'block';
  if (canvas.width === w * dpr && canvas.height === h * dpr) canvas.style.imageRendering = 'pixelated'; // 1:1, see slices.js
  if (!canvas.transferControlToOffscreen || typeof Worker === 'undefined') throw new Error('this browser has no OffscreenCanvas');
  const offscreen = canvas.transferControlToOffscreen();
  const worker = new Worker('/view3d-worker.js', { type: 'module' });
  worker.onerror = (e) => view3dUnavailable(e.message || 'worker failed');
  worker.onmessage = (ev) => {
    const m = ev.data;
    if (m.type === 'error') view3dUnavailable(m.message);
    else if (m.type === 'rendered') { view3dStats.renders = m.renders; view3dStats.render_ms = m.render_ms; }
  };
  worker.postMessage({ type: 'init', canvas: offscreen, width: w, height: h, dpr }, [offscreen]);
  container.appendChild(canvas);
  let lastState = '';
  return {
    post: (m) => worker.postMessage(m),
    /** Send the moving parts when they changed (one small message per frame at most). */
    state(colours, tool, tube) {
      const key = JSON.stringify([colours, tool, tube]);
      if (key === lastState) return;
      lastState = key;
      worker.postMessage({ type: 'state', colours, tool, tube });
    },
  };
}

// ---- stale detection ------------------------------------------------------------------------
function staleness() {
  const since = (nowEpochMs() - st.beatAt) / 1000;
  if (!st.connected) return 'server not connected';
  if (since > BEAT_LOST_AFTER_S) return `no message from the server for ${since.toFixed(1)} s`;
  // The guard judges every tool sample and keeps publishing (TRACKING_LOST) when samples stop,
  // so a silent guard/status means the stack (or its link to us) stopped.
  const age = streamAge('guard');
  if (age === null) return 'no guard/status received';
  if (age > STALE_AFTER_S) return `guard/status stale (${age.toFixed(1)} s old)`;
  return null;
}
/** Age (s) of a stream now: server-reported age at the last heartbeat + time since it; null: never seen. */
function streamAge(kind) {
  const ages = (st.beat && st.beat.ages_s) || {};
  if (ages[kind] === null || ages[kind] === undefined) return null;
  return ages[kind] + (nowEpochMs() - st.beatAt) / 1000;
}
const isStale = (kind, limit = STALE_AFTER_S * 4) => { const a = streamAge(kind); return a === null || a > limit; };

// ---- screws -----------------------------------------------------------------------------------
const screws = () => (st.plan ? st.plan.screws : []);
const activeId = () => st.selected || (st.guard && st.guard.active_screw_id) || (screws()[0] && screws()[0].id);
const activeScrew = () => screws().find((s) => s.id === activeId());

function screwColour(s, stale) {
  if (!s.navigable) return '#666666';
  if (s.id !== activeId()) return '#b0b0b0';
  const g = st.guard;
  if (stale || !g || g.active_screw_id !== s.id) return panel.STATE_COLOURS.NONE;
  return panel.STATE_COLOURS[g.state_name] || '#ffffff';
}

function selectScrew(step) {
  const list = screws().filter((s) => s.navigable);
  if (!list.length) return;
  const i = list.findIndex((s) => s.id === activeId());
  const next = list[(i + step + list.length) % list.length];
  st.selected = next.id;
  st.redraw.slices = st.redraw.guard = true;
  send({ req: 'select_screw', screw_id: next.id });
}

// ---- WebSocket ------------------------------------------------------------------------------
let ws = null;
function send(obj) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj)); }

function toolSample(stampS, arrivedMs, sentS) {
  metrics.samples++;
  if (metrics.pending.length < 1000) metrics.pending.push(stampS * 1000);
  if (metrics.recv_ms.length < MAX_SAMPLES) metrics.recv_ms.push(arrivedMs - stampS * 1000);
  if (metrics.server_ms.length < MAX_SAMPLES && sentS) metrics.server_ms.push((sentS - stampS) * 1000);
}

function apply(m, arrivedMs) {
  switch (m.t) {
    case 'case':
      st.caseInfo = m;
      document.getElementById('case').textContent = m.case_dir ? `case ${m.case_dir}` : 'no case';
      if (view3d && m.slice_volume) view3d.post({ type: 'surface', url: `/api/surface?vol=${encodeURIComponent(m.slice_volume)}` });
      st.redraw.slices = true;
      break;
    case 'plan':
      st.plan = m;
      if (view3d) view3d.post({ type: 'screws', screws: m.screws.map(({ id, entry_mm, target_mm, diameter_mm }) => ({ id, entry_mm, target_mm, diameter_mm })) });
      st.redraw.slices = st.redraw.guard = true;
      break;
    case 'tool':
      st.tool = m;
      // samples the server replaced by this one (it sends the latest only): shown by the same frame
      if (m.covers_s) for (const s of m.covers_s) toolSample(s, arrivedMs, m.sent_s);
      toolSample(m.stamp_s, arrivedMs, m.sent_s);
      st.redraw.slices = true;
      break;
    case 'guard':
      st.guard = m;
      if (m.active_screw_id && m.active_screw_id !== st.lastGuardActive) {
        st.lastGuardActive = m.active_screw_id; st.selected = null; // the guard decides
      }
      st.redraw.guard = true; // (the screws' colours follow it: draw() compares them every frame)
      break;
    case 'arm': st.arm = m; st.changed.add('arm'); break;
    case 'health': st.health[m.tool] = m; st.changed.add('health'); break;
    case 'levels': st.levels[m.level] = m; st.changed.add('levels'); break;
    case 'diag': st.diag[m.name] = m; st.changed.add('diag'); break;
    case 'training': st.training = m.results; st.changed.add('training'); break;
    case 'beat':
      st.beat = m; st.beatAt = arrivedMs;
      st.changed.add('health'); st.changed.add('arm'); // their stale marks follow the beat
      break;
    case 'reply': case 'error': st.lastReply = m; break; // shown in the console log, kept for tests
    default: if (typeof m.t === 'string' && m.t.startsWith('trainee') && trainee) trainee.onMessage(m); break; // pongs: nothing to draw
  }
}

function connect() {
  ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => { st.connected = true; st.beatAt = nowEpochMs(); };
  ws.onmessage = (ev) => {
    const t = nowEpochMs();
    metrics.messages++;
    st.beatAt = Math.max(st.beatAt, t);
    let batch;
    try { batch = JSON.parse(ev.data); } catch (e) { console.error('bad frame from server', e); return; }
    for (const m of batch) apply(m, t);
  };
  ws.onclose = () => { st.connected = false; setTimeout(connect, 500); };
}

// ---- drawing ------------------------------------------------------------------------------------
let lastStale;
let lastToolShown = null;
let lastScrewKey = '';
let lastOverlay = null;
function frame() {
  const stale = staleness();
  if (stale !== lastStale) {
    if (stale && !lastStale) st.staleAt = nowEpochMs(); // when the page started saying so (tests report it)
    lastStale = stale;
    st.redraw.slices = st.redraw.guard = true;
  }
  if (draw(stale)) {
    const t = nowEpochMs();
    // every tool sample received since the last frame is first shown by this one
    for (const s of metrics.pending) metrics.latencies_ms.push(t - s);
    metrics.pending.length = 0;
    if (metrics.latencies_ms.length > MAX_SAMPLES) metrics.latencies_ms.splice(0, metrics.latencies_ms.length - MAX_SAMPLES);
  }
  metrics.frames++;
  metrics.frame_times_ms.push(performance.now());
  if (metrics.frame_times_ms.length > 4000) metrics.frame_times_ms.splice(0, 2000);
  requestAnimationFrame(frame);
}

/** Draw what changed; returns whether anything was drawn. */
function draw(stale) {
  const scr = activeScrew();
  // the tool disappears when its stream stops (age > 0.25 s) even while the guard still talks
  const toolOk = !!st.tool && !stale && !isStale('tool', STALE_AFTER_S) && !(st.guard && st.guard.state_name === 'TRACKING_LOST');
  const tool = toolOk ? { tip: tipOf(st.tool.T_mm), axis: axisOf(st.tool.T_mm) } : null;
  if (toolOk !== lastToolShown) { lastToolShown = toolOk; st.redraw.slices = true; }
  const centre = tool ? tool.tip : (scr ? scr.entry_mm : null);
  const vol = st.caseInfo && st.caseInfo.slice_volume;
  const drawn = screws().map((s) => ({ ...s, colour: screwColour(s, stale), dashed: !s.navigable }));
  const screwKey = drawn.map((s) => s.colour).join();
  if (screwKey !== lastScrewKey) { lastScrewKey = screwKey; st.redraw.slices = true; }
  let any = false;
  const t0 = performance.now();
  for (const v of views) {
    if (v.resize()) st.redraw.slices = true;
    v.follow(vol, centre); // cheap unless the point left the slice's plane: then one fetch
  }
  for (const v of views) {
    if (st.redraw.slices || v.dirty) {
      v.draw(st.win, st.lev, drawn, tool, v.slice ? `${v.axis} #${v.slice.index}` : v.axis);
      any = true;
    }
  }
  st.redraw.slices = false;
  const t1 = performance.now();
  if (view3d) {
    const armScrew = st.arm && screws().find((s) => s.id === st.arm.active_screw_id);
    const tube = armScrew && ['ALIGNING', 'TRACKING', 'HOLD'].includes(st.arm.mode)
      ? { entry: armScrew.entry_mm, target: armScrew.target_mm, standoff_mm: 30 } : null;
    view3d.state(drawn.map((s) => [s.id, s.colour]), tool, tube);
  }
  const t2 = performance.now();
  if (lastOverlay !== !stale) { lastOverlay = !stale; document.getElementById('stale-overlay').hidden = !stale; }
  panel.showConnection(!st.connected ? 'disconnected' : (stale ? 'stale' : 'live'),
    !st.connected ? 'down' : (stale ? 'stale' : 'live'));
  if (st.redraw.guard) {
    panel.showGuard(st.guard, scr, stale);
    st.drawnGuard = st.guard; // what the readout shows now (st.guard may be newer until the next frame)
    st.redraw.guard = false;
    any = true;
  }
  if (st.changed.size) {
    if (st.changed.has('levels')) panel.showLevels(st.levels);
    if (st.changed.has('health')) panel.showHealth(st.health, isStale('health'));
    if (st.changed.has('arm')) panel.showArm(st.arm, st.arm && isStale('arm'));
    if (st.changed.has('training')) panel.showTraining(st.training);
    if (st.changed.has('diag')) panel.showDiag(st.diag);
    st.changed.clear();
    any = true;
  }
  const t3 = performance.now();
  if (any) { TIMING.slices += t1 - t0; TIMING.view3d += t2 - t1; TIMING.panel += t3 - t2; TIMING.n++; }
  return any;
}

// ---- input --------------------------------------------------------------------------------------
const win = document.getElementById('win'), lev = document.getElementById('lev');
function setWL(w, l) {
  st.win = Math.max(100, Math.min(4000, w)); st.lev = Math.max(-500, Math.min(1500, l));
  win.value = st.win; lev.value = st.lev;
  document.getElementById('win-v').textContent = st.win;
  document.getElementById('lev-v').textContent = st.lev;
  views.forEach((v) => v.setWindow());
}
win.oninput = () => setWL(+win.value, st.lev);
lev.oninput = () => setWL(st.win, +lev.value);
document.addEventListener('keydown', (e) => {
  const k = { n: () => selectScrew(1), ArrowDown: () => selectScrew(1), p: () => selectScrew(-1), ArrowUp: () => selectScrew(-1),
    w: () => setWL(st.win - 100, st.lev), W: () => setWL(st.win + 100, st.lev),
    l: () => setWL(st.win, st.lev - 25), L: () => setWL(st.win, st.lev + 25) }[e.key];
  if (k) { k(); e.preventDefault(); }
});

// ---- measurement hook (benchmark, tests) -----------------------------------------------------------
window.consoleMetrics = (reset = false) => {
  const timing = Object.fromEntries(Object.entries(TIMING).map(([k, v]) => [k, k === 'n' ? v : v / Math.max(1, TIMING.n)]));
  // the 3D view's own render time (worker thread, JS side; the software GL work is in the GPU process)
  timing.view3d_worker_renders = view3dStats.renders;
  timing.view3d_worker_ms = view3dStats.render_ms / Math.max(1, view3dStats.renders);
  const out = { timing_ms: timing,
    latencies_ms: metrics.latencies_ms.slice(), recv_ms: metrics.recv_ms.slice(), server_ms: metrics.server_ms.slice(), frame_times_ms: metrics.frame_times_ms.slice(),
    samples: metrics.samples, frames: metrics.frames, messages: metrics.messages };
  if (reset) { metrics.server_ms.length = 0; metrics.recv_ms.length = 0; metrics.latencies_ms.length = 0; metrics.frame_times_ms.length = 0; metrics.samples = 0; metrics.messages = 0; }
  return out;
};
window.consoleState = () => ({ drawnGuard: st.drawnGuard || null, staleAtMs: st.staleAt || null, lastReply: st.lastReply || null, guard: st.guard, tool: st.tool, plan: st.plan, stale: staleness(), selected: activeId(),
  slices: Object.fromEntries(views.map((v) => [v.axis, v.slice ? v.slice.index : null])), training: st.training });

// the Reference point (mm) under a click on a slice canvas (CSS px): the inverse of SliceView.project
window.consoleSlicePoint = (canvasId, x, y) => {
  const v = views.find((w) => w.axis === canvasId);
  if (!v || !v.slice || !v.cw || !v.rh) return null;
  const s = v.slice, c = (x - v.ox) / v.cw - 0.5, r = (y - v.oy) / v.rh - 0.5;
  return [0, 1, 2].map((i) => s.origin_mm[i] + r * s.row_mm[i] + c * s.col_mm[i]);
};
// trainee mode (spine-nav train): its key handler runs before the one above; its frame hook after frame()
const trainee = initTrainee({ send, state: () => st });
setWL(st.win, st.lev);
connect();
requestAnimationFrame(frame);
