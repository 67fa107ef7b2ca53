"""The page's JavaScript runtime: npm packages pinned by workflow/page/package-lock.json, installed
with ``npm ci`` and copied (only the files the page loads) into ``results/explore/{actor}/vendor/``,
so the page needs no network and no node_modules when it is served.

- onnxruntime-web (wasm backend): runs decoder.onnx and drive.onnx;
- @vladmandic/face-api: face detector (tiny) and 68-point landmarks, weights inside its package;
- @tensorflow/tfjs-backend-wasm: the wasm binaries of face-api's bundled tfjs (same version), ~10x
  faster than its CPU backend on this machine (detect + landmarks 95 ms vs 1150 ms per frame).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from facevae import FacevaeError

PAGE_SOURCE = Path(__file__).resolve().parents[1] / "page"
#: The page's own files (workflow/page/), copied beside index.html.
PAGE_FILES = ("index.html", "app.js", "align.js", "integrity.js", "page.css")
#: index.html's placeholder for page.json's sha256 (filled by :func:`copy_page_files`; the page
#: checks page.json's bytes against it, and every file page.json lists against page.json's sha256).
PAGE_SHA_PLACEHOLDER = 'name="facevae-page-sha256" content=""'
#: vendor/<dest> <- node_modules/<src>.
VENDOR_FILES = {
    "ort/ort.wasm.min.mjs": "onnxruntime-web/dist/ort.wasm.min.mjs",
    "ort/ort-wasm-simd-threaded.mjs": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "ort/ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    "face-api/face-api.esm.js": "@vladmandic/face-api/dist/face-api.esm.js",
    "face-api/LICENSE": "@vladmandic/face-api/LICENSE",
    "face-api/model/tiny_face_detector_model-weights_manifest.json":
        "@vladmandic/face-api/model/tiny_face_detector_model-weights_manifest.json",
    "face-api/model/tiny_face_detector_model.bin": "@vladmandic/face-api/model/tiny_face_detector_model.bin",
    "face-api/model/face_landmark_68_model-weights_manifest.json":
        "@vladmandic/face-api/model/face_landmark_68_model-weights_manifest.json",
    "face-api/model/face_landmark_68_model.bin": "@vladmandic/face-api/model/face_landmark_68_model.bin",
    "tfjs/tfjs-backend-wasm.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm",
    "tfjs/tfjs-backend-wasm-simd.wasm": "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm",
    "tfjs/tfjs-backend-wasm-threaded-simd.wasm":
        "@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm",
}


#: face-api's 68-point landmark weights, for the pipeline's own use of the page's landmark model
#: (rule faceapi_weights; facevae.faces.faceapi_landmarks): <dest> <- node_modules/<src>.
LANDMARK_WEIGHT_FILES = {
    "face_landmark_68_model-weights_manifest.json": "@vladmandic/face-api/model/face_landmark_68_model-weights_manifest.json",
    "face_landmark_68_model.bin": "@vladmandic/face-api/model/face_landmark_68_model.bin",
    "LICENSE": "@vladmandic/face-api/LICENSE",
}
#: What to do without node / npm, by the rule that needs them.
WITHOUT_NPM = {
    "page": "set page.build: false to skip the pages",
    "faceapi_weights": "or set render.retarget.mouth_points: dlib to drive with dlib's mouth points",
}


def find_npm(rule: str = "page") -> str:
    """The npm executable, or one error saying what to install (envs/page.yaml names it)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise FacevaeError(f"rule {rule} needs node and npm on PATH (envs/page.yaml: conda install nodejs, or "
                           f"apt install nodejs npm); {WITHOUT_NPM.get(rule, '')}")
    return npm


def locked_versions(source: Path = PAGE_SOURCE) -> dict[str, str]:
    """Package -> version of the page's direct dependencies, as the lock file pins them."""
    lock = json.loads((source / "package-lock.json").read_text())
    wanted = json.loads((source / "package.json").read_text())["dependencies"]
    return {name: lock["packages"][f"node_modules/{name}"]["version"] for name in wanted}


def install_runtime(vendor: str | os.PathLike, source: Path = PAGE_SOURCE, log=None, files: dict | None = None,
                    rule: str = "page") -> dict[str, str]:
    """``npm ci`` of the lock file in a scratch folder, then ``files`` (default :data:`VENDOR_FILES`)
    into ``vendor`` (replaced whole, so a failed install leaves the old one). Returns the installed versions."""
    npm = find_npm(rule)
    files = VENDOR_FILES if files is None else files
    vendor = Path(vendor)
    with tempfile.TemporaryDirectory(prefix="facevae-npm-") as scratch:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(source / name, Path(scratch) / name)
        # --ignore-scripts: nothing the page loads needs an install script (protobufjs' postinstall
        # only prints a notice); no package may run code on this machine at build time.
        cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
        done = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
        if log is not None:
            log.info("%s: %s", " ".join(cmd), (done.stdout + done.stderr).strip()[-2000:])
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise FacevaeError(f"npm ci of {source / 'package-lock.json'} failed (exit {done.returncode}): "
                               + " / ".join(tail))
        modules = Path(scratch) / "node_modules"
        staging = vendor.with_name(vendor.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for dest, src in files.items():
                if not (modules / src).is_file():
                    raise FacevaeError(f"npm package file {src} is missing after npm ci: the lock file's versions "
                                       f"do not ship it (facevae.webruntime)")
                (staging / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(modules / src, staging / dest)
            versions = locked_versions(source)
            licences = {name: json.loads((modules / name / "package.json").read_text()).get("license", "?")
                        for name in versions}
            (staging / "versions.json").write_text(json.dumps({"versions": versions, "licenses": licences},
                                                              indent=1) + "\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    shutil.rmtree(vendor, ignore_errors=True)
    staging.rename(vendor)
    return versions


def copy_page_files(outdir: str | os.PathLike, source: Path = PAGE_SOURCE, page_sha256: str = "") -> list[Path]:
    """The page's own HTML / JS / CSS beside the actor's models; index.html carries ``page_sha256``
    (page.json's, from :func:`check_page_files`). index.html is written last."""
    out = []
    for name in sorted(PAGE_FILES, key=lambda n: n == "index.html"):  # index.html last: the rule's file output
        dest = Path(outdir) / name  # not facevae.atomic: it imports numpy, which envs/page.yaml does not have
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            if name == "index.html":
                html = (source / name).read_text(encoding="utf-8")
                if PAGE_SHA_PLACEHOLDER not in html:
                    raise FacevaeError(f"{source / name} lacks the page.json checksum placeholder ({PAGE_SHA_PLACEHOLDER})")
                tmp.write_text(html.replace(PAGE_SHA_PLACEHOLDER, f'name="facevae-page-sha256" content="{page_sha256}"'),
                               encoding="utf-8")
            else:
                shutil.copy2(source / name, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        out.append(dest)
    return out


# --- the page's files as page_models wrote them ------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of page.json's content (canonical JSON, without ``self_sha256``): an edit of any value
    changes it, a re-indent does not."""
    body = {k: v for k, v in manifest.items() if k != "self_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_manifest(manifest: dict, folder: str | os.PathLike, model_path: str | os.PathLike | None = None) -> dict:
    """``manifest`` with the sha256 of every file it lists (in ``folder``), of the model it was
    exported from, and of itself: what :func:`check_page_files` and the page check."""
    sealed = dict(manifest)
    sealed["sha256"] = {name: sha256_file(Path(folder) / name) for name in manifest["files"].values()}
    if model_path is not None:
        sealed["model_sha256"] = sha256_file(model_path)
    sealed["self_sha256"] = manifest_digest(sealed)
    return sealed


def check_page_files(folder: str | os.PathLike) -> str:
    """FacevaeError naming the file when page.json or a file it lists is not as page_models wrote
    it (a truncated decoder.onnx, an edited page.json: Snakemake then re-runs only the page rule,
    which built a broken page and exited 0). Returns page.json's sha256 (for index.html)."""
    folder = Path(folder)
    path = folder / "page.json"
    rebuild = f"rebuild it: snakemake --cores all --forcerun page_models {folder / 'index.html'}"
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError) as err:
        raise FacevaeError(f"{path} cannot be read as JSON ({err}): it was cut short or edited; {rebuild}") from None
    if not isinstance(manifest, dict) or "self_sha256" not in manifest or not isinstance(manifest.get("sha256"), dict):
        raise FacevaeError(f"{path} records no checksums (written by an older facevae, or edited); {rebuild}")
    if manifest_digest(manifest) != manifest["self_sha256"]:
        raise FacevaeError(f"{path} was edited after page_models wrote it (its content no longer matches its "
                           f"self_sha256); {rebuild}")
    for name in (manifest.get("files") or {}).values():
        expected = manifest["sha256"].get(name)
        target = folder / name
        actual = sha256_file(target) if target.is_file() else None
        if expected is None or actual != expected:
            what = "is missing" if actual is None else f"does not match page.json (sha256 {actual[:12]}..., page.json " \
                                                       f"records {str(expected)[:12]}...)"
            raise FacevaeError(f"{target} {what}: it changed after page_models wrote it; {rebuild}")
    return hashlib.sha256(raw).hexdigest()
