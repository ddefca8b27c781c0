// Trainee mode (issue #21): the page drives the simulated tool. Active only when the server says so (a
// 'trainee' update: `spine-nav train` without --headless); the plain console is unchanged otherwise.
// Every input is one WebSocket request ('train_input'); the server turns it into a tool pose that the
// simulated tracker sends over OpenIGTLink, so what is drawn is the tracked tool coming back through the
// stack. Latency input -> tool drawn: from the key (or gamepad) event to the end of the first animation
// frame that draws a tracked tool nearer the new commanded tip than the previous one
// (window.traineeMetrics()).

import { tipOf } from './geometry.js';

const KEYS = {
  ArrowRight: { lat_mm: 1 }, ArrowLeft: { lat_mm: -1 }, ArrowUp: { cra_mm: 1 }, ArrowDown: { cra_mm: -1 },
  u: { tilt_lat_deg: 1 }, o: { tilt_lat_deg: -1 }, i: { tilt_cra_deg: 1 }, k: { tilt_cra_deg: -1 },
  f: { depth_mm: 1 }, F: { depth_mm: 0.25 }, b: { depth_mm: -1 }, B: { depth_mm: -0.25 },
  PageDown: { depth_mm: 1 }, PageUp: { depth_mm: -1 },
};
const DEPTH_KEYS = new Set(['f', 'F', 'b', 'B', 'PageDown', 'PageUp']);
// robot mode (spine-nav train --mode robot): the guide holds entry and tilt; only the depth moves
const ROBOT_IGNORED = 'entry and tilt are held by the guide in robot mode: only the depth moves (f/b, PageDown/PageUp)';
const ROBOT_HELP = 'trainee keys (robot mode): a align the arm on the screw · f/b advance/withdraw along the guide 1 mm (F/B 0.25, ' +
  'PageDown/PageUp) · r resume after an arm hold · Enter end screw · n/p next/previous screw · g leaderboard; entry and tilt keys are ignored';
const HELP = 'trainee keys: ←/→ entry medial/lateral · ↑/↓ entry cranial/caudal (Shift: 0.25 mm) · u/o tilt lateral/medial · ' +
  'i/k tilt cranial/caudal · f/b advance/withdraw 1 mm (F/B 0.25) · Enter end screw · n/p next/previous screw · g leaderboard; ' +
  'gamepad: sticks entry/tilt, triggers advance/withdraw, A end screw; click a slice: entry there';

function nowEpochMs() { return performance.timeOrigin + performance.now(); }

export function initTrainee({ send, state }) {
  const tr = { active: false, status: null, seq: 0, pending: [], lastTip: null, lat_ms: [], results: [], board: null };
  let panelEl = null;

  function el(tag, attrs = {}, text = '') { const e = document.createElement(tag); Object.assign(e, attrs); if (text) e.textContent = text; return e; }
  const robotMode = () => !!(tr.status && tr.status.mode === 'robot');
  function ensurePanel() {
    if (panelEl) return;
    panelEl = el('div', { id: 'trainee-panel' });
    panelEl.innerHTML = '<h3>Trainee</h3><div id="trainee-status" class="small"></div><div id="trainee-tool" class="small"></div>' +
      '<div id="trainee-robot" hidden><h3>Robot</h3><div id="trainee-arm" class="small"></div>' +
      '<button id="trainee-align" type="button">Align arm (a)</button> <button id="trainee-resume" type="button" disabled>Resume (r)</button>' +
      '<div id="trainee-notice" class="small"></div></div>' +
      '<h3>Last screw</h3><div id="trainee-result" class="small">—</div><img id="trainee-picture" alt="placed vs planned" hidden>' +
      '<h3>Leaderboard</h3><table id="trainee-leaderboard" class="small"></table>';
    const aside = document.getElementById('panel');
    aside.insertBefore(panelEl, aside.firstChild.nextSibling);
    const keys = document.querySelector('header .keys');
    if (keys) keys.textContent = robotMode() ? ROBOT_HELP : HELP;
    panelEl.querySelector('#trainee-align').addEventListener('click', () => send({ req: 'train_align' }));
    panelEl.querySelector('#trainee-resume').addEventListener('click', () => send({ req: 'train_resume' }));
    document.body.classList.add('trainee-mode');
    send({ req: 'train_leaderboard' });
  }
  function fmt(v, d = 2) { return v === null || v === undefined ? '—' : Number(v).toFixed(d); }
  function showStatus() {
    const s = tr.status; if (!s) return;
    document.getElementById('trainee-status').textContent =
      `${s.trainee} · attempt ${s.attempt_id} · ${s.mode} · screw ${s.screw_id} · placed ${s.placed.length}/${s.screws.length}` +
      (s.grade_basis === 'proxy' ? ' · PROXY grading (no ground truth)' : '');
    const t = s.tool;
    if (t) document.getElementById('trainee-tool').textContent =
      (robotMode() ? 'along the guide · ' : `entry ${fmt(t.lat_mm, 2)} lat / ${fmt(t.cra_mm, 2)} cra mm · tilt ${fmt(t.tilt_lat_deg, 1)} / ${fmt(t.tilt_cra_deg, 1)} deg · `) +
      `depth ${fmt(t.depth_mm, 2)} of ${fmt(t.planned_depth_mm, 1)} mm`;
    showRobot();
  }
  function notice(text) { const n = document.getElementById('trainee-notice'); if (n && text) n.textContent = text; }
  function showRobot() {
    const s = tr.status; const box = document.getElementById('trainee-robot');
    if (!box || !s) return;
    box.hidden = !s.robot;
    if (!s.robot) return;
    const r = s.robot; const a = r.arm;
    const what = r.holding ? `HOLD: ${r.stop_cause || 'no cause given'}` : r.aligned ? `ALIGNED on ${s.screw_id}`
      : a ? `${a.mode}${a.active_screw_id ? ` on ${a.active_screw_id}` : ''}` : 'no arm state yet';
    const arm = document.getElementById('trainee-arm');
    arm.textContent = `arm ${what}` + (a ? ` · guide ${fmt(a.alignment_error_mm)} mm / ${fmt(a.alignment_error_deg)} deg off the line` : '') +
      (r.arm_stops.length ? ` · holds on this screw: ${r.arm_stops.length}` : '');
    arm.className = `small ${r.holding ? 'bad' : r.aligned ? 'ok' : ''}`;
    document.getElementById('trainee-resume').disabled = !r.holding;
    notice(r.notice);
  }
  function showResult(r) {
    const txt = `${r.screw_id}: grade ${r.gr_grade}${r.grade_basis === 'proxy' ? ' (PROXY)' : ''} · breach ${fmt(r.breach_mm)} mm · ` +
      `entry ${fmt(r.entry_error_mm)} mm · tip ${fmt(r.tip_error_mm)} mm · angle ${fmt(r.angular_error_deg)} deg · ` +
      `${fmt(r.time_to_place_s, 1)} s · guard violations ${r.guard_violations} (depth stop ${r.depth_overruns})` +
      (r.arm_stops ? ` · arm holds ${r.arm_stops.length}` : '');
    const e = document.getElementById('trainee-result');
    e.textContent = txt;
    e.className = `small grade grade-${r.gr_grade}${r.breach_mm > 0.5 ? ' breach' : ''}`;
    const img = document.getElementById('trainee-picture');
    if (r.png_b64) { img.src = `data:image/png;base64,${r.png_b64}`; img.hidden = false; }
  }
  function showBoard(rows) {
    const t = document.getElementById('trainee-leaderboard');
    t.innerHTML = '<tr><th>#</th><th>trainee</th><th>screws</th><th>A</th><th>tip mm</th></tr>';
    rows.forEach((b, i) => {
      const tr_ = document.createElement('tr');
      [i + 1, b.trainee, b.screws, b.grade_a_share === null ? '—' : `${Math.round(100 * b.grade_a_share)}%`, fmt(b.mean_tip_error_mm)]
        .forEach((v) => tr_.appendChild(el('td', {}, String(v))));
      t.appendChild(tr_);
    });
  }

  function input(move, extra = {}) {
    if (!tr.active) return;
    if (robotMode()) { // the guide holds entry and tilt: only the depth is sent
      const depth = move.depth_mm || 0;
      if ('entry_mm' in extra || Object.entries(move).some(([k, v]) => k !== 'depth_mm' && v !== 0)) notice(ROBOT_IGNORED);
      if (!depth) return;
      move = { depth_mm: depth }; extra = {};
    }
    const seq = ++tr.seq;
    tr.pending.push({ seq, t: nowEpochMs(), tip: null, prev: tr.lastTip });
    if (tr.pending.length > 200) tr.pending.splice(0, tr.pending.length - 200);
    send({ req: 'train_input', seq, move, ...extra });
  }

  function onMessage(m) {
    switch (m.t) {
      case 'trainee': tr.active = true; tr.status = m; ensurePanel(); showStatus(); break;
      case 'trainee_pose': {
        const p = tr.pending.find((x) => x.seq === m.seq);
        if (m.ignored || !m.tip_mm) { // robot mode: not applied (not aligned, holding): nothing to draw, no latency
          if (p) tr.pending.splice(tr.pending.indexOf(p), 1);
        } else {
          if (p) p.tip = m.tip_mm;
          tr.lastTip = m.tip_mm;
        }
        notice(m.notice);
        if (tr.status) { tr.status.tool = m.state; showStatus(); }
        break;
      }
      case 'trainee_result': ensurePanel(); tr.results.push({ ...m, png_b64: undefined }); showResult(m); send({ req: 'train_leaderboard' }); break;
      case 'trainee_leaderboard': tr.board = m.rows; if (panelEl) showBoard(m.rows); break;
      default: break;
    }
  }

  // keys: capture phase, before the console's own handler (which must not see the keys trainee mode uses)
  window.addEventListener('keydown', (e) => {
    if (!tr.active) return;
    let move = KEYS[e.key];
    if (robotMode() && (e.key === 'a' || e.key === 'r')) {
      send({ req: e.key === 'a' ? 'train_align' : 'train_resume' });
      e.preventDefault(); e.stopImmediatePropagation(); return;
    }
    if (move && robotMode() && !DEPTH_KEYS.has(e.key)) { notice(ROBOT_IGNORED); move = null; e.preventDefault(); e.stopImmediatePropagation(); return; }
    if (move) {
      if (e.shiftKey && e.key.startsWith('Arrow')) move = Object.fromEntries(Object.entries(move).map(([k, v]) => [k, v / 4]));
      input(move);
    } else if (e.key === 'Enter') {
      send({ req: 'train_end_screw' });
    } else if (e.key === 'n' || e.key === 'p') {
      send({ req: 'train_select', step: e.key === 'n' ? 1 : -1 });
    } else if (e.key === 'g') {
      send({ req: 'train_leaderboard' });
    } else return;
    e.preventDefault(); e.stopImmediatePropagation();
  }, true);

  // click on a slice: the entry there (the slice view's inverse projection, when it has one)
  document.addEventListener('click', (e) => {
    if (!tr.active || !(e.target instanceof HTMLCanvasElement)) return;
    const pick = window.consoleSlicePoint && window.consoleSlicePoint(e.target.id, e.offsetX, e.offsetY);
    if (pick) input({}, { entry_mm: pick });
  });

  // gamepad (Gamepad API, where one is connected): polled every frame
  let padEndWas = false;
  function pollPad() {
    const pads = (navigator.getGamepads && navigator.getGamepads()) || [];
    const pad = Array.from(pads).find((p) => p && p.connected);
    if (!pad) return;
    const dz = (v) => (Math.abs(v) < 0.15 ? 0 : v);
    const a = pad.axes.map(dz);
    const trig = (i) => (pad.buttons[i] ? pad.buttons[i].value : 0);
    const move = { lat_mm: 0.2 * (a[0] || 0), cra_mm: -0.2 * (a[1] || 0), tilt_lat_deg: 0.3 * (a[2] || 0), tilt_cra_deg: -0.3 * (a[3] || 0),
      depth_mm: 0.3 * (trig(7) - trig(6)) };
    if (Object.values(move).some((v) => v !== 0)) input(move);
    const end = !!(pad.buttons[0] && pad.buttons[0].pressed);
    if (end && !padEndWas) send({ req: 'train_end_screw' });
    padEndWas = end;
  }

  // after the console's frame (registered later, so it runs after it in the same animation frame)
  const dist = (p, q) => Math.hypot(p[0] - q[0], p[1] - q[1], p[2] - q[2]);
  let lastToolStamp = null;
  function frame() {
    if (tr.active) {
      pollPad();
      const s = state();
      const tool = s.tool;
      if (tool && tool.stamp_s !== lastToolStamp && tool.T_mm) {
        lastToolStamp = tool.stamp_s;
        const T = tool.T_mm;
        const tip = tipOf(T);
        const t = nowEpochMs();
        // the newest input whose commanded tip this drawn tool shows resolves it and every older one
        let k = -1;
        tr.pending.forEach((p, i) => { if (p.tip && (!p.prev || dist(tip, p.tip) < dist(tip, p.prev))) k = i; });
        if (k >= 0) {
          for (const p of tr.pending.slice(0, k + 1)) tr.lat_ms.push(t - p.t);
          tr.pending.splice(0, k + 1);
          if (tr.lat_ms.length > 5000) tr.lat_ms.splice(0, 1000);
        }
      }
    }
    requestAnimationFrame(frame);
  }
  // registered after the console's own first requestAnimationFrame(frame) (end of main.js): runs after it
  queueMicrotask(() => requestAnimationFrame(frame));

  window.traineeMetrics = (reset = false) => {
    const out = { input_to_drawn_ms: tr.lat_ms.slice(), pending: tr.pending.length, inputs: tr.seq };
    if (reset) tr.lat_ms.length = 0;
    return out;
  };
  window.traineeState = () => ({ active: tr.active, status: tr.status, results: tr.results, board: tr.board });
  return { onMessage };
}
