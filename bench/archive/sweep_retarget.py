"""Retargeting levers on the transfer bench's trained actors, scored like the reenact rule's mesh columns.

Reads a bench_transfer work folder (BENCH_TRANSFER_WORKDIR, its ``auto`` run: the four actors'
faces, models and the cross drivers' tracks) and, per actor, refits the landmark -> z map with
each setting below (the eye step calibrated on the decoder as rule fit_retarget does), drives
the actor with each cross driver, optionally smooths z over time (``render.smooth``), decodes,
and measures mouth and eye opening with the face mesh exactly as the score file does (same
upscale and unsharp mask) -- no video is written, so a sweep costs minutes, not the bench's hour.
The retrieval baseline is measured alike. The reenact rule's own score files stay the reference:
the default's row here reproduces bench/results/transfer.md's auto rows.

Writes bench/results/retarget_sweep.md (and .tsv). Run: BENCH_TRANSFER_WORKDIR=<dir> .venv/bin/python bench/archive/sweep_retarget.py
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench_transfer import ACTORS, video_of  # noqa: E402
from facevae.driving import (LEFT_EYE_BROW, MOUTH, NEUTRAL_TRANSFER, RIGHT_EYE_BROW, RetargetSettings, _dlib_openings,  # noqa: E402
                             fit_and_calibrate, neutral_shape, normalise_landmarks, retarget_shapes,
                             shape_openings)
from facevae.expression import pearson  # noqa: E402
from facevae.faces.io import DriverTrack, read_faces  # noqa: E402
from facevae.instruments import MeshInstrument, sharpen  # noqa: E402
from facevae.modelio import Codec, load_model  # noqa: E402
from facevae.render import RenderConfig, smooth_latents  # noqa: E402
from facevae.scoring import jitter, retrieval_index  # noqa: E402

DEFAULT = RetargetSettings()


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to turn a driver's frames into the actor's z. ``gain``: render.retarget.gain, or
    ``sd`` / ``range`` -- per pair, mouth points scaled by the actor's over the driver's spread of
    mouth opening (standard deviation / 5th-95th percentile range), eye and brow points by that of
    eye opening, clipped to [0.5, 3]. ``source``: ``map`` (the retargeting path), or diagnostics that
    are not candidates: ``map, no neutral`` (the driver's own shapes into the map, no transfer of
    the change), ``decoded retrieval mu`` (the retrieved training face's code, decoded -- the k-NN
    lookup), ``retrieval, retargeted shapes`` (real training faces nearest the retargeted shape).
    ``transfer``: render.retarget.transfer; the other levers are measured at 1 (the default before),
    the last three with the new default as well."""

    label: str
    settings: RetargetSettings = DEFAULT
    smooth: int = 1
    gain: float | str = 1.0
    source: str = "map"
    transfer: float = 1.0  # render.retarget.transfer (the levers below were measured at 1, the default then)


VARIANTS = [
    Variant("transfer 1 (the default before)"),
    Variant("transfer 0.75 (the default)", transfer=NEUTRAL_TRANSFER),
    *[Variant(f"transfer {t:g}", transfer=t) for t in (0.5, 0.25)],
    Variant("l2 1", dataclasses.replace(DEFAULT, l2=1.0)),
    Variant("l2 10", dataclasses.replace(DEFAULT, l2=10.0)),
    Variant("smooth 3", smooth=3),
    Variant("smooth 5", smooth=5),
    Variant("l2 1, smooth 3", dataclasses.replace(DEFAULT, l2=1.0), smooth=3),
    Variant("gain 1.5", gain=1.5),
    Variant("gain by spread (sd)", gain="sd"),
    Variant("gain by spread (5-95 %)", gain="range"),
    Variant("l2 1, gain by spread (sd)", dataclasses.replace(DEFAULT, l2=1.0), gain="sd"),
    Variant("transfer 0.75, l2 1", dataclasses.replace(DEFAULT, l2=1.0), transfer=NEUTRAL_TRANSFER),
    Variant("transfer 0.75, smooth 3", smooth=3, transfer=NEUTRAL_TRANSFER),
    Variant("transfer 0.75, gain by spread (sd)", gain="sd", transfer=NEUTRAL_TRANSFER),
    Variant("diagnostic: map, no neutral", source="map, no neutral"),
    Variant("diagnostic: decoded retrieval mu", source="decoded retrieval mu"),
    Variant("diagnostic: retrieval, retargeted shapes", source="retrieval, retargeted shapes"),
]


ONLY = [o for o in os.environ.get("SWEEP_ONLY", "").split(",") if o]  # label substrings to run (all if unset)


def opening_gains(actor_open: np.ndarray, driver_open: np.ndarray, how: str, lo=0.5, hi=3.0) -> torch.Tensor:
    """(68, 1) per-point gain (see Variant)."""
    def spread(x):
        x = x[np.isfinite(x)]
        return x.std() if how == "sd" else np.subtract(*np.percentile(x, [95, 5]))
    g = np.ones((68, 1))
    for col, points in ((1, MOUTH), (0, LEFT_EYE_BROW + RIGHT_EYE_BROW)):
        g[points] = np.clip(spread(actor_open[:, col]) / spread(driver_open[:, col]), lo, hi)
    return torch.as_tensor(g, dtype=torch.float64)


def drive(v: Variant, module, codec, faces, mu, actor_open, drv) -> tuple[np.ndarray, list]:
    """The variant's faces (N, 64, 64, 3) for the driver's kept frames, and the (mouth, eye) gains used."""
    lm = drv["landmarks"]
    norm = normalise_landmarks(lm)
    neutral = neutral_shape(norm)
    if v.source == "decoded retrieval mu":
        return codec.decode(mu[retrieval_index(faces["landmarks"], lm)]), [1.0, 1.0]
    if v.source == "retrieval, retargeted shapes":
        shapes = retarget_shapes(norm, neutral, module.actor_neutral.numpy())
        return faces["data"][retrieval_index(faces["landmarks"], shapes)], [1.0, 1.0]
    if v.source == "map, no neutral":
        module.gain, module.transfer = 1.0, 1.0
        return codec.decode(module.drive(lm, module.actor_neutral.numpy())), [1.0, 1.0]
    if isinstance(v.gain, str):
        module.gain = opening_gains(actor_open, shape_openings(torch.from_numpy(norm)).numpy(), v.gain)
        gains = module.gain[[MOUTH[0], LEFT_EYE_BROW[0]], 0].tolist()
    else:
        module.gain, gains = float(v.gain), [float(v.gain)] * 2
    z = np.full((drv["track"].n, module.latent_dim), np.nan, np.float32)
    module.transfer = v.transfer
    z[drv["rows"]] = module.drive(lm, neutral)
    return codec.decode(smooth_latents(z, drv["track"].kept, v.smooth)[drv["rows"]]), gains


def bench_drivers(work: Path, measure) -> dict:
    """The bench's five drivers (the actors' full clips and tpsmm) from a bench_transfer run folder:
    per driver its track, kept rows, their dlib points, the driver's video and ``measure`` of its crops."""
    drivers = {}
    for b in list(ACTORS) + ["tpsmm"]:
        d = "tpsmm" if b == "tpsmm" else f"{b}full"
        track = DriverTrack(work / f"results/tracks/{d}/{video_of(d)}.h5")
        rows = np.flatnonzero(track.kept)
        drivers[b] = {"track": track, "rows": rows, "mesh": measure(track.read_crops(0, track.n)[rows]),
                      "landmarks": np.asarray(track.landmarks[:])[rows], "video": work / f"results/videos/{d}/{video_of(d)}.mp4"}
    return drivers


def mesh_measure(render: RenderConfig):
    """The score files' face-mesh measure (render.score.upscale, mesh_sharpen): faces (N, 64, 64, 3) ->
    (N, 2) mouth and eye opening ratios, NaN where the mesh finds no face."""
    mesh = MeshInstrument(render.score_upscale)
    return lambda faces: mesh.ratios(sharpen(faces, render.score_mesh_sharpen))


def bench_actor(work: Path, actor: str) -> tuple[dict, Codec, np.ndarray, object]:
    """One trained actor of a workflow run folder: its faces file, codec, the faces' latent means and
    the decoded faces' mouth and eye measure the eye step is decoupled and calibrated with (as rule fit_retarget loads them)."""
    faces_path = work / f"results/faces/{actor}.h5"
    faces = read_faces(faces_path)
    codec = Codec(load_model(work / f"results/models/{actor}/model.pt"))
    return faces, codec, codec.encode(faces["data"]), _dlib_openings(codec, faces, faces_path)


def main() -> None:
    work = Path(os.environ["BENCH_TRANSFER_WORKDIR"]) / "auto"
    render = RenderConfig()
    measure = mesh_measure(render)
    drivers = bench_drivers(work, measure)
    out = []
    t0 = time.perf_counter()
    for a in ACTORS:
        faces, codec, mu, openings_of = bench_actor(work, a)
        actor_open = shape_openings(torch.from_numpy(normalise_landmarks(faces["landmarks"]))).numpy()
        fitted = {}
        for v in [v for v in VARIANTS if not ONLY or any(o in v.label for o in ONLY)]:
            if v.settings not in fitted:
                fitted[v.settings] = fit_and_calibrate(faces["landmarks"], mu, v.settings, openings_of)
            module, report = fitted[v.settings]
            for b, drv in drivers.items():
                if b == a:
                    continue
                faces_out, gains = drive(v, module, codec, faces, mu, actor_open, drv)
                got = measure(faces_out)
                row = {"actor": a, "driver": b, "variant": v.label, "l2": v.settings.l2, "smooth": v.smooth,
                       "gain": str(v.gain), "source": v.source, "gain_mouth": gains[0], "gain_eye": gains[1],
                       "cv_r2": report["cv_r2"], "eye_gain": report.get("eye_gain", 1.0)}
                for j, key in ((0, "mouth"), (1, "eye")):
                    row[f"mesh_{key}"] = pearson(drv["mesh"][:, j], got[:, j])
                row["jitter"] = jitter(got[:, 0], drv["mesh"][:, 0])
                out.append(row)
                print(f"{a} <- {b} {v.label}: mouth {row['mesh_mouth']:.3f} eye {row['mesh_eye']:.3f} "
                      f"jitter {row['jitter']:.2f} gains {gains[0]:.2f}/{gains[1]:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for b, drv in drivers.items():  # the retrieval baseline, per frame (as the score file's)
            if b == a:
                continue
            got = measure(faces["data"][retrieval_index(faces["landmarks"], drv["landmarks"])])
            out.append({"actor": a, "driver": b, "variant": "retrieval", "l2": np.nan, "smooth": 1,
                        "mesh_mouth": pearson(drv["mesh"][:, 0], got[:, 0]), "mesh_eye": pearson(drv["mesh"][:, 1], got[:, 1]),
                        "jitter": jitter(got[:, 0], drv["mesh"][:, 0])})
    table = pd.DataFrame(out)
    res = REPO / "bench" / "results"
    table.to_csv(res / "retarget_sweep.tsv", sep="\t", index=False, float_format="%.4f")
    (res / "retarget_sweep.md").write_text(markdown(table, time.perf_counter() - t0))
    print((res / "retarget_sweep.md").read_text())


def markdown(table: pd.DataFrame, seconds: float) -> str:
    base = table[table.variant == "retrieval"].set_index(["actor", "driver"])
    lines = ["# Retargeting levers (bench/archive/sweep_retarget.py)", "",
             f"The transfer bench's four actors and 16 cross pairs ({seconds / 60:.1f} min). Face-mesh r of the driver's "
             "and the decoded actor's opening series over the kept frames, as the score files measure them; "
             "within 0.05 = pairs whose mouth r is within 0.05 of the retrieval baseline's or above. "
             "Each lever other than transfer is measured at transfer 1 (the default before it), three also at 0.75; "
             "the diagnostics are not candidates (see the script's Variant).", "",
             "| variant | mouth r median | eye r median | mouth r min | within 0.05 of retrieval | jitter median |",
             "|---|---|---|---|---|---|"]
    for label in table.variant.unique():
        t = table[table.variant == label].set_index(["actor", "driver"])
        within = int((t.mesh_mouth >= base.loc[t.index].mesh_mouth - 0.05).sum()) if label != "retrieval" else len(t)
        lines.append(f"| {label} | {t.mesh_mouth.median():.3f} | {t.mesh_eye.median():.3f} | {t.mesh_mouth.min():.3f} | "
                     f"{within} of {len(t)} | {t.jitter.median():.2f} |")
    lines += ["", "Per pair, mouth r (eye r):", "", "| actor | driver | " + " | ".join(table.variant.unique()) + " |",
              "|---|---|" + "---|" * table.variant.nunique()]
    for (a, b), g in table.groupby(["actor", "driver"], sort=False):
        cells = [f"{r.mesh_mouth:.2f} ({r.mesh_eye:.2f})" for r in g.itertuples()]
        lines.append(f"| {a} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
