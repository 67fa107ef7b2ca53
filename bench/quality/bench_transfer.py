"""Cross-identity transfer: does a stranger's face move the actor? (issue 12's fixed set)

Actors: the four longest single-person shared clips -- lp_d6, lp_d10, lp_d3, lp_d13 -- each trained
(default training; held-out split of one block with a 0.5 s gap, as these clips are short) on the
first ~75 % of its clip. Each actor is driven by every other actor's whole clip and by
tpsmm_driving.mp4 (16 cross pairs), and by the held-out rest of its own clip (4 self rows).
Everything runs through the real workflow (snakemake), so the numbers are those of the score
files a user gets: face-mesh (independent instrument) and dlib mouth/eye r, identity kept, the
retrieval baseline's r, jitter, and the reenact job's seconds (two jobs at a time, one thread
each). The plain encoder (render.drive: encoder, the 2017 blog's way) is rendered and scored on
the self rows and the tpsmm rows beside the default (its other cross pairs cost ~25 min more; the
prototype numbers are in docs/decisions/001-retarget-strangers.md). Also writes a contact sheet per actor (driver crop / default / encoder / retrieval) to
bench/results/transfer/ -- look at it.

Writes bench/results/transfer.md. Run from the repository root: .venv/bin/python bench/quality/bench_transfer.py
(83 min for a whole run at train.min_steps 4500, 2026-12-02; the committed table's run, 2026-12-03,
reused a work folder whose actors had been tracked and trained in 47.6 min, and rendered and scored in 10 min). BENCH_TRANSFER_WORKDIR keeps (and reuses) the work folder;
BENCH_TRANSFER_FORCERUN (rule names, space-separated, e.g. ``fit_retarget``) reruns those rules and
what follows them (rules of the stages the other two drives link are forced in the default drive's run only)
-- a changed default in the facevae package is no reason to rerun for Snakemake.
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

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from facevae.train import TrainSettings  # noqa: E402

sys.path.insert(0, str(REPO / "bench" / "quality"))
from benchlib import MEDIA, run_workflow  # noqa: E402

TRAINING = TrainSettings()  # the bench trains with the defaults: its header states them

# Actor clip -> seconds used for training (the rest drives the self row).
ACTORS = {"d6": ("lp_d6.mp4", 25), "d10": ("lp_d10.mp4", 11), "d3": ("lp_d3.mp4", 9), "d13": ("lp_d13.mp4", 9)}
# The results folders the retarget and encoder runs link from the default run, and the rules writing them.
LINKED_STAGES = ("videos", "tracks", "faces", "models", "checkpoints")
LINKED_RULES = ("ingest_video", "faces_track", "faces_actor", "faces_driver", "faces_dataset", "train_vae", "fit_retarget")
TARGETS = {"cross mesh mouth r (median)": 0.6, "cross mesh eye r (median)": 0.4, "cross dlib mouth r (median)": 0.7,
           "identity kept (median)": 0.95, "self mesh mouth r (min)": 0.8}


def config(drive: str) -> dict:
    videos = MEDIA / "videos"
    actors = {a: {"videos": {a: {"path": str(videos / clip), "end": float(cut)}}} for a, (clip, cut) in ACTORS.items()}
    drivers = {"tpsmm": {"videos": {"driving": {"path": str(videos / "tpsmm_driving.mp4")}}}}
    for a, (clip, cut) in ACTORS.items():
        drivers[f"{a}full"] = {"videos": {"full": {"path": str(videos / clip)}}}
        drivers[f"{a}rest"] = {"videos": {"rest": {"path": str(videos / clip), "start": float(cut)}}}
    pairs = []
    for a in ACTORS:
        if drive == "auto":  # the default: every pair
            pairs += [{"actor": a, "driver": f"{b}full"} for b in ACTORS if b != a]
        if drive != "retarget":  # retarget alone: the self rows (auto's cross rows are retargeted)
            pairs += [{"actor": a, "driver": "tpsmm"}]
        pairs += [{"actor": a, "driver": f"{a}rest"}]
    cfg = {"actors": actors, "drivers": drivers, "reenact": pairs, "faces": {"aligner": "dlib"},
           "train": {"holdout": {"blocks": 1, "gap_seconds": 0.5}}, "render": {"drive": drive}}
    if drive == "encoder":  # identity of the encoder's renders is a side column: fewer descriptors
        cfg["expert"] = {"render": {"score": {"identity_every": 10}}}
    return cfg


def video_of(driver: str) -> str:
    return "driving" if driver == "tpsmm" else ("full" if driver.endswith("full") else "rest")


def run(workdir: Path, drive: str, forced: tuple[str, ...] = ()) -> None:
    cfg = config(drive)
    print("==", drive, flush=True)
    run_workflow(workdir, cfg, [f"results/reenact/{p['actor']}/{p['driver']}/{video_of(p['driver'])}.tsv"
                                for p in cfg["reenact"]], forced)


def collect(workdir: Path, drive: str) -> pd.DataFrame:
    rows = []
    for p in config(drive)["reenact"]:
        a, d = p["actor"], p["driver"]
        base = workdir / f"results/reenact/{a}/{d}/{video_of(d)}"
        t = pd.read_csv(f"{base}.tsv", sep="\t").set_index(["instrument", "measure"])
        seconds = pd.read_csv(workdir / f"results/benchmarks/reenact/{a}/{d}/{video_of(d)}.tsv", sep="\t").s.iloc[0]
        mm, me, dm, de = (t.loc[k] for k in (("mesh", "mouth_open"), ("mesh", "eye_open"), ("dlib", "mouth_open"), ("dlib", "eye_open")))
        rows.append({
            "actor": a, "driver": d.removesuffix("full").removesuffix("rest") + (" (own, held out)" if d.endswith("rest") else ""),
            "kind": "self" if d.endswith("rest") else "cross", "drive": drive, "method": str(mm.drive),
            "frames": int(mm.kept_frames),
            "scored": float(min(mm.scored_share, me.scored_share)),
            "mesh_mouth": mm.pearson, "mesh_eye": me.pearson, "dlib_mouth": dm.pearson, "dlib_eye": de.pearson,
            "identity_kept": mm.identity_kept, "base_mesh_mouth": mm.baseline_pearson, "base_mesh_eye": me.baseline_pearson,
            "base_dlib_mouth": dm.baseline_pearson, "jitter": mm.jitter, "base_jitter": mm.baseline_jitter,
            "circular_p95": mm.circular_p95, "seconds": float(seconds),
        })
    return pd.DataFrame(rows)


def contact_sheets(work_default: Path, work_encoder: Path, out_dir: Path) -> list[Path]:
    """Per actor: rows = driver crop, default render, encoder render, retrieval face; columns =
    frames of each cross driver (read back from the series and the track/video files)."""
    import cv2

    from facevae.driving import driver_landmarks, load_retarget, retarget_track
    from facevae.faces.io import DriverTrack, read_faces
    from facevae.render import RenderConfig, smooth_latents
    from facevae.modelio import Codec, load_model
    from facevae.scoring import retrieval_index
    from facevae.atomic import write_png

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    render = RenderConfig()  # the default render's drive (retarget_track's defaults), as rule reenact runs it
    points = {}  # driver -> the points retargeting reads (mouth_points faceapi): face-api's net runs once per driver
    for a in ACTORS:
        codec = Codec(load_model(work_default / f"results/models/{a}/model.pt"))
        retarget = load_retarget(work_default / f"results/models/{a}/retarget.pt")
        faces = read_faces(work_default / f"results/faces/{a}.h5")
        columns = []
        for d in [f"{b}full" for b in ACTORS if b != a] + ["tpsmm"]:
            with DriverTrack(work_default / f"results/tracks/{d}/{video_of(d)}.h5") as track:
                if d not in points:
                    points[d] = driver_landmarks(track, "faceapi", work_default / f"results/videos/{d}/{video_of(d)}.mp4",
                                                 work_default / "results/weights/face-api")
                z, _ = retarget_track(retarget, track, landmarks=points[d])
                z = smooth_latents(z, track.kept, render.smooth)
                kept = np.flatnonzero(track.kept)
                pick = kept[np.linspace(0, len(kept) - 1, 4).round().astype(int)[1:]]
                crops = track.read_crops(0, track.n)[pick]
                lm = np.asarray(track.landmarks[:])[pick]
            default = codec.decode(z[pick])
            encoder = codec.decode(codec.encode(crops))
            retrieved = faces["data"][retrieval_index(faces["landmarks"], lm)]
            for k in range(len(pick)):
                columns.append(np.concatenate([crops[k], default[k], encoder[k], retrieved[k]], axis=0))
        sheet = np.concatenate(columns, axis=1)
        sheet = cv2.resize(sheet, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
        written.append(write_png(out_dir / f"{a}.png", sheet))
    return written


def markdown(table: pd.DataFrame, seconds: float, reused: bool = False) -> str:
    default, encoder, retarget = (table[table.drive == d] for d in ("auto", "encoder", "retarget"))
    cross, self_ = default[default.kind == "cross"], default[default.kind == "self"]
    enc_self = encoder[encoder.kind == "self"]
    measured = {
        "cross mesh mouth r (median)": cross.mesh_mouth.median(),
        "cross mesh eye r (median)": cross.mesh_eye.median(),
        "cross dlib mouth r (median)": cross.dlib_mouth.median(),
        "identity kept (median)": cross.identity_kept.median(),
        "self mesh mouth r (min)": self_.mesh_mouth.min(),
    }
    lines = [
        "# Cross-identity transfer (bench/quality/bench_transfer.py)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads 2, no GPU. " + (
            f"This run reused the actors its work folder (BENCH_TRANSFER_WORKDIR) had tracked and trained before: "
            f"rendering and scoring the three drives took {seconds / 60:.1f} min." if reused else
            f"Whole run (tracking, training, fitting, rendering and scoring both drives): {seconds / 60:.1f} min."),
        "Actors trained on the first 25 / 11 / 9 / 9 s of lp_d6 / lp_d10 / lp_d3 / lp_d13 (default training: "
        f"{TRAINING.epochs} epochs, raised to reach train.min_steps {TRAINING.min_steps} optimiser steps, {TRAINING.lr_schedule} learning rate); "
        "cross drivers are the other actors' whole clips and tpsmm_driving.mp4; self rows are the held-out rest of the "
        "actor's own clip. r = Pearson of the driver's and the rendered actor's opening ratio over the kept frames; "
        "mesh = MediaPipe face mesh on the driver's 64-px crop and on the render (plays no part in driving); dlib = the "
        "track's landmarks vs dlib re-measured on the render. base = retrieval baseline (the actor's nearest training "
        "face by eye and mouth landmarks). jitter = frame-to-frame change of the rendered mesh mouth series over the "
        "driver's. scored = the smaller of the two mesh measures' scored share of kept frames. method = what "
        "render.drive auto chose for the pair (blend -- the encoder's and the retargeted z, render.self_blend, the latter's "
        "neutral transfer picked by the encoder, render.self_transfer -- when "
        "the driver's mean face descriptor is within 0.35 of the actor's, else retarget).",
        "",
        "## Targets (default drive: auto)",
        "",
        "| target | bar | measured | met |",
        "|---|---|---|---|",
    ]
    for name, bar in TARGETS.items():
        lines.append(f"| {name} | >= {bar} | {measured[name]:.3f} | {'yes' if measured[name] >= bar else 'no'} |")
    within = (cross.mesh_mouth >= cross.base_mesh_mouth - 0.05)
    lines.append(f"| every cross pair's mesh mouth r within 0.05 of retrieval's or above | 16 of 16 | {int(within.sum())} of "
                 f"{len(cross)} | {'yes' if within.all() else 'no'} |")
    mine, theirs = self_.set_index("actor").mesh_mouth, enc_self.set_index("actor").mesh_mouth
    ok = (mine >= theirs).all()
    lines.append(f"| self mesh mouth r not below the plain encoder's | every actor | "
                 f"{', '.join(f'{a} {mine[a]:.2f} vs {theirs[a]:.2f}' for a in mine.index)} | {'yes' if ok else 'no'} |")
    auto_ok = (cross.method == "retarget").all() and (self_.method == "blend").all()
    lines.append(f"| auto: every stranger retargeted, every own clip blended | 20 of 20 | "
                 f"{int((cross.method == 'retarget').sum() + (self_.method == 'blend').sum())} of {len(default)} | "
                 f"{'yes' if auto_ok else 'no'} |")
    cols = ["actor", "driver", "method", "frames", "scored", "mesh_mouth", "mesh_eye", "dlib_mouth", "dlib_eye", "identity_kept",
            "base_mesh_mouth", "base_mesh_eye", "base_dlib_mouth", "jitter", "base_jitter", "circular_p95", "seconds"]
    for drive, part in (("auto (default)", default), ("retarget (landmark retargeting alone; self rows)", retarget),
                        ("encoder (the 2017 blog's plain encoding; tpsmm and self rows)", encoder)):
        lines += ["", f"## render.drive: {drive}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for kind in ("cross", "self"):
            rows = part[part.kind == kind]
            for r in rows.itertuples():
                cells = [f"{getattr(r, c):.2f}" if isinstance(getattr(r, c), float) else str(getattr(r, c)) for c in cols]
                lines.append("| " + " | ".join(cells) + " |")
            if rows.empty:
                continue
            med = ["**median**", f"**{kind}**", ""] + [f"**{rows[c].median():.2f}**" for c in cols[3:]]
            lines.append("| " + " | ".join(med) + " |")
    lines += ["", "Contact sheets: bench/results/transfer/{actor}.png -- per cross driver three frames; rows: driver crop, "
              "default (auto: retarget for these strangers), plain encoder, retrieval baseline."]
    return "\n".join(lines) + "\n"


def main() -> None:
    if not (MEDIA / "videos" / "lp_d6.mp4").is_file():
        sys.exit(f"bench_transfer: {MEDIA}/videos not found (set FACEVAE_MEDIA)")
    root = Path(os.environ.get("BENCH_TRANSFER_WORKDIR") or tempfile.mkdtemp(prefix="bench_transfer."))
    reused = (root / "auto" / "results" / "models").is_dir()
    t0 = time.perf_counter()
    forced = tuple(os.environ.get("BENCH_TRANSFER_FORCERUN", "").split())
    run(root / "auto", "auto", forced)
    # The other drives share the faces and models: link the earlier stages' folders in. A forced rule
    # that writes into those folders has rerun once above and its outputs are newer, so what follows
    # it reruns by mtime; forcing it again would, e.g., train every actor a second time.
    linked_forced = tuple(rule for rule in forced if rule not in LINKED_RULES)
    for drive in ("retarget", "encoder"):
        work = root / drive
        (work / "results").mkdir(parents=True, exist_ok=True)
        for stage in LINKED_STAGES:
            link = work / "results" / stage
            if not link.exists():
                link.symlink_to(root / "auto" / "results" / stage)
        run(work, drive, linked_forced)
    seconds = time.perf_counter() - t0
    table = pd.concat([collect(root / d, d) for d in ("auto", "retarget", "encoder")], ignore_index=True)
    out = REPO / "bench" / "results"
    table.to_csv(out / "transfer.tsv", sep="\t", index=False, float_format="%.4f")
    contact_sheets(root / "auto", root / "encoder", out / "transfer")
    (out / "transfer.md").write_text(markdown(table, seconds, reused))
    print((out / "transfer.md").read_text())


if __name__ == "__main__":
    main()
