// The page's files as the build left them: page.json's bytes match the sha256 the page rule wrote
// into index.html, and every file page.json lists (decoder.onnx, drive.onnx) matches the sha256
// page.json records. A truncated graph or an edited page.json stops the page with a message naming
// the file (the caller shows it) instead of a blank canvas. No imports: node runs it in the tests.

export class IntegrityError extends Error {}

export async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const REBUILD = "rebuild the page: snakemake --cores all --forcerun page_models results/explore/<actor>/index.html";

async function fetchBytes(url, name) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new IntegrityError(`${name} cannot be loaded (HTTP ${response.status}); ${REBUILD}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function check(name, bytes, expected) {
  if (!expected) throw new IntegrityError(`no sha256 recorded for ${name}; ${REBUILD}`);
  const actual = await sha256Hex(bytes);
  if (actual !== expected) {
    throw new IntegrityError(`${name} does not match what the build recorded (sha256 ${actual.slice(0, 12)}..., ` +
      `recorded ${expected.slice(0, 12)}...): it changed after the page was built; ${REBUILD}`);
  }
}

// base: the page's URL; recorded: page.json's sha256 from index.html. -> { manifest, files: {key: bytes} }
export async function loadVerified(base, recorded) {
  const raw = await fetchBytes(new URL("page.json", base), "page.json");
  await check("page.json", raw, recorded);
  const manifest = JSON.parse(new TextDecoder().decode(raw));
  const files = {};
  for (const [key, name] of Object.entries(manifest.files)) {
    const bytes = await fetchBytes(new URL(name, base), name);
    await check(name, bytes, manifest.sha256?.[name]);
    files[key] = bytes;
  }
  return { manifest, files };
}
