// The text side of the console: guard band, readout, registration, tracker health, arm, training.
// Every state is shown as text as well as colour (never colour alone).
const $ = (id) => document.getElementById(id);
// write only on change: every write invalidates layout, and the readout is written every frame
const put = (id, text) => { const el = $(id); if (el.textContent !== text) el.textContent = text; };
// the same for the tables rebuilt on every heartbeat (their stale marks): no change, no new DOM
const html = {};
const putHtml = (id, text) => { if (html[id] !== text) { html[id] = text; $(id).innerHTML = text; } };
const f1 = (v) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(1) : '—');
const esc = (s) => String(s ?? '').replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]));

export const STATE_COLOURS = {
  NO_PLAN: '#888888', TRACKING_LOST: '#9b59d0', APPROACH: '#3a8ee6', ALIGNED: '#2fbf4f',
  WARN: '#f2c200', VIOLATION: '#ff3b30', STALE: '#777777', NONE: '#999999',
};

/** Guard band + readout. `stale` (string or null) overrides the state: no frozen image that looks live. */
export function showGuard(g, screw, stale) {
  const band = $('guard-band');
  const state = stale ? 'STALE' : (g ? g.state_name : 'NONE');
  if (band.className !== `band state-${state}`) band.className = `band state-${state}`;
  put('guard-state', stale ? 'STALE' : (g ? g.state_name : 'NO DATA'));
  put('guard-reason', stale || (g ? g.reason : 'no guard status received'));
  put('screw-id', (g && g.active_screw_id) || (screw && screw.id) || '—');
  const v = g && !stale ? g : {};
  put('v-lateral', f1(v.lateral_error_mm));
  put('v-angular', f1(v.angular_error_deg));
  put('v-depth', f1(v.depth_mm));
  put('v-remaining', f1(v.remaining_mm));
  put('v-entry', f1(v.entry_offset_mm));
  const planned = g && Number.isFinite(g.depth_mm + g.remaining_mm) ? g.depth_mm + g.remaining_mm : null;
  const frac = planned && !stale ? Math.max(0, Math.min(1, g.depth_mm / planned)) : 0;
  const w = `${(100 * frac).toFixed(1)}%`;
  if ($('depth-fill').style.width !== w) $('depth-fill').style.width = w;
  put('depth-text', planned && !stale ? `${f1(g.depth_mm)} / ${f1(planned)} mm` : '');
}

export function showConnection(text, cls) {
  put('conn', text);
  if ($('conn').className !== `conn ${cls}`) $('conn').className = `conn ${cls}`;
}

export function showLevels(levels) {
  const rows = Object.values(levels).sort((a, b) => a.level.localeCompare(b.level)).map((l) =>
    `<tr><td>${esc(l.level)}</td><td class="${l.accepted ? 'ok' : 'bad'}">${l.accepted ? 'accepted' : 'REJECTED'}</td>` +
    `<td>fitness ${f1(l.fitness * 100)}%</td><td>rmse ${f1(l.inlier_rmse_mm)} mm</td><td>${esc(l.reason)}</td></tr>`);
  putHtml('levels', rows.join('') || '<tr><td>no registration yet</td></tr>');
}

export function showHealth(health, stale) {
  const rows = Object.values(health).map((h) =>
    `<tr><td>${esc(h.tool)}</td><td class="${h.state_name === 'OK' && !stale ? 'ok' : 'bad'}">${stale ? 'STALE' : esc(h.state_name)}</td>` +
    `<td>${f1(h.rate_hz)} Hz</td><td>age ${f1(h.sample_age_ms)} ms</td><td>${esc(h.reason)}</td></tr>`);
  putHtml('health', rows.join('') || '<tr><td>no tracker health yet</td></tr>');
}

export function showArm(a, stale) {
  putHtml('arm', a
    ? `${stale ? '<b class="bad">STALE</b> ' : ''}mode <b>${esc(a.mode)}</b>${a.holding ? ' (HOLD)' : ''} · screw ${esc(a.active_screw_id) || '—'}` +
      ` · alignment ${f1(a.alignment_error_mm)} mm / ${f1(a.alignment_error_deg)} deg` +
      `<br>last stop cause: <b>${esc(a.stop_cause) || 'none'}</b>`
    : 'no arm state');
}

export function showTraining(results) {
  const head = '<tr><th>screw</th><th>lateral mm</th><th>angle deg</th><th>entry mm</th><th>grade</th></tr>';
  putHtml('training', results.length
    ? head + results.map((r) => `<tr><td>${esc(r.screw_id)}</td><td>${f1(r.lateral_error_mm)}</td>` +
      `<td>${f1(r.angular_error_deg)}</td><td>${f1(r.entry_offset_mm)}</td><td><b>${esc(r.grade)}</b></td></tr>`).join('')
    : '<tr><td>no screw completed yet</td></tr>');
}

export function showDiag(diag) {
  const bad = Object.values(diag).filter((d) => d.level > 0);
  putHtml('diag', bad.length
    ? bad.map((d) => `<div class="bad">${esc(d.name)}: ${esc(d.message)}</div>`).join('')
    : `${Object.keys(diag).length} node(s) reporting, all OK`);
}
