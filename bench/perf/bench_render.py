"""Render speed: rendered frames per second of a 30-second driver clip, split into the encode/decode
of the VAE, upscale + compose, and video encode (time the renderer waits on the H.264 encoder).

Setup (not timed): the first 30 s of lp_d6.mp4 are cut with the ingest helper and tracked with the
faces stage's real tracker (dlib); the models are the training stage's networks at their default
sizes with fresh weights (speed does not depend on what the weights are).
Writes bench/results/render.md. Run from the repository root: .venv/bin/python bench/perf/bench_render.py
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

import torch  # noqa: E402

from facevae import modelio  # noqa: E402
from facevae.driving import RetargetSettings, fit_actor_retarget  # noqa: E402
from facevae.faces.io import read_track, write_faces  # noqa: E402
from facevae.faces.track import extract_track  # noqa: E402
from facevae.models import ModelConfig, build_model  # noqa: E402
from facevae.render import RenderConfig, render_reenactment  # noqa: E402
from facevae.video import probe, to_portable_mp4  # noqa: E402
from facevae.webruntime import LANDMARK_WEIGHT_FILES, install_runtime  # noqa: E402

MEDIA = Path(os.environ.get("FACEVAE_MEDIA", REPO.parent / "shared" / "data"))
TARGET_FPS = 100.0


def main() -> None:
    src = MEDIA / "videos" / "lp_d6.mp4"
    if not src.is_file():
        sys.exit(f"bench_render: {src} not found (set FACEVAE_MEDIA)")
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="bench_render."))
    clip = work / "clip.mp4"
    to_portable_mp4(src, clip, probe(src), 0.0, 30.0)
    info = probe(clip)
    track = work / "track.h5"
    t0 = time.perf_counter()
    extract_track(clip, track, person="bench", name="clip", role="driver", faces_cfg={"aligner": "dlib"}, workers=2,
                  progress=False)
    track_seconds = time.perf_counter() - t0
    models = {}
    for arch in ("conv", "blog"):
        torch.manual_seed(0)
        cfg = ModelConfig(arch=arch, latent_dim=128 if arch == "conv" else 100)
        models[arch] = modelio.save_model(work / f"{arch}.pt", build_model(cfg))

    # The actor's training set is the clip's own kept faces: the score's identity reference and
    # retrieval baseline, and what the retargeting map is fitted on.
    rows_ = read_track(track)
    faces = write_faces(work / "faces.h5", rows_["crops"][rows_["kept"]], {"aligner": "dlib"},
                        landmarks=rows_["landmarks"][rows_["kept"]])
    retarget = {"map": work / "retarget.pt", "table": work / "retarget.tsv"}
    fit_actor_retarget(faces, models["conv"], retarget, RetargetSettings(), actor="bench")
    # The retarget row reads the driver's mouth points from face-api's net (mouth_points faceapi, the
    # default): its weights as rule faceapi_weights installs them; that net runs inside the drive, so
    # its time counts in encode_decode_s.
    faceapi = work / "face-api"
    install_runtime(faceapi, files=LANDMARK_WEIGHT_FILES, rule="faceapi_weights")
    # drive: encoder (the blog's plain path) except the retarget row: auto would choose per driver.
    encoder = {"drive": "encoder"}
    cases = [
        ("side_by_side", "conv", RenderConfig(**encoder), {"video"}, False),
        ("side_by_side", "blog", RenderConfig(**encoder), {"video"}, False),
        ("side_by_side, drive retarget", "conv", RenderConfig(drive="retarget"), {"video"}, False),
        ("grid + paste_back", "conv", RenderConfig(layout="grid", paste_back=True, **encoder), {"video", "paste"}, False),
        ("side_by_side + score", "conv", RenderConfig(**encoder), {"video", "score", "series", "plot", "sheet"}, True),
    ]
    rows = []
    for name, arch, cfg, wanted, score in cases:
        outputs = {key: str(work / f"out.{key}.{'mp4' if key in ('video', 'paste') else 'x'}") for key in wanted}
        for key, ext in (("score", "tsv"), ("series", "tsv"), ("plot", "png"), ("sheet", "png")):
            if key in outputs:
                outputs[key] = str(work / f"out.{key}.{ext}")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        summary = render_reenactment(track, clip, models[arch], outputs, cfg, "actor", "driver", "clip",
                                     faces_path=faces, retarget_path=retarget["map"], faceapi_model=faceapi,
                                     score=score, progress=False)
        wall = time.perf_counter() - start
        t = summary["timings"]
        rows.append({
            "case": name, "model": arch, "frames": summary["frames"], "wall_s": wall, "fps": summary["frames"] / wall,
            "encode_decode_s": t["encode_decode"], "compose_s": t["compose"] + t["read"], "video_encode_s": t["video_encode"],
            "landmarks_s": t["landmarks"], "size": f"{summary['width']}x{summary['height']}", "load": load,
        })
        print(f"{name:22s} {arch}: {rows[-1]['fps']:.1f} frames/s ({wall:.1f} s for {summary['frames']} frames)", flush=True)

    lines = [
        "# Render speed",
        "",
        f"Driver: first 30 s of lp_d6.mp4 ({info.frame_count} frames, {info.width}x{info.height}, {info.fps:g} fps, audio muxed), "
        f"tracked with the faces stage (dlib, {track_seconds:.1f} s, not counted). Panels 256 px, border 8, "
        f"libx264 veryfast crf 18. Models with fresh weights at default sizes (conv: latent 128, width 16; blog: latent 100).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. `load` is the 1-minute load average when the case started (other jobs share the cores).",
        "",
        "Columns: seconds spent in VAE encode+decode (for drive retarget: the whole drive, face-api's landmark net on the driver's frames for the mouth points included), in reading crops/frames + upscale + compose (+ paste-back), "
        "waiting on the H.264 encoder (it runs in its own process alongside), and predicting landmarks for the score.",
        "",
        "| case | model | frames | frames/s | wall s | encode/decode s | upscale+compose s | video encode s | score landmarks s | output | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['model']} | {r['frames']} | **{r['fps']:.1f}** | {r['wall_s']:.2f} | {r['encode_decode_s']:.2f} | "
                     f"{r['compose_s']:.2f} | {r['video_encode_s']:.2f} | {r['landmarks_s']:.2f} | {r['size']} | {r['load']:.1f} |")
    sbs = [r["fps"] for r in rows if r["case"] == "side_by_side"]
    lines += ["", f"Target: >= {TARGET_FPS:g} frames/s for side_by_side; measured {min(sbs):.1f}-{max(sbs):.1f} frames/s "
              f"({'met' if min(sbs) >= TARGET_FPS else 'NOT met'})."]
    out = REPO / "bench" / "results" / "render.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
