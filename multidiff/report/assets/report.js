// The viewers of a multidiff report (python -m multidiff.report). Inlined into the page after the data and the
// vendored libraries it needs; runs from file:// with no network. Each viewer, once drawn, records
// {kind, id, drawn} in window.reportViewers (points, triangles or atoms drawn; molecules also their bonds), which
// tests read.
"use strict";

window.reportViewers = [];
window.reportErrors = [];

// Errors are shown on the page too, for a person who opened the file without a console. Listening does not
// handle them: they still reach the console (and a test's page-error hook).
function showError(message) {
  window.reportErrors.push(message);
  let box = document.getElementById("report-errors");
  if (!box) {
    box = document.createElement("div");
    box.id = "report-errors";
    box.className = "errors";
    document.body.prepend(box);
  }
  const line = document.createElement("p");
  line.textContent = "JavaScript error: " + message;
  box.append(line);
}
window.addEventListener("error", (e) => showError(e.message));
window.addEventListener("unhandledrejection", (e) => showError(String((e.reason && e.reason.stack) || e.reason)));

function specOf(el) {
  return JSON.parse(document.getElementById(el.dataset.spec).textContent);
}

function bytesOf(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out.buffer;
}

// ---- molecules: one 3Dmol viewer grid (one WebGL context) per SDF file ------------------------------------
function moleculeGrid(el) {
  const { cells } = specOf(el);
  const rows = Number(el.dataset.rows), cols = Number(el.dataset.cols);
  const viewers = $3Dmol.createViewerGrid(
    el.querySelector(".mol3d"),
    { rows, cols, control_all: false },
    { backgroundColor: "white", antialias: true, minimumZoomToDistance: 2 }, // small molecules fill their cell too
  );
  cells.forEach((cell, k) => {
    const viewer = viewers[Math.floor(k / cols)][k % cols];
    const model = viewer.addModel(cell.sdf, "sdf", { keepH: true });
    viewer.setStyle({}, { stick: { radius: 0.13, colorscheme: "Jmol" }, sphere: { scale: 0.27, colorscheme: "Jmol" } });
    viewer.zoomTo();
    viewer.zoom(0.8);
    viewer.translate(0, 14); // centred in the part of the cell above its caption strip
    viewer.render();
    const atoms = model.selectedAtoms({});
    const bonds = atoms.reduce((n, a) => n + a.bonds.length, 0) / 2; // each bond is listed at both its atoms
    window.reportViewers.push({ kind: "molecule", id: cell.id, drawn: atoms.length, bonds });
  });
}

// ---- point clouds and meshes: three.js, one renderer (one WebGL context) per folder -----------------------
// three >= 0.160 ships ES modules only, and three.module.min.js imports "./three.core.min.js". A page opened from
// file:// cannot import files beside it, so both sources sit in non-executing <script type="text/plain"> elements
// and are imported from Blob URLs, the core's specifier rewritten to its Blob URL.
const THREE_CORE = "./three.core.min.js";

async function loadThree() {
  const text = (id) => document.getElementById(id).textContent;
  const core = URL.createObjectURL(new Blob([text("vendor-three.core.min.js")], { type: "text/javascript" }));
  const source = text("vendor-three.module.min.js");
  const linked = source.split(JSON.stringify(THREE_CORE)).join(JSON.stringify(core));
  if (linked === source) throw new Error(`three.module.min.js does not import "${THREE_CORE}": see vendor/README.md`);
  return import(URL.createObjectURL(new Blob([linked], { type: "text/javascript" })));
}

// colours along the shape's height (viridis stops), so that depth reads in a still picture
const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];

function heightColours(THREE, positions) {
  let lo = Infinity, hi = -Infinity;
  for (let i = 1; i < positions.length; i += 3) {
    lo = Math.min(lo, positions[i]);
    hi = Math.max(hi, positions[i]);
  }
  const stops = RAMP.map((c) => new THREE.Color(c));
  const out = new Float32Array(positions.length), c = new THREE.Color();
  for (let i = 0; i < positions.length; i += 3) {
    const t = hi > lo ? ((positions[i + 1] - lo) / (hi - lo)) * (stops.length - 1) : 0;
    const k = Math.min(Math.floor(t), stops.length - 2);
    c.copy(stops[k]).lerp(stops[k + 1], t - k);
    out.set([c.r, c.g, c.b], i);
  }
  return out;
}

function shapeScene(THREE, cell) {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.BufferAttribute(new Float32Array(bytesOf(cell.positions)), 3));
  geometry.computeBoundingBox();
  const centre = geometry.boundingBox.getCenter(new THREE.Vector3());
  geometry.translate(-centre.x, -centre.y, -centre.z); // turn about the shape's centre
  geometry.computeBoundingSphere();
  const scene = new THREE.Scene();
  let object;
  if (cell.kind === "mesh") {
    geometry.setIndex(new THREE.BufferAttribute(new Uint32Array(bytesOf(cell.index)), 1));
    geometry.computeVertexNormals();
    const material = new THREE.MeshStandardMaterial({ color: 0x8fa8c8, roughness: 0.6, side: THREE.DoubleSide });
    object = new THREE.Mesh(geometry, material);
    scene.add(new THREE.HemisphereLight(0xffffff, 0x445566, 1.6));
    const light = new THREE.DirectionalLight(0xffffff, 1.8);
    light.position.set(1, 2, 3);
    scene.add(light);
  } else {
    geometry.setAttribute("color", new THREE.BufferAttribute(heightColours(THREE, geometry.attributes.position.array), 3));
    object = new THREE.Points(geometry, new THREE.PointsMaterial({ size: 3, sizeAttenuation: false, vertexColors: true }));
  }
  scene.add(object);
  const radius = geometry.boundingSphere.radius || 1;
  const camera = new THREE.PerspectiveCamera(30, 1, radius / 100, radius * 100);
  return { scene, object, camera, radius };
}

function pointGrid(THREE, el) {
  const { cells } = specOf(el);
  const canvas = el.querySelector("canvas");
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setClearColor(0xffffff, 1);
  const views = new Map([...el.querySelectorAll(".view")].map((v) => [v.dataset.viewerId, v]));
  const groups = {}; // a cloud and its mesh (same stem) turn together
  const items = cells.map((cell) => {
    const group = (groups[cell.group] ||= { yaw: -0.7, pitch: 0.35, zoom: 1 });
    return { cell, group, view: views.get(cell.id), reported: false, ...shapeScene(THREE, cell) };
  });

  let pending = false;
  function draw() {
    pending = false;
    const box = canvas.getBoundingClientRect();
    const size = renderer.getSize(new THREE.Vector2());
    if (size.x !== box.width || size.y !== box.height) renderer.setSize(box.width, box.height, false);
    renderer.setScissorTest(false);
    renderer.clear();
    renderer.setScissorTest(true);
    for (const it of items) {
      const r = it.view.getBoundingClientRect();
      const x = r.left - box.left, y = box.bottom - r.bottom; // WebGL counts rows from the bottom
      renderer.setViewport(x, y, r.width, r.height);
      renderer.setScissor(x, y, r.width, r.height);
      it.object.rotation.set(it.group.pitch, it.group.yaw, 0, "XYZ");
      const fov = (it.camera.fov * Math.PI) / 180;
      it.camera.position.set(0, 0, (1.04 * it.radius) / Math.sin(fov / 2) / it.group.zoom);
      it.camera.aspect = r.width / r.height;
      it.camera.updateProjectionMatrix();
      renderer.render(it.scene, it.camera);
      if (!it.reported) {
        const info = renderer.info.render; // reset by each render() call: what this cell drew
        window.reportViewers.push({ kind: it.cell.kind, id: it.cell.id, drawn: it.cell.kind === "mesh" ? info.triangles : info.points });
        it.reported = true;
      }
    }
  }
  const redraw = () => {
    if (!pending) {
      pending = true;
      requestAnimationFrame(draw);
    }
  };

  for (const it of items) {
    // drag to turn (the group), wheel to zoom, double-click to reset
    let last = null;
    it.view.addEventListener("pointerdown", (e) => {
      last = [e.clientX, e.clientY];
      it.view.setPointerCapture(e.pointerId);
    });
    it.view.addEventListener("pointermove", (e) => {
      if (!last) return;
      it.group.yaw += (e.clientX - last[0]) * 0.01;
      it.group.pitch = Math.max(-1.55, Math.min(1.55, it.group.pitch + (e.clientY - last[1]) * 0.01));
      last = [e.clientX, e.clientY];
      redraw();
    });
    it.view.addEventListener("pointerup", () => (last = null));
    it.view.addEventListener("wheel", (e) => {
      e.preventDefault();
      it.group.zoom = Math.max(0.3, Math.min(8, it.group.zoom * Math.exp(-e.deltaY * 0.001)));
      redraw();
    }, { passive: false });
    it.view.addEventListener("dblclick", () => {
      Object.assign(it.group, { yaw: -0.7, pitch: 0.35, zoom: 1 });
      redraw();
    });
  }
  new ResizeObserver(redraw).observe(el);
  draw();
}

// the script is the body's last element: everything above is parsed
document.querySelectorAll(".molgrid").forEach(moleculeGrid);
const pointGrids = document.querySelectorAll(".grid3d");
if (pointGrids.length) loadThree().then((THREE) => pointGrids.forEach((el) => pointGrid(THREE, el)));
