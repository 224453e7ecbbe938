// The report's 3D viewer: the GLB (base64 in <script id="glb-data">) loaded with three.js's GLTFLoader,
// orbit / zoom / pan with OrbitControls, lit by a hemisphere light and a key light that follows the camera.
// Renders on demand (no animation loop). Sets <body data-viewer="ready"> after the first frame, "error"
// when something failed (the message goes to console.error, which error_hook.js records).
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const canvas = document.getElementById('viewer');
const status = document.getElementById('viewer-status');

function fail(message) {
  document.body.dataset.viewer = 'error';
  status.textContent = 'viewer: ' + message;
  console.error('viewer: ' + message);
}

function base64Bytes(text) {
  const binary = atob(text.trim());
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes.buffer;
}

function start() {
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  } catch (err) {
    fail('WebGL is not available in this browser (' + err.message + ')');
    return;
  }
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setSize(canvas.clientWidth, canvas.clientHeight, false);
  renderer.outputColorSpace = THREE.SRGBColorSpace;
  renderer.toneMapping = THREE.NoToneMapping;

  const scene = new THREE.Scene();
  scene.background = new THREE.Color(canvas.dataset.background || '#2a2e36');
  scene.add(new THREE.HemisphereLight(0xffffff, 0x606470, 1.6));
  const camera = new THREE.PerspectiveCamera(35, canvas.clientWidth / canvas.clientHeight, 0.01, 1000);
  const key = new THREE.DirectionalLight(0xffffff, 1.8);
  key.position.set(-1, 1.2, 1.5);              // camera frame: upper left, in front of the model
  key.target.position.set(0, 0, -1);
  camera.add(key, key.target);
  scene.add(camera);

  const controls = new OrbitControls(camera, canvas);
  const draw = () => renderer.render(scene, camera);
  controls.addEventListener('change', draw);

  new GLTFLoader().parse(base64Bytes(document.getElementById('glb-data').textContent), '', (gltf) => {
    scene.add(gltf.scene);
    const box = new THREE.Box3().setFromObject(gltf.scene);
    const centre = box.getCenter(new THREE.Vector3());
    const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 1e-6);
    const distance = radius / Math.sin(THREE.MathUtils.degToRad(camera.fov / 2)) * 1.05;
    const dir = new THREE.Vector3(Math.sin(0.6), 0.35, Math.cos(0.6)).normalize();
    camera.position.copy(centre).addScaledVector(dir, distance);
    camera.near = distance / 100;
    camera.far = distance * 100;
    camera.updateProjectionMatrix();
    controls.target.copy(centre);
    controls.update();
    draw();
    const gl = renderer.getContext();
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    status.textContent = 'drag to orbit, wheel to zoom, right-drag to pan (three.js r' + THREE.REVISION +
      ', ' + (info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER)) + ')';
    document.body.dataset.viewer = 'ready';
  }, (err) => fail('cannot load the GLB: ' + (err && err.message ? err.message : err)));
}

start();
