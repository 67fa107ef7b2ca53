"""How much should the brows weigh in the retargeting map (render.retarget.brow_weight)?

Issue 13's video-file bar asks the page's render to follow the pipeline's (mouth series r >= 0.8),
and bench/archive/page_gap.py found why it does not: the page has face-api's 68 points only, and face-api's
brows, read by the map together with the mouth, move the decoded mouth. This sweep refits every
bench actor's map at each brow weight (driving.fit_and_calibrate, as rule fit_retarget fits it) and
drives the 16 cross pairs twice -- with the pipeline's points (the track's dlib points, face-api's
mouth: render.retarget.mouth_points faceapi) and with face-api's 68 (the page's landmark model through
its PyTorch port, facevae.faces.faceapi_landmarks.track_landmarks, in boxes around the track's points
-- not the page's own tracking, whose points differ more: a simulation of the page) -- plus each
actor's own held-out rest through the own-clip blend (render.self_blend), the encoder, and a
prototype not kept (the encoder's z stepped by the map's read-out: lower on d3 and d13). Decoded
faces are read by the face mesh as the score files read them; dlib re-measures the mouth as the
score's dlib column does.

Columns: cross medians of mesh mouth / eye r and dlib mouth r (pipeline points), pairs within 0.05 of
the retrieval baseline's mesh mouth r, the page-vs-pipeline mouth series r (median and min over the
16 pairs), and the own clips' blend mouth r beside the encoder's.

Writes bench/results/brow_weight.md (and .tsv). Run: BENCH_TRANSFER_WORKDIR=<dir> .venv/bin/python bench/archive/sweep_brow_weight.py
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

from bench_transfer import ACTORS  # noqa: E402
from facevae.driving import (NEUTRAL_TRANSFER, RetargetSettings, blend_latents, encode_track, fit_and_calibrate,  # noqa: E402
                             neutral_shape, normalise_landmarks, shape_openings)
from facevae.expression import pearson  # noqa: E402
from facevae.faces.faceapi_landmarks import load_faceapi_landmark_net, track_landmarks, with_faceapi_mouth  # noqa: E402
from facevae.faces.io import DriverTrack, align_config_of  # noqa: E402
from facevae.instruments import dlib_ratios  # noqa: E402
from facevae.render import RenderConfig  # noqa: E402
from facevae.scoring import retrieval_index  # noqa: E402
from sweep_retarget import bench_actor, bench_drivers, mesh_measure  # noqa: E402

WEIGHTS = [float(w) for w in os.environ.get("SWEEP_BROW_WEIGHTS", "1,0.5,0.25,0").split(",")]


def brow_variants() -> dict[str, RetargetSettings]:
    """This sweep's settings: the defaults at each brow weight (label -> settings; the other sweeps
    that drive bench_rows and ci_pair pass their own)."""
    return {f"brow weight {w:g}": dataclasses.replace(RetargetSettings(), brow_weight=w) for w in WEIGHTS}


def readout_step(module, z, landmarks) -> np.ndarray:
    """Prototype (not a candidate yet): the encoder's z stepped by the map's read-out toward the
    retargeted shape's openings, i.e. LandmarkRetarget.forward's last step applied to z."""
    with torch.no_grad():
        lm = torch.as_tensor(np.asarray(landmarks, np.float64))
        neutral = torch.as_tensor(neutral_shape(normalise_landmarks(landmarks)))
        neutral = module.transfer * neutral + (1 - module.transfer) * module.actor_neutral
        shapes = module.actor_neutral[None] + module.gain * (module.normalise(lm) - neutral[None])
        zt = torch.as_tensor(np.asarray(z, np.float64))
        if not module.has_readout:
            return zt.float().numpy()
        target = torch.minimum(torch.maximum(shape_openings(shapes), module.readout_lo), module.readout_hi)
        miss = target - ((zt - module.z_mean) @ module.readout_w + module.readout_y)
        return (zt + miss @ module.readout_steps).float().numpy()


def ci_pair(work: Path, measure, transfer: float, self_blend: float, variants: dict[str, RetargetSettings]) -> list[dict]:
    """The CI pipeline's pairs (a run folder of the test config: d6 <- tpsmm and d6 <- d6rest) with each
    of ``variants``' settings: mesh mouth / eye r of the cross pair with the pipeline's points, the page's
    simulated (face-api's 68 as its tracking runs the net) and page vs pipeline with the neutral from
    the page's calibration window on both sides, as tests/support/page_compare.py compares them; and
    the own clip's blend."""
    import json

    import yaml

    seed = int(((yaml.safe_load((work / "config.yaml").read_text()) or {}).get("train") or {}).get("seed", 0))
    net = load_faceapi_landmark_net(work / "results/weights/face-api")
    faces, codec, mu, openings_of = bench_actor(work, "d6")
    calibration = json.loads((work / "results/explore/d6/page.json").read_text())["drive"]["calibration_seconds"]
    tracks = {}
    for name, video in (("tpsmm", "driving"), ("d6rest", "rest")):
        with DriverTrack(work / f"results/tracks/{name}/{video}.h5") as track:
            rows = np.flatnonzero(track.kept)
            page = track_landmarks(track, work / f"results/videos/{name}/{video}.mp4", net, rows)
            tracks[name] = {"rows": rows, "mesh": measure(track.read_crops(0, track.n)[rows]), "page": page,
                            "pipeline": with_faceapi_mouth(np.asarray(track.landmarks[:])[rows], page),
                            "time": np.asarray(track.time[:])[rows], "encoder": encode_track(codec, track)[rows]}
    out = []
    for label, settings in variants.items():
        module, _ = fit_and_calibrate(faces["landmarks"], mu, settings, openings_of)
        module.transfer = transfer
        cross, own = tracks["tpsmm"], tracks["d6rest"]
        row = {"actor": f"ci d6 seed {seed}", "driver": "tpsmm", "variant": label, "brow_weight": settings.brow_weight}
        got = measure(codec.decode(module.drive(cross["pipeline"], neutral_shape(normalise_landmarks(cross["pipeline"])))))
        row["pipeline_mesh_mouth"], row["pipeline_mesh_eye"] = (pearson(cross["mesh"][:, j], got[:, j]) for j in (0, 1))
        series = {}
        for side in ("pipeline", "page"):
            lm = cross[side]
            neutral = neutral_shape(normalise_landmarks(lm), cross["time"], (0.0, calibration))
            series[side] = measure(codec.decode(module.drive(lm, neutral)))[:, 0]
        row["page_mesh_mouth"] = pearson(cross["mesh"][:, 0], series["page"])
        row["page_vs_pipeline"] = pearson(series["pipeline"], series["page"])
        z_own = module.drive(own["pipeline"], neutral_shape(normalise_landmarks(own["pipeline"])))
        blend = measure(codec.decode(blend_latents(own["encoder"], z_own, self_blend)))
        row["own_blend_mouth"] = pearson(own["mesh"][:, 0], blend[:, 0])
        out.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    return out


def main() -> None:
    torch.set_num_threads(2)
    render = RenderConfig()
    transfer = render.retarget.get("transfer", NEUTRAL_TRANSFER)
    measure = mesh_measure(render)
    t0 = time.perf_counter()
    table = sweep(brow_variants(), measure, transfer, render.self_blend, t0)
    dest = REPO / "bench/results" / os.environ.get("SWEEP_OUT", "brow_weight")
    table.to_csv(dest.with_suffix(".tsv"), sep="\t", index=False, float_format="%.4f")
    dest.with_suffix(".md").write_text(markdown(table, time.perf_counter() - t0))
    print(dest.with_suffix(".md").read_text())


def sweep(variants: dict[str, RetargetSettings], measure, transfer: float, self_blend: float, t0: float) -> pd.DataFrame:
    """The bench's rows (BENCH_TRANSFER_WORKDIR) and the CI pipeline's (SWEEP_CI_WORKDIR) for each variant."""
    out = bench_rows(Path(os.environ["BENCH_TRANSFER_WORKDIR"]) / "auto", measure, transfer, self_blend, t0, variants) \
        if os.environ.get("BENCH_TRANSFER_WORKDIR") else []
    ci_rows = [row for ci in os.environ.get("SWEEP_CI_WORKDIR", "").split(os.pathsep) if ci
               for row in ci_pair(Path(ci), measure, transfer, self_blend, variants)]
    return pd.DataFrame(out + ci_rows)


def bench_rows(work: Path, measure, transfer: float, self_blend: float, t0: float,
               variants: dict[str, RetargetSettings]) -> list[dict]:
    """The bench's 16 cross pairs and 4 own clips with each of ``variants``' settings (see the module's docstring)."""
    net = load_faceapi_landmark_net(work / "results/weights/face-api")
    drivers = bench_drivers(work, measure)
    for drv in drivers.values():
        page = track_landmarks(drv["track"], drv["video"], net, drv["rows"])
        drv["points"] = {"pipeline": with_faceapi_mouth(drv["landmarks"], page), "page": page}
        drv["dlib_mouth"] = shape_openings(torch.from_numpy(normalise_landmarks(drv["landmarks"]))).numpy()[:, 1]
    print(f"drivers' face-api points: {time.perf_counter() - t0:.0f} s", flush=True)
    out = []
    for a in ACTORS:
        faces, codec, mu, openings_of = bench_actor(work, a)
        size = int(faces["data"].shape[1])
        align = align_config_of(faces.get("attrs") or {}, size, work / f"results/faces/{a}.h5", size)
        with DriverTrack(work / f"results/tracks/{a}rest/rest.h5") as own:
            own_rows = np.flatnonzero(own.kept)
            own_mesh = measure(own.read_crops(0, own.n)[own_rows])
            own_points = with_faceapi_mouth(np.asarray(own.landmarks[:])[own_rows],
                                            track_landmarks(own, work / f"results/videos/{a}rest/rest.mp4", net,
                                                            own_rows))
            z_encoder = encode_track(codec, own)[own_rows]
        encoder_r = pearson(own_mesh[:, 0], measure(codec.decode(z_encoder))[:, 0])
        for label, settings in variants.items():
            w = settings.brow_weight
            module, report = fit_and_calibrate(faces["landmarks"], mu, settings, openings_of)
            module.transfer = transfer
            z_own = module.drive(own_points, neutral_shape(normalise_landmarks(own_points)))
            blend = measure(codec.decode(blend_latents(z_encoder, z_own, self_blend)))
            steered = measure(codec.decode(readout_step(module, z_encoder, own_points)))
            out.append({"actor": a, "driver": "own", "variant": label, "brow_weight": w, "mesh_mouth": pearson(own_mesh[:, 0], blend[:, 0]),
                        "mesh_eye": pearson(own_mesh[:, 1], blend[:, 1]), "encoder_mouth": encoder_r,
                        "steered_mouth": pearson(own_mesh[:, 0], steered[:, 0]),
                        "steered_eye": pearson(own_mesh[:, 1], steered[:, 1])})
            for b, drv in drivers.items():
                if b == a:
                    continue
                row = {"actor": a, "driver": b, "variant": label, "brow_weight": w, "cv_r2": report["cv_r2"]}
                series = {}
                for side, lm in drv["points"].items():
                    decoded = codec.decode(module.drive(lm, neutral_shape(normalise_landmarks(lm))))
                    got = measure(decoded)
                    series[side] = got[:, 0]
                    row[f"{side}_mesh_mouth"] = pearson(drv["mesh"][:, 0], got[:, 0])
                    row[f"{side}_mesh_eye"] = pearson(drv["mesh"][:, 1], got[:, 1])
                    if side == "pipeline":
                        row["dlib_mouth"] = pearson(drv["dlib_mouth"], dlib_ratios(decoded, align)[:, 0])
                row["page_vs_pipeline"] = pearson(series["pipeline"], series["page"])
                retrieved = measure(faces["data"][retrieval_index(faces["landmarks"], drv["landmarks"])])
                row["retrieval_mouth"] = pearson(drv["mesh"][:, 0], retrieved[:, 0])
                out.append(row)
                print(f"{a} <- {b} {label}: pipeline {row['pipeline_mesh_mouth']:.3f} / {row['pipeline_mesh_eye']:.3f}, "
                      f"page {row['page_mesh_mouth']:.3f}, page vs pipeline {row['page_vs_pipeline']:.3f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def markdown(table: pd.DataFrame, seconds: float) -> str:
    lines = ["# Brow weight of the retargeting map (bench/archive/sweep_brow_weight.py)", "",
             f"The transfer bench's four actors ({seconds / 60:.1f} min on {os.cpu_count()} CPU cores): 16 cross pairs driven "
             "with the pipeline's points (dlib, face-api's mouth) and with the page's (face-api's 68); own = the actor's "
             "held-out rest through the own-clip blend. Face-mesh r of driver and decoded actor over the kept frames, as "
             "the score files measure them; dlib mouth r as the score's dlib column; page vs pipeline = r of the two "
             "renders' mesh mouth series (issue 13's video-file bar: 0.8).", "",
             "| brow weight | cross mouth r | cross eye r | cross dlib mouth r | within 0.05 of retrieval | mouth r min | "
             "page vs pipeline median (min) | page's mouth r | own blend mouth r (encoder; encoder + read-out step) |",
             "|---|---|---|---|---|---|---|---|---|"]
    bench = table[~table.actor.str.startswith("ci d6")]
    for w in sorted(bench.brow_weight.unique(), reverse=True):
        t = bench[bench.brow_weight == w]
        cross, own = t[t.driver != "own"], t[t.driver == "own"]
        within = int((cross.pipeline_mesh_mouth >= cross.retrieval_mouth - 0.05).sum())
        own_cells = ", ".join(f"{r.actor} {r.mesh_mouth:.3f} ({r.encoder_mouth:.3f}; stepped {r.steered_mouth:.3f})"
                              for r in own.itertuples())
        lines.append(f"| {w:g} | {cross.pipeline_mesh_mouth.median():.3f} | {cross.pipeline_mesh_eye.median():.3f} | "
                     f"{cross.dlib_mouth.median():.3f} | {within} of {len(cross)} | {cross.pipeline_mesh_mouth.min():.3f} | "
                     f"{cross.page_vs_pipeline.median():.3f} ({cross.page_vs_pipeline.min():.3f}) | "
                     f"{cross.page_mesh_mouth.median():.3f} | {own_cells} |")
    ci = table[table.actor.str.startswith("ci d6")]
    if len(ci):
        lines += ["", "The CI pipeline's d6 (SWEEP_CI_WORKDIR: run folders of the test config, one per train.seed, "
                  "separated by ':'): tpsmm drives it with the pipeline's points and with the page's (neutral from the "
                  "page's calibration window on both sides, as the page test compares them); own = d6rest through the "
                  "blend. The page column is a simulation (the port's face-api points, in boxes around dlib's): the "
                  "browser's own points, in tests/test_page.py on the seed-0 model, gave page vs pipeline 0.628 at "
                  "weight 1 and 0.683 at 0.5 -- the simulation overrates how alike the two sides' points are.", "",
                  "| model | brow weight | cross mouth r | cross eye r | page's mouth r | page vs pipeline | own blend mouth r |",
                  "|---|---|---|---|---|---|---|"]
        for r in ci.sort_values(["actor", "brow_weight"], ascending=[True, False]).itertuples():
            lines.append(f"| {r.actor.removeprefix('ci ')} | {r.brow_weight:g} | {r.pipeline_mesh_mouth:.3f} | {r.pipeline_mesh_eye:.3f} | "
                         f"{r.page_mesh_mouth:.3f} | {r.page_vs_pipeline:.3f} | {r.own_blend_mouth:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
