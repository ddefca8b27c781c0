// 3D view: bone surface (from the case's CBCT), planned screws, the tool and the guide tube.
// three.js, bundled at build time (no network at run time). Coordinates: Reference LPS mm.
import * as THREE from 'three';
import { sub, norm } from './geometry.js';

const Y = new THREE.Vector3(0, 1, 0);

/** A cylinder mesh from point a to point b (mm) with the given radius. */
function placeCylinder(mesh, a, b, radius) {
  const va = new THREE.Vector3(...a), vb = new THREE.Vector3(...b);
  const dir = vb.clone().sub(va);
  const len = Math.max(dir.length(), 1e-6);
  mesh.scale.set(radius, len, radius);
  mesh.position.copy(va).add(vb).multiplyScalar(0.5);
  mesh.quaternion.setFromUnitVectors(Y, dir.normalize());
}

export class View3D {
  constructor(container) {
    const w = container.clientWidth || 330, h = container.clientHeight || 290;
    this.renderer = new THREE.WebGLRenderer({ antialias: false, alpha: false, powerPreference: 'low-power' });
    this.renderer.setSize(w, h);
    container.appendChild(this.renderer.domElement);
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(0x101014);
    this.camera = new THREE.PerspectiveCamera(35, w / h, 1, 5000);
    this.camera.up.set(0, 0, 1); // superior up
    this.scene.add(new THREE.AmbientLight(0xffffff, 0.5));
    const light = new THREE.DirectionalLight(0xffffff, 1.6);
    light.position.set(100, 400, 300);
    this.scene.add(light);
    this.unitCyl = new THREE.CylinderGeometry(1, 1, 1, 12);
    this.screws = new THREE.Group();
    this.scene.add(this.screws);
    this.tool = new THREE.Mesh(this.unitCyl, new THREE.MeshLambertMaterial({ color: 0x00e5ff }));
    this.tool.visible = false;
    this.scene.add(this.tool);
    this.tube = new THREE.Mesh(this.unitCyl, new THREE.MeshLambertMaterial({ color: 0xd0d0d0, transparent: true, opacity: 0.6 }));
    this.tube.visible = false;
    this.scene.add(this.tube);
    this.surface = null;
  }

  /** Bone surface from the server's binary mesh (uint32 nv, nf; float32 xyz; uint32 faces). */
  setSurface(buf) {
    const dv = new DataView(buf);
    const nv = dv.getUint32(0, true), nf = dv.getUint32(4, true);
    const geom = new THREE.BufferGeometry();
    geom.setAttribute('position', new THREE.BufferAttribute(new Float32Array(buf, 8, nv * 3), 3));
    geom.setIndex(new THREE.BufferAttribute(new Uint32Array(buf, 8 + nv * 12, nf * 3), 1));
    geom.computeVertexNormals();
    if (this.surface) this.scene.remove(this.surface);
    this.surface = new THREE.Mesh(geom, new THREE.MeshLambertMaterial({ color: 0xe8dcc0, side: THREE.DoubleSide }));
    this.scene.add(this.surface);
  }

  /** Screws: [{entry_mm, target_mm, diameter_mm, colour}]; aims the camera at their centre (posterior view). */
  setScrews(screws) {
    this.screws.clear();
    for (const s of screws) {
      const m = new THREE.Mesh(this.unitCyl, new THREE.MeshLambertMaterial({ color: s.colour }));
      placeCylinder(m, s.entry_mm, s.target_mm, s.diameter_mm / 2);
      m.userData.id = s.id;
      this.screws.add(m);
    }
    if (screws.length) {
      const c = new THREE.Vector3();
      for (const s of screws) c.add(new THREE.Vector3(...s.entry_mm));
      c.multiplyScalar(1 / screws.length);
      this.camera.position.set(c.x - 90, c.y + 230, c.z + 110); // patient prone: look from posterior
      this.camera.lookAt(c);
    }
  }

  colourScrews(colourOf) {
    for (const m of this.screws.children) m.material.color.set(colourOf(m.userData.id));
  }

  /** Tool: tip and axis (unit, toward the tip), drawn as a 120 mm shaft ending at the tip. */
  setTool(tip, axis) {
    if (!tip) { this.tool.visible = false; return; }
    placeCylinder(this.tool, [tip[0] - 120 * axis[0], tip[1] - 120 * axis[1], tip[2] - 120 * axis[2]], tip, 1.2);
    this.tool.visible = true;
  }

  /** Guide tube on a line (entry, direction), `standoff_mm` above the entry; null hides it. */
  setTube(entry, target, standoff_mm) {
    if (!entry) { this.tube.visible = false; return; }
    const d = sub(target, entry), n = norm(d);
    const u = [d[0] / n, d[1] / n, d[2] / n];
    const a = [entry[0] - u[0] * (standoff_mm + 60), entry[1] - u[1] * (standoff_mm + 60), entry[2] - u[2] * (standoff_mm + 60)];
    const b = [entry[0] - u[0] * standoff_mm, entry[1] - u[1] * standoff_mm, entry[2] - u[2] * standoff_mm];
    placeCylinder(this.tube, a, b, 4);
    this.tube.visible = true;
  }

  render() { this.renderer.render(this.scene, this.camera); }
}
