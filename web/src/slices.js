// One 2D slice view (axial / sagittal / coronal) of the case volume through a point.
// The server returns the slice with its geometry: origin_mm (pixel 0,0), row_mm and col_mm
// (mm step per row / column), so any 3D point maps onto the image exactly.
import { sub, dot, norm, cross, add, scale } from './geometry.js';

const REFETCH_MS = 100;
const MAX_DPR = 2;

export class SliceView {
  constructor(canvas, axis) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false }); // opaque: cheaper to composite
    this.axis = axis;
    // drawing is in CSS pixels (the canvas' width/height attributes); the backing store follows
    // devicePixelRatio so that it maps 1:1 onto device pixels (sharp, and see resize())
    this.cssW = canvas.width;
    this.cssH = canvas.height;
    canvas.style.width = `${this.cssW}px`;
    canvas.style.height = `${this.cssH}px`;
    this.dpr = 0;
    this.slice = null;       // {rows, cols, origin_mm, row_mm, col_mm, pixels: Int16Array}
    this.image = null;       // offscreen canvas with the windowed slice
    this.inflight = false;
    this.requestedAt = null; // point of the last request
    this.fetchedAt = -1e9;
    this.clamped = false;    // the last answer was the same plane for a point beyond it (volume's end)
    this.dirty = true;       // something this view shows changed since it was last drawn
    this.resize();
  }

  /** Follow devicePixelRatio (zoom, moving the window to another screen); true when it changed. */
  resize() {
    const dpr = Math.min(MAX_DPR, window.devicePixelRatio || 1);
    if (dpr === this.dpr) return false;
    this.dpr = dpr;
    const w = Math.round(this.cssW * dpr), h = Math.round(this.cssH * dpr);
    this.canvas.width = w; this.canvas.height = h;
    // 1:1 with device pixels: the compositor may copy it without filtering (software compositing:
    // about half the cost per frame of a bilinear blit; the image is the same at 1:1)
    this.canvas.style.imageRendering = w === this.cssW * dpr && h === this.cssH * dpr ? 'pixelated' : '';
    this.dirty = true;
    return true;
  }

  /** Ask for a new slice when `point` left the current plane (one request in flight). Cheap: call every frame. */
  follow(volume, point) {
    // at most one request in flight and one per REFETCH_MS per view: the image behind the tool
    // changes slowly, while the overlays (screws, tool) are redrawn whenever they move
    if (!volume || !point || this.inflight || performance.now() - this.fetchedAt < REFETCH_MS) return;
    if (this.slice && this.requestedAt) {
      if (this.slice.step_mm > 0 && !this.clamped) {
        // the server answers with the nearest voxel plane: ask when the point is nearer another plane
        if (this.offPlane(point) <= this.slice.step_mm / 2) return;
      } else {
        // plane spacing unknown, or clamped at the volume's end: ask when it moved 0.5 mm off the last request
        const n = cross(this.slice.row_mm, this.slice.col_mm);
        if (Math.abs(dot(sub(point, this.requestedAt), n)) / norm(n) < 0.5) return;
      }
    }
    this.inflight = true;
    this.fetchedAt = performance.now();
    const at = point.slice();
    const url = `/api/slice?vol=${encodeURIComponent(volume)}&axis=${this.axis}` +
      `&x=${at[0].toFixed(2)}&y=${at[1].toFixed(2)}&z=${at[2].toFixed(2)}`;
    fetch(url).then((r) => (r.ok ? r.arrayBuffer() : Promise.reject(new Error(r.status))))
      .then((buf) => {
        const n = new DataView(buf).getUint32(0, true);
        const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
        head.pixels = new Int16Array(buf.slice(4 + n));
        // same plane again for a point beyond it: the volume's end (the server clamps)
        this.clamped = !!this.slice && this.slice.index === head.index && this.offPlaneOf(head, at) > head.step_mm / 2;
        this.slice = head;
        this.requestedAt = at;
        this.image = null;
        this.base = null;
        this.dirty = true;
        this.onchange && this.onchange();
      })
      .catch(() => {})
      .finally(() => { this.inflight = false; });
  }

  /** New window/level: the windowed image is rebuilt at the next draw. */
  setWindow() { this.image = null; this.base = null; this.dirty = true; }

  /** Apply window/level (HU) to the slice pixels into an offscreen canvas. */
  window(win, lev) {
    const s = this.slice;
    if (!s) return;
    const img = new ImageData(s.cols, s.rows);
    const lo = lev - win / 2, k = 255 / win;
    for (let i = 0; i < s.pixels.length; i++) {
      const v = Math.max(0, Math.min(255, (s.pixels[i] - lo) * k));
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    const off = document.createElement('canvas');
    off.width = s.cols; off.height = s.rows;
    off.getContext('2d').putImageData(img, 0, 0);
    this.image = off;
  }

  /** Screen position (CSS px) of a 3D point projected onto this slice's plane. */
  project(p) {
    const s = this.slice, d = sub(p, s.origin_mm);
    const r = dot(d, s.row_mm) / dot(s.row_mm, s.row_mm);
    const c = dot(d, s.col_mm) / dot(s.col_mm, s.col_mm);
    return [this.ox + (c + 0.5) * this.cw, this.oy + (r + 0.5) * this.rh];
  }

  /** Distance (mm) of a point from the slice plane. */
  offPlane(p) { return this.offPlaneOf(this.slice, p); }

  offPlaneOf(s, p) {
    const n = cross(s.row_mm, s.col_mm);
    return Math.abs(dot(sub(p, s.origin_mm), n)) / norm(n);
  }

  /**
   * Draw the slice, the screws (corridors coloured by guard state for the active one) and the
   * tool axis. screws: [{entry_mm, target_mm, diameter_mm, colour, dashed}]; tool: {tip, axis}.
   * The slice image, the corridors and the label change seldom (a new slice, window/level, a
   * guard state change): they are drawn into a cached base image; a frame copies it 1:1 and
   * draws the tool on it (an upscaled, smoothed image every frame cost ~0.5 ms per view).
   */
  draw(win, lev, screws, tool, label) {
    const { ctx, canvas } = this;
    this.dirty = false;
    const baseKey = `${label}|${screws.map((sc) => `${sc.id}:${sc.colour}:${sc.dashed}`).join()}`;
    if (!this.base || this.baseKey !== baseKey || this.base.width !== canvas.width || this.base.height !== canvas.height ||
        (this.slice && !this.image)) {
      this.drawBase(win, lev, screws, label);
      this.baseKey = baseKey;
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.base, 0, 0);
    if (tool && this.slice) {
      ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
      const tip = this.project(tool.tip), back = this.project(add(tool.tip, scale(tool.axis, -120)));
      ctx.strokeStyle = '#00e5ff'; ctx.lineWidth = 2; ctx.lineCap = 'round';
      ctx.beginPath(); ctx.moveTo(back[0], back[1]); ctx.lineTo(tip[0], tip[1]); ctx.stroke();
      ctx.fillStyle = '#00e5ff';
      ctx.beginPath(); ctx.arc(tip[0], tip[1], 4, 0, 2 * Math.PI); ctx.fill();
    }
  }

  /** The cached base: black, the windowed slice scaled to fit, the screws' corridors, the label. */
  drawBase(win, lev, screws, label) {
    const W = this.cssW, H = this.cssH;
    if (!this.base) this.base = document.createElement('canvas');
    const base = this.base;
    if (base.width !== this.canvas.width || base.height !== this.canvas.height) {
      base.width = this.canvas.width; base.height = this.canvas.height;
    }
    const ctx = base.getContext('2d', { alpha: false });
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, W, H);
    const s = this.slice;
    if (!s) { ctx.fillStyle = '#888'; ctx.font = '10px sans-serif'; ctx.fillText('no slice', 10, 20); return; }
    if (!this.image) this.window(win, lev);
    const colMm = norm(s.col_mm), rowMm = norm(s.row_mm);
    const pxPerMm = Math.min(W / (s.cols * colMm), H / (s.rows * rowMm));
    this.cw = colMm * pxPerMm; this.rh = rowMm * pxPerMm;
    this.ox = (W - s.cols * this.cw) / 2; this.oy = (H - s.rows * this.rh) / 2;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.image, this.ox, this.oy, s.cols * this.cw, s.rows * this.rh);
    ctx.lineCap = 'round';
    for (const sc of screws) {
      const a = this.project(sc.entry_mm), b = this.project(sc.target_mm);
      ctx.strokeStyle = sc.colour;
      ctx.globalAlpha = 0.55;
      ctx.lineWidth = Math.max(2, sc.diameter_mm * pxPerMm);
      ctx.setLineDash(sc.dashed ? [6, 6] : []);
      ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
      ctx.globalAlpha = 1;
    }
    ctx.setLineDash([]);
    ctx.fillStyle = '#ccc'; ctx.font = '11px sans-serif';
    ctx.fillText(label, 6, H - 6);
  }
}
