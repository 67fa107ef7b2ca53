"""The page's JavaScript runtime: npm packages pinned by workflow/page/package-lock.json, installed
with ``npm ci`` and copied (only the files the page loads) into ``results/explore/{actor}/vendor/``,
so the page needs no network and no node_modules when it is served.

- onnxruntime-web (wasm backend): runs decoder.onnx and drive.onnx;
- @vladmandic/face-api: face detector (tiny) and 68-point landmarks, weights inside its package;
- @tensorflow/tfjs-backend-wasm: the wasm binaries of face-api's bundled tfjs (same version), ~10x
  faster than its CPU backend on this machine (detect + landmarks 95 ms vs 1150 ms per frame).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from facevae import FacevaeError

PAGE_SOURCE = Path(__file__).resolve().parents[1] / "page"
#: The page's own files (workflow/page/), copied beside index.html.
PAGE_FILES = ("index.html", "app.js", "align.js", "page.css")
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


def copy_page_files(outdir: str | os.PathLike, source: Path = PAGE_SOURCE) -> list[Path]:
    """The page's own HTML / JS / CSS beside the actor's models."""
    out = []
    for name in PAGE_FILES:  # not facevae.atomic: it imports numpy, which envs/page.yaml does not have
        dest = Path(outdir) / name
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copy2(source / name, tmp)
        os.replace(tmp, dest)
        out.append(dest)
    return out
