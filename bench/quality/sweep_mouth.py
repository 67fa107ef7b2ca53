"""Issue 38's sweep: which map makes the actor's mouth move for people nobody tuned it on?

Reads a bench work folder made by bench_transfer.py (the tuning set) or bench_validation.py (the
validation set): the actors' faces and models, the drivers' tracks and videos. Per actor it refits
the landmark -> z map with each variant's settings (rule fit_retarget's sequence,
:func:`facevae.driving.fit_and_calibrate`), drives each cross pair as rule reenact does (the driver's
whole-video neutral, face-api's mouth points, the default transfer unless the variant sets one),
decodes, and measures as the score files do: face-mesh (independent) and dlib mouth / eye r with the
driver, the retrieval baseline's r, the amplitude ratio (render s.d. over the baseline's).

Choices are made on the tuning set's table; the validation set's is the report.

    .venv/bin/python bench/quality/sweep_mouth.py tuning /path/to/bench_transfer/auto [variant ...]
    .venv/bin/python bench/quality/sweep_mouth.py validation /path/to/bench_validation [variant ...]

Writes bench/results/mouth_sweep_{set}.tsv (one row per variant and pair) and prints the medians.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO  # noqa: E402

sys.path.insert(0, str(REPO / "workflow"))
from facevae import FACE_SIZE  # noqa: E402
from facevae.driving import DrivePlan, RetargetSettings, driver_landmarks, fit_and_calibrate, retarget_track  # noqa: E402
import facevae.driving.fit as fit_module  # noqa: E402
from facevae.driving.fit import _dlib_openings  # noqa: E402
from facevae.expression import pearson  # noqa: E402
from facevae.faces.io import DriverTrack, read_faces  # noqa: E402
from facevae.instruments import MeshInstrument, dlib_ratios, landmark_ratios, sharpen  # noqa: E402
from facevae.modelio import Codec, load_model  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from facevae.scoring import amplitude_ratio, retrieval_index  # noqa: E402

RENDER = RenderConfig()

# variant name -> (map settings, drive settings, fit constants). "gate": the read-out's held-out r floor
# (facevae.driving.fit.READOUT_MIN_R; 0 keeps both steps whatever their cross-validated r).
VARIANTS = {
    "default": ({}, {}, {}),
    "gate0": ({}, {}, {"gate": 0.0}),
    "nw0.02": ({"map": "nadaraya", "bandwidth": 0.02}, {}, {}),
    "nw0.05": ({"map": "nadaraya", "bandwidth": 0.05}, {}, {}),
    "nw0.1": ({"map": "nadaraya", "bandwidth": 0.1}, {}, {}),
    "nw0.2": ({"map": "nadaraya", "bandwidth": 0.2}, {}, {}),
    "nw0.05-gate0": ({"map": "nadaraya", "bandwidth": 0.05}, {}, {"gate": 0.0}),
    "nw0.05-noread": ({"map": "nadaraya", "bandwidth": 0.05, "readout": False}, {}, {}),
    "nw0.05-t0": ({"map": "nadaraya", "bandwidth": 0.05}, {"transfer": 0.0}, {}),
    "nw0.05-t0.25": ({"map": "nadaraya", "bandwidth": 0.05}, {"transfer": 0.25}, {}),
    "nw0.05-t0.5": ({"map": "nadaraya", "bandwidth": 0.05}, {"transfer": 0.5}, {}),
    "nw0.05-t1": ({"map": "nadaraya", "bandwidth": 0.05}, {"transfer": 1.0}, {}),
    "krr-l0.01": ({"l2": 0.01}, {}, {}),
    "nw0.05-eyestep": ({"map": "nadaraya", "bandwidth": 0.05, "mouth_step": False}, {}, {}),
    "nw0.05-eyestep-t1": ({"map": "nadaraya", "bandwidth": 0.05, "mouth_step": False}, {"transfer": 1.0}, {}),
    "nw0.1-eyestep": ({"map": "nadaraya", "bandwidth": 0.1, "mouth_step": False}, {}, {}),
    "nw0.02-eyestep": ({"map": "nadaraya", "bandwidth": 0.02, "mouth_step": False}, {}, {}),
    "eyestep": ({"mouth_step": False}, {}, {}),
    # issue 38, after the final fit: a still driver's blink opened the actor's mouth (d11 <- s18)
    "decoded": ({"mouth_readout": "decoded"}, {}, {}),
    "additive": ({"map": "additive"}, {}, {}),
    "additive-decoded": ({"map": "additive", "mouth_readout": "decoded"}, {}, {}),
    "eyegain1": ({"eye_gain_max": 1.0}, {}, {}),
    "decoded-eyegain1": ({"mouth_readout": "decoded", "eye_gain_max": 1.0}, {}, {}),
    # the brows re-weighed under the final fit: face-api's brows (the page's) against dlib's (the
    # pipeline's) moved the CI actor's decoded mouth apart (page vs pipeline mouth r 0.77)
    "brow0": ({"brow_weight": 0.0}, {}, {}),
    "brow0.25": ({"brow_weight": 0.25}, {}, {}),
}


def pairs_of(kind: str, work: Path) -> list[tuple[str, str, str]]:
    if kind == "ci":  # the CI pipeline's d6 driven by tpsmm (a tuning pair; its HDTF pair is validation's driver)
        return [("d6", "tpsmm", "driving")]
    if kind == "tuning":
        actors = ("d6", "d10", "d3", "d13")
        return [(a, d, v) for a in actors for d, v in [("tpsmm", "driving"), *((f"{b}full", "full") for b in actors if b != a)]]
    from bench_validation import ACTORS, TALKERS
    own = [(a, f"{a}full", "full") for a in ACTORS] if os.environ.get("SWEEP_SELF") else []  # own-clip rows (issue 40)
    return [(a, d, "talk" if d in TALKERS else "full") for a in ACTORS
            for d in [*TALKERS, *(f"{b}full" for b in ACTORS if b != a)]] + own


class Meter:
    """The score files' measures, cached per driver (its crops and points) and per pair (the baseline)."""

    def __init__(self, work: Path):
        self.work, self.mesh, self.cache = work, MeshInstrument(RENDER.score_upscale), {}

    def mesh_ratios(self, faces):
        return self.mesh.ratios(sharpen(faces, RENDER.score_mesh_sharpen))

    def driver(self, d: str, v: str):
        if (d, v) not in self.cache:
            track = DriverTrack(self.work / f"results/tracks/{d}/{v}.h5")
            kept = np.flatnonzero(track.kept)
            crops = track.read_crops(0, track.n)[track.kept]
            points = driver_landmarks(track, "faceapi", self.work / f"results/videos/{d}/{v}.mp4",
                                      self.work / "results/weights/face-api")
            dlib_lm = np.asarray(track.landmarks[:])[kept]
            self.cache[(d, v)] = {"track": track, "points": points, "mesh": self.mesh_ratios(crops),
                                  "dlib": landmark_ratios(dlib_lm), "dlib_lm": dlib_lm}
        return self.cache[(d, v)]

    def identity(self, actor, faces, d, v, rendered) -> float:
        """Identity kept as the score files measure it: rendered faces (every Nth kept frame) nearer the
        actor's mean descriptor than the driver's and within the threshold of the actor's."""
        from facevae.instruments import face_descriptors, identity_kept, mean_descriptor

        drv = self.driver(d, v)
        align = drv["track"].align_config(FACE_SIZE)
        if ("desc", actor) not in self.cache:
            self.cache[("desc", actor)] = mean_descriptor(faces["data"], align, RENDER.score_upscale)
        if ("desc", d) not in self.cache:
            crops = drv["track"].read_crops(0, drv["track"].n)[drv["track"].kept]
            self.cache[("desc", d)] = face_descriptors(crops[:: RENDER.score_identity_every], align, RENDER.score_upscale).mean(axis=0)
        desc = face_descriptors(rendered[:: RENDER.score_identity_every], align, RENDER.score_upscale)
        return identity_kept(desc, self.cache[("desc", actor)], self.cache[("desc", d)], RENDER.score_identity_threshold)["kept"]


def main() -> None:
    kind, work = sys.argv[1], Path(sys.argv[2])
    names = sys.argv[3:] or list(VARIANTS)
    meter = Meter(work)
    pairs = pairs_of(kind, work)
    pairs = [p for p in pairs if (work / f"results/tracks/{p[1]}/{p[2]}.h5").is_file() or print("no track yet:", p)]
    pairs = [p for p in pairs if (work / f"results/models/{p[0]}/model.pt").is_file() or print("no model yet:", p)]
    only = os.environ.get("SWEEP_ACTORS", "").split()  # a subset of the actors (their rows replace theirs only)
    if only:
        pairs = [p for p in pairs if p[0] in only]
    rows, frames = [], {}
    t0 = time.perf_counter()
    for actor in dict.fromkeys(a for a, _, _ in pairs):
        faces_path = work / f"results/faces/{actor}.h5"
        faces = read_faces(faces_path)
        codec = Codec(load_model(work / f"results/models/{actor}/model.pt"))
        mu = codec.encode(faces["data"])
        openings_of = _dlib_openings(codec, faces, faces_path)
        for name in names:
            map_kw, drive_kw, consts = VARIANTS[name]
            gate = fit_module.READOUT_MIN_R
            fit_module.READOUT_MIN_R = consts.get("gate", gate)
            try:
                module, report = fit_and_calibrate(faces["landmarks"], mu, dataclasses.replace(RetargetSettings(), **map_kw),
                                                   openings_of)
            finally:
                fit_module.READOUT_MIN_R = gate
            plan = dataclasses.replace(DrivePlan(), **drive_kw)
            for a, d, v in pairs:
                if a != actor:
                    continue
                drv = meter.driver(d, v)
                track = drv["track"]
                z, _ = retarget_track(module, track, plan.neutral, plan.gain, transfer=plan.transfer, landmarks=drv["points"])
                rendered = codec.decode(z[track.kept])
                base_idx = retrieval_index(faces["landmarks"], drv["dlib_lm"])
                key = ("base", a, d)
                if key not in meter.cache:
                    base = faces["data"][base_idx]
                    meter.cache[key] = (meter.mesh_ratios(base), dlib_ratios(base, track.align_config(FACE_SIZE),
                                                                              RENDER.score_upscale, RENDER.score_sharpen))
                base_mesh, base_dlib = meter.cache[key]
                mesh = meter.mesh_ratios(rendered)
                dl = dlib_ratios(rendered, track.align_config(FACE_SIZE), RENDER.score_upscale, RENDER.score_sharpen)
                row = {"variant": name, "actor": a, "driver": d, "frames": int(track.kept.sum())}
                for k, part in enumerate(("mouth", "eye")):
                    row[f"mesh_{part}"] = pearson(drv["mesh"][:, k], mesh[:, k])
                    row[f"base_mesh_{part}"] = pearson(drv["mesh"][:, k], base_mesh[:, k])
                    row[f"amp_mesh_{part}"] = amplitude_ratio(mesh[:, k], base_mesh[:, k])
                    row[f"dlib_{part}"] = pearson(drv["dlib"][:, k], dl[:, k])
                    row[f"base_dlib_{part}"] = pearson(drv["dlib"][:, k], base_dlib[:, k])
                row.update({f"fit_{k}": report.get(k) for k in ("readout_mouth_r", "readout_mouth", "readout_eye_r", "cv_r2")})
                if os.environ.get("SWEEP_IDENTITY"):  # identity kept as the score files measure it (every 3rd kept frame)
                    row["identity_kept"] = meter.identity(actor, faces, d, v, rendered)
                rows.append(row)
                if name == names[0]:  # the first variant's frames, for the weakest pair's sheet
                    frames[(a, d)] = {"driver": track.read_crops(0, track.n)[track.kept], "render": rendered,
                                      "base": faces["data"][base_idx], "series": (drv["mesh"][:, 0], mesh[:, 0], base_mesh[:, 0])}
                print(f"{time.perf_counter() - t0:6.0f}s {name:14s} {a}<-{d}: mouth {row['mesh_mouth']:.3f} (base "
                      f"{row['base_mesh_mouth']:.3f}) amp {row['amp_mesh_mouth']:.2f} eye {row['mesh_eye']:.3f} "
                      f"dlib mouth {row['dlib_mouth']:.3f}", flush=True)
    table = pd.DataFrame(rows)
    out = Path(os.environ.get("SWEEP_OUT") or REPO / "bench" / "results" / f"mouth_sweep_{kind}.tsv")
    if out.is_file():  # keep the other variants' rows
        old = pd.read_csv(out, sep="\t")
        replaced = old.variant.isin(names) & old.actor.isin(table.actor.unique())
        table = pd.concat([old[~replaced], table], ignore_index=True)
    table.to_csv(out, sep="\t", index=False, float_format="%.4f")
    summary(table)
    first = pd.DataFrame([r for r in rows if r["variant"] == names[0] and r["driver"] != r["actor"] + "full"])
    if len(first):
        weakest = first.loc[(first.base_mesh_mouth - first.mesh_mouth).idxmax()]
        sheet = out.with_name(f"weakest_{kind}_{names[0]}.png")
        weakest_sheet(sheet, weakest, frames[(weakest.actor, weakest.driver)])
        print("weakest pair:", weakest.actor, "<-", weakest.driver, "sheet:", sheet)


def weakest_sheet(path: Path, row, f: dict) -> None:
    """The frames behind a pair's numbers: 10 frames spread over the driver's mouth opening (closed to
    widest), as rows driver / render / retrieval baseline, over the three opening series in time."""
    from facevae import sheets
    from facevae.atomic import save_figure, write_png
    from facevae.plotting import pyplot

    driver_open, render_open, base_open = f["series"]
    order = np.argsort(np.nan_to_num(driver_open, nan=-1.0))
    pick = order[np.linspace(0, len(order) - 1, 10).round().astype(int)]
    big = lambda faces: [sheets.enlarge(faces[i], 2) for i in pick]  # noqa: E731
    width = 10 * 128
    title = (f"{row.actor} <- {row.driver}: mesh mouth r {row.mesh_mouth:.2f} (retrieval {row.base_mesh_mouth:.2f}), "
             f"amplitude {row.amp_mesh_mouth:.2f}; frames by the driver's mouth opening, closed to widest")
    parts = [sheets.label(width, 22, title, 0.45)]
    for name, faces in (("driver", f["driver"]), ("render (map)", f["render"]), ("retrieval baseline", f["base"])):
        parts += [sheets.label(width, 18, name, 0.4, x=4), sheets.grid([big(faces)])]
    write_png(path, sheets.stack(parts, gap=2))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 2.6))
    for series, name in ((driver_open, "driver"), (render_open, "render"), (base_open, "retrieval")):
        ax.plot(series, label=name, lw=1)
    ax.set_xlabel("kept frame")
    ax.set_ylabel("mouth opening (face mesh)")
    ax.legend(ncol=3)
    fig.tight_layout()
    save_figure(fig, path.with_name(path.stem + "_series.png"))


def summary(table: pd.DataFrame) -> None:
    own = table.driver == table.actor + "full"
    if own.any():
        print("own-clip rows:")
        print(table[own][["variant", "actor", "mesh_mouth", "base_mesh_mouth", "amp_mesh_mouth", "mesh_eye", "dlib_mouth"]]
              .round(3).to_string(index=False))
    table = table[~own]  # the medians are over the cross pairs
    g = table.groupby("variant")
    within = g.apply(lambda t: float((t.mesh_mouth >= t.base_mesh_mouth - 0.05).mean()), include_groups=False)
    amp_max = g.amp_mesh_mouth.max()
    cols = ["mesh_mouth", "amp_mesh_mouth", "mesh_eye", "dlib_mouth", "base_mesh_mouth"]
    med = g[cols + (["identity_kept"] if "identity_kept" in table else [])].median()
    print(pd.concat([med, within.rename("within_0.05"), amp_max.rename("amp_max")], axis=1).round(3).to_string())


if __name__ == "__main__":
    main()
