// Worker that owns the 3D view (an OffscreenCanvas transferred from the page).
// Why a worker: without a GPU, Chromium composites in software and reads every WebGL frame back
// (glReadPixels + finish) in the thread that drew it. On the page's main thread that blocked the
// WebSocket messages and the slices for several ms per 3D frame; here it only delays the 3D view.
//
// Page -> worker: {type: 'init', canvas, width, height, dpr} | {type: 'surface', url} |
//   {type: 'screws', screws: [{id, entry_mm, target_mm, diameter_mm}]} |
//   {type: 'state', colours: [[id, css colour]], tool: {tip, axis} | null, tube: {entry, target, standoff_mm} | null}
// Worker -> page: {type: 'error', message} | {type: 'rendered', renders, render_ms (total JS time)}
import { View3D } from './view3d.js';

const PERIOD_MS = 40; // at most 25 renders/s: the slices and the readout carry the tracker rate
let view = null;
let latest = null;     // last 'state' not rendered yet
let dirty = false;
let timer = null;
let lastRender = -1e9;
let renders = 0, renderMs = 0;

function schedule() {
  if (timer !== null || !dirty || !view) return;
  timer = setTimeout(renderNow, Math.max(0, lastRender + PERIOD_MS - performance.now()));
}

function renderNow() {
  timer = null;
  if (!dirty || !view) return;
  dirty = false;
  const t0 = performance.now();
  if (latest) {
    const colours = new Map(latest.colours);
    view.colourScrews((id) => colours.get(id) || '#b0b0b0');
    view.setTool(latest.tool && latest.tool.tip, latest.tool && latest.tool.axis);
    view.setTube(latest.tube && latest.tube.entry, latest.tube && latest.tube.target, latest.tube ? latest.tube.standoff_mm : 0);
  }
  view.render();
  const t1 = performance.now();
  lastRender = t0;
  renders++; renderMs += t1 - t0;
  postMessage({ type: 'rendered', renders, render_ms: renderMs });
  schedule();
}

self.onmessage = (ev) => {
  const m = ev.data;
  try {
    switch (m.type) {
      case 'init':
        view = new View3D(m.canvas, m.width, m.height, m.dpr);
        break;
      case 'surface':
        fetch(m.url).then((r) => (r.ok ? r.arrayBuffer() : null))
          .then((b) => { if (b && view) { view.setSurface(b); dirty = true; schedule(); } })
          .catch(() => {});
        return;
      case 'screws': if (view) view.setScrews(m.screws); break;
      case 'state': latest = m; break;
      default: return;
    }
  } catch (e) {
    view = null;
    postMessage({ type: 'error', message: e.message || String(e) });
    return;
  }
  dirty = true;
  schedule();
};
