// 3D view: bone surface (from the case's CBCT), planned screws, the tool and the guide tube.
// three.js, bundled at build time (no network at run time). Coordinates: Reference LPS mm.
// Runs in a worker on an OffscreenCanvas (view3d_worker.js); no DOM access here.
//
// Cost: without a GPU (SwiftShader) a frame is bound by the bone mesh's triangles (~15 ms of
// CPU for ~6500 triangles), while everything that moves (tool, 4 screws, tube) is a few hundred.
// The bone only changes with the surface or the camera, so it is drawn once into a colour copy
// and a depth texture; a frame copies the colour back (blitFramebuffer) and draws the moving
// meshes, each fragment hidden where the bone's depth is nearer (the depth test the bone would
// have done; same image, measured pixel-identical), ~5 ms instead of ~15 ms per frame.
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

function addLights(scene) {
  scene.add(new THREE.AmbientLight(0xffffff, 0.5));
  const light = new THREE.DirectionalLight(0xffffff, 1.6);
  light.position.set(100, 400, 300);
  scene.add(light);
}

export class View3D {
  /** canvas: an OffscreenCanvas (or a canvas element); width/height in CSS px; dpr: device pixels per CSS px. */
  constructor(canvas, width, height, dpr = 1) {
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, alpha: false, powerPreference: 'low-power' });
    this.renderer.setPixelRatio(dpr);
    this.renderer.setSize(width, height, false);
    this.renderer.autoClear = false;
    this.gl = this.renderer.getContext();
    this.background = new THREE.Color(0x101014);
    this.scene = new THREE.Scene();            // what moves: screws, tool, tube
    addLights(this.scene);
    this.boneScene = new THREE.Scene();        // the bone surface: drawn once per camera/surface
    this.boneScene.background = this.background;
    addLights(this.boneScene);
    this.camera = new THREE.PerspectiveCamera(35, width / height, 1, 5000);
    this.camera.up.set(0, 0, 1); // superior up
    this.unitCyl = new THREE.CylinderGeometry(1, 1, 1, 12);
    this.screws = new THREE.Group();
    this.scene.add(this.screws);
    this.tool = new THREE.Mesh(this.unitCyl, this.occluded(new THREE.MeshLambertMaterial({ color: 0x00e5ff })));
    this.tool.visible = false;
    this.scene.add(this.tool);
    this.tube = new THREE.Mesh(this.unitCyl, this.occluded(new THREE.MeshLambertMaterial({ color: 0xd0d0d0, transparent: true, opacity: 0.6 })));
    this.tube.visible = false;
    this.scene.add(this.tube);
    this.surface = null;
    this.boneDepth = { value: null };
    this.boneDirty = true;
    this.setupBoneBuffers();
  }

  /** Colour copy (renderbuffer) and depth texture of the bone, at the drawing buffer's size. */
  setupBoneBuffers() {
    const gl = this.gl;
    const size = this.renderer.getDrawingBufferSize(new THREE.Vector2());
    this.size = size;
    this.boneColour = gl.createFramebuffer();
    const rb = gl.createRenderbuffer();
    gl.bindRenderbuffer(gl.RENDERBUFFER, rb);
    gl.renderbufferStorage(gl.RENDERBUFFER, gl.RGBA8, size.x, size.y);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.boneColour);
    gl.framebufferRenderbuffer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.RENDERBUFFER, rb);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.bindRenderbuffer(gl.RENDERBUFFER, null);
    this.renderer.resetState();
    this.boneTarget = new THREE.WebGLRenderTarget(size.x, size.y, { depthTexture: new THREE.DepthTexture(size.x, size.y) });
    this.boneDepth.value = this.boneTarget.depthTexture;
  }

  /** `material`, with its fragments dropped where the bone is nearer (depth test against the bone's depth texture). */
  occluded(material) {
    const boneDepth = () => this.boneDepth;
    material.onBeforeCompile = (shader) => {
      shader.uniforms.boneDepth = boneDepth();
      shader.fragmentShader = 'uniform highp sampler2D boneDepth;\n' + shader.fragmentShader.replace('void main() {',
        'void main() {\n\tif (gl_FragCoord.z > texelFetch(boneDepth, ivec2(gl_FragCoord.xy), 0).r) discard;');
    };
    return material;
  }

  /** Bone surface from the server's binary mesh (uint32 nv, nf; float32 xyz; uint32 faces). */
  setSurface(buf) {
    const dv = new DataView(buf);
    const nv = dv.getUint32(0, true), nf = dv.getUint32(4, true);
    const geom = new THREE.BufferGeometry();
    geom.setAttribute('position', new THREE.BufferAttribute(new Float32Array(buf, 8, nv * 3), 3));
    geom.setIndex(new THREE.BufferAttribute(new Uint32Array(buf, 8 + nv * 12, nf * 3), 1));
    geom.computeVertexNormals();
    if (this.surface) this.boneScene.remove(this.surface);
    this.surface = new THREE.Mesh(geom, new THREE.MeshLambertMaterial({ color: 0xe8dcc0, side: THREE.DoubleSide }));
    this.boneScene.add(this.surface);
    this.boneDirty = true;
  }

  /** Screws: [{id, entry_mm, target_mm, diameter_mm}]; aims the camera at their centre (posterior view). */
  setScrews(screws) {
    this.screws.clear();
    for (const s of screws) {
      const m = new THREE.Mesh(this.unitCyl, this.occluded(new THREE.MeshLambertMaterial({ color: '#b0b0b0' })));
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
      this.boneDirty = true;
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

  /** Copy the colour between the default framebuffer and the bone's copy (toBone: canvas -> copy). */
  blitBone(toBone) {
    const gl = this.gl, { x: w, y: h } = this.size;
    gl.bindFramebuffer(gl.READ_FRAMEBUFFER, toBone ? null : this.boneColour);
    gl.bindFramebuffer(gl.DRAW_FRAMEBUFFER, toBone ? this.boneColour : null);
    gl.blitFramebuffer(0, 0, w, h, 0, 0, w, h, gl.COLOR_BUFFER_BIT, gl.NEAREST);
    this.renderer.resetState(); // three.js caches GL state; these bindings went around it
  }

  render() {
    const r = this.renderer;
    if (this.boneDirty) {
      // bone depth (for the moving meshes) and bone colour (the frame's background), once
      r.setRenderTarget(this.boneTarget);
      r.setClearColor(this.background, 1);
      r.clear();
      r.render(this.boneScene, this.camera);
      r.setRenderTarget(null);
      r.clear();
      r.render(this.boneScene, this.camera);
      this.blitBone(true);
      this.boneDirty = false;
      r.clearDepth();
    } else {
      // a clear first: after a frame was shown, WebGL clears the canvas lazily at the next
      // draw or clear call, which a blit is not; without it the copied bone would be wiped
      r.clearDepth();
      this.blitBone(false);
    }
    r.render(this.scene, this.camera);
  }
}
