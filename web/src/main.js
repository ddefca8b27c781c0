// spine_nav console page: receives the stack's state over a WebSocket and draws it.
// One requestAnimationFrame loop draws whatever changed; every tool sample's tracker time
// (stamp_s) is carried to the frame that first shows it, for the latency measurement
// (window.consoleMetrics(), read by the benchmark and the tests).
import { SliceView } from './slices.js';
import { View3D } from './view3d.js';
import { tipOf, axisOf } from './geometry.js';
import * as panel from './panel.js';

const STALE_AFTER_S = 0.25;      // a live stream older than this is stale (page says so; issue: within 0.5 s)
const BEAT_LOST_AFTER_S = 0.3;   // no heartbeat from the server for this long: server gone
const MAX_SAMPLES = 20000;
const VIEW3D_PERIOD_MS = 40;     // 3D view refresh limit (25 Hz)
let last3d = -1e9;

const st = {
  caseInfo: null, plan: null, tool: null, guard: null, arm: null,
  health: {}, levels: {}, diag: {}, training: [],
  beat: null, beatAt: 0, selected: null, lastGuardActive: null,
  win: 1800, lev: 400, dirty: true, connected: false,
  changed: new Set(['levels', 'health', 'arm', 'training', 'diag']), // panel sections to rebuild
};
const TIMING = { slices: 0, view3d: 0, panel: 0, n: 0 };
const metrics = { server_ms: [], recv_ms: [], latencies_ms: [], frame_times_ms: [], pending: [], samples: 0, frames: 0 };
const nowEpochMs = () => performance.timeOrigin + performance.now();

const views = ['axial', 'sagittal', 'coronal'].map((a) => new SliceView(document.getElementById(a), a));
views.forEach((v) => { v.onchange = () => { st.dirty = true; }; });
let view3d = null;
const params = new URLSearchParams(location.search);
if (params.get('view3d') !== '0') try { view3d = new View3D(document.getElementById('view3d')); } catch (e) {
  document.getElementById('view3d').textContent = `3D view unavailable: ${e.message}`;
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
  st.dirty = true;
  send({ req: 'select_screw', screw_id: next.id });
}

// ---- WebSocket ------------------------------------------------------------------------------
let ws = null;
function send(obj) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj)); }

function apply(m, arrivedMs) {
  switch (m.t) {
    case 'case':
      st.caseInfo = m;
      document.getElementById('case').textContent = m.case_dir ? `case ${m.case_dir}` : 'no case';
      if (view3d && m.slice_volume) {
        fetch(`/api/surface?vol=${encodeURIComponent(m.slice_volume)}`).then((r) => (r.ok ? r.arrayBuffer() : null))
          .then((b) => { if (b) { view3d.setSurface(b); st.dirty = true; } }).catch(() => {});
      }
      break;
    case 'plan': st.plan = m; if (view3d) view3d.setScrews(m.screws.map((s) => ({ ...s, colour: '#b0b0b0' }))); break;
    case 'tool':
      st.tool = m;
      metrics.samples++;
      if (metrics.pending.length < 1000) metrics.pending.push(m.stamp_s * 1000);
      if (metrics.recv_ms.length < MAX_SAMPLES) metrics.recv_ms.push(arrivedMs - m.stamp_s * 1000);
      if (metrics.server_ms.length < MAX_SAMPLES && m.sent_s) metrics.server_ms.push((m.sent_s - m.stamp_s) * 1000);
      break;
    case 'guard':
      st.guard = m;
      if (m.active_screw_id && m.active_screw_id !== st.lastGuardActive) {
        st.lastGuardActive = m.active_screw_id; st.selected = null; // the guard decides
      }
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
    default: break; // pongs: nothing to draw
  }
  st.dirty = true;
}

function connect() {
  ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => { st.connected = true; st.beatAt = nowEpochMs(); };
  ws.onmessage = (ev) => {
    const t = nowEpochMs();
    st.beatAt = Math.max(st.beatAt, t);
    let batch;
    try { batch = JSON.parse(ev.data); } catch (e) { console.error('bad frame from server', e); return; }
    for (const m of batch) apply(m, t);
  };
  ws.onclose = () => { st.connected = false; st.dirty = true; setTimeout(connect, 500); };
}

// ---- drawing ------------------------------------------------------------------------------------
let lastStale = undefined;
function frame() {
  const stale = staleness();
  if (stale !== lastStale) {
    if (stale && !lastStale) st.staleAt = nowEpochMs(); // when the page started saying so (tests report it)
    lastStale = stale; st.dirty = true;
  }
  if (st.dirty) {
    st.dirty = false;
    draw(stale);
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

function draw(stale) {
  const scr = activeScrew();
  const toolOk = st.tool && !stale && !isStale('tool', STALE_AFTER_S) && !(st.guard && st.guard.state_name === 'TRACKING_LOST');
  const tool = toolOk ? { tip: tipOf(st.tool.T_mm), axis: axisOf(st.tool.T_mm) } : null;
  const centre = tool ? tool.tip : (scr ? scr.entry_mm : null);
  const vol = st.caseInfo && st.caseInfo.slice_volume;
  const drawn = screws().map((s) => ({ ...s, colour: screwColour(s, stale), dashed: !s.navigable }));
  const t0 = performance.now();
  for (const v of views) {
    v.follow(vol, centre);
    v.draw(st.win, st.lev, drawn, tool, v.slice ? `${v.axis} #${v.slice.index}` : v.axis);
  }
  const t1 = performance.now();
  if (view3d) {
    view3d.colourScrews((id) => drawn.find((s) => s.id === id)?.colour || '#b0b0b0');
    view3d.setTool(tool && tool.tip, tool && tool.axis);
    const armScrew = st.arm && screws().find((s) => s.id === st.arm.active_screw_id);
    view3d.setTube(armScrew && ['ALIGNING', 'TRACKING', 'HOLD'].includes(st.arm.mode) ? armScrew.entry_mm : null,
      armScrew && armScrew.target_mm, 30);
    // the 3D view renders in software (no GPU) and costs the most per frame: at most every
    // VIEW3D_PERIOD_MS; the slices and the readout follow every frame
    const now = performance.now();
    if (now - last3d >= VIEW3D_PERIOD_MS) { view3d.render(); last3d = now; } else st.dirty = true;
  }
  const t2 = performance.now();
  document.getElementById('stale-overlay').hidden = !stale;
  panel.showConnection(!st.connected ? 'disconnected' : (stale ? 'stale' : 'live'),
    !st.connected ? 'down' : (stale ? 'stale' : 'live'));
  panel.showGuard(st.guard, scr, stale);
  st.drawnGuard = st.guard; // what the readout shows now (st.guard may be newer until the next frame)
  if (st.changed.has('levels')) panel.showLevels(st.levels);
  if (st.changed.has('health')) panel.showHealth(st.health, isStale('health'));
  if (st.changed.has('arm')) panel.showArm(st.arm, st.arm && isStale('arm'));
  if (st.changed.has('training')) panel.showTraining(st.training);
  if (st.changed.has('diag')) panel.showDiag(st.diag);
  st.changed.clear();
  const t3 = performance.now();
  TIMING.slices += t1 - t0; TIMING.view3d += t2 - t1; TIMING.panel += t3 - t2; TIMING.n++;
}

// ---- input --------------------------------------------------------------------------------------
const win = document.getElementById('win'), lev = document.getElementById('lev');
function setWL(w, l) {
  st.win = Math.max(100, Math.min(4000, w)); st.lev = Math.max(-500, Math.min(1500, l));
  win.value = st.win; lev.value = st.lev;
  document.getElementById('win-v').textContent = st.win;
  document.getElementById('lev-v').textContent = st.lev;
  views.forEach((v) => { v.image = null; });
  st.dirty = true;
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
  const out = { timing_ms: Object.fromEntries(Object.entries(TIMING).map(([k, v]) => [k, k === 'n' ? v : v / Math.max(1, TIMING.n)])),
    latencies_ms: metrics.latencies_ms.slice(), recv_ms: metrics.recv_ms.slice(), server_ms: metrics.server_ms.slice(), frame_times_ms: metrics.frame_times_ms.slice(),
    samples: metrics.samples, frames: metrics.frames };
  if (reset) { metrics.server_ms.length = 0; metrics.recv_ms.length = 0; metrics.latencies_ms.length = 0; metrics.frame_times_ms.length = 0; metrics.samples = 0; }
  return out;
};
window.consoleState = () => ({ drawnGuard: st.drawnGuard || null, staleAtMs: st.staleAt || null, lastReply: st.lastReply || null, guard: st.guard, tool: st.tool, plan: st.plan, stale: staleness(), selected: activeId(),
  slices: Object.fromEntries(views.map((v) => [v.axis, v.slice ? v.slice.index : null])), training: st.training });

setWL(st.win, st.lev);
connect();
requestAnimationFrame(frame);
