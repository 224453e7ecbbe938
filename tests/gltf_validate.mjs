// Validate one glTF/GLB file with the Khronos glTF-Validator (npm package gltf-validator) and print the
// JSON report on stdout. Usage: node tests/gltf_validate.mjs <file.glb|file.gltf>
// The package is installed with: npm install --prefix tests/.node gltf-validator@2.0.0-dev.3.10
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, ".node", "package.json"));

const file = process.argv[2];
if (!file) {
  console.error("usage: node tests/gltf_validate.mjs <file.glb|file.gltf>");
  process.exit(2);
}
let validator;
try {
  validator = require("gltf-validator");
} catch (err) {
  console.error("gltf-validator is not installed: npm install --prefix tests/.node gltf-validator@2.0.0-dev.3.10");
  process.exit(3);
}
const bytes = new Uint8Array(await readFile(file));
const dir = path.dirname(path.resolve(file));
const report = await validator.validateBytes(bytes, {
  uri: path.basename(file),
  maxIssues: 0,
  externalResourceFunction: async (uri) => new Uint8Array(await readFile(path.resolve(dir, decodeURIComponent(uri)))),
});
process.stdout.write(JSON.stringify(report));
