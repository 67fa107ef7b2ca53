"""The reenactment score files: does the rendered actor make the driver's expression, and stay the actor?

:class:`ScoreMeter` collects, chunk by chunk while a video renders, every per-frame measure:

- mouth- and eye-opening ratios from two instruments (:mod:`facevae.instruments`): MediaPipe's face
  mesh, the *independent* one (no part in driving; applied alike to the driver's 64x64 crop and
  the rendered face), and dlib's 68 points (the driver's series from the track's full-frame
  landmarks, the rendered face's re-measured on it, and the driver's crop through the same
  re-measurement as the instrument's ceiling);
- the same ratios of the retrieval baseline: for each driver frame the actor's own training face
  whose eye and mouth landmarks (centred, in inter-ocular distances) are nearest the driver's --
  a non-learned control the model must come near (:func:`retrieval_index`);
- the amplitude: the rendered opening's s.d. over the retrieval baseline's (:func:`amplitude_ratio`);
- identity: dlib's descriptor of every ``identity_every``-th rendered face against the mean
  descriptor of the actor's training faces and of the driver's crops, all upscaled alike.

:meth:`ScoreMeter.table` gives one row per instrument and measure: the Pearson r with its
chance-level controls (:func:`facevae.expression.transfer_score`), scored frames and their share
of the kept frames (a frame where an instrument finds no face is counted, never silently dropped),
the baseline's r, temporal jitter of both, and the identity columns (the same on every row: they
are per video). :func:`write_score_outputs` writes the TSVs and the plot.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from facevae.atomic import save_figure, write_text
from facevae.expression import interocular_distance, pearson, transfer_score
from facevae.instruments import MeshInstrument, dlib_ratios, face_descriptors, identity_kept, landmark_ratios, sharpen
from facevae.plotting import pyplot

log = logging.getLogger(__name__)

MEASURES = (("mouth_open", 0), ("eye_open", 1))
MIN_SCORED_SHARE = 0.9  # below this share of kept frames a score is flagged in the log


def retrieval_features(landmarks: np.ndarray) -> np.ndarray:
    """Eye and mouth points (36-67) centred on their mean and divided by the inter-ocular distance."""
    lm = np.asarray(landmarks, np.float64)
    pts = lm[:, 36:68]
    iod = interocular_distance(lm)
    return ((pts - pts.mean(axis=1, keepdims=True)) / iod[:, None, None]).reshape(len(lm), -1)


def retrieval_index(actor_landmarks: np.ndarray, driver_landmarks: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each driver frame, the index of the actor face with the nearest :func:`retrieval_features`."""
    fa = retrieval_features(actor_landmarks)
    ok = np.isfinite(fa).all(axis=1)
    fa_ok, where = fa[ok], np.flatnonzero(ok)
    fd = retrieval_features(driver_landmarks)
    out = np.zeros(len(fd), np.int64)
    for i in range(0, len(fd), chunk):
        block = np.nan_to_num(fd[i : i + chunk])
        dist = (block ** 2).sum(1)[:, None] - 2 * block @ fa_ok.T + (fa_ok ** 2).sum(1)[None]
        out[i : i + chunk] = where[np.argmin(dist, axis=1)]
    return out


def amplitude_ratio(series: np.ndarray, reference: np.ndarray) -> float:
    """s.d. of ``series`` over that of ``reference`` on the frames where both are finite: how widely
    the render opens and closes against the retrieval baseline (the actor's own faces chosen for the
    driver's landmarks), same instrument, same frames. r says the mouth moves at the right time; this
    says it moves enough to see (1: as much as the actor's own frames would; near 0: a still mouth)."""
    s, r = np.asarray(series, np.float64), np.asarray(reference, np.float64)
    ok = np.isfinite(s) & np.isfinite(r)
    if ok.sum() < 2 or r[ok].std() <= 1e-12:  # a still baseline: no amplitude to compare with
        return float("nan")
    return float(s[ok].std() / r[ok].std())


def jitter(series: np.ndarray, reference: np.ndarray) -> float:
    """Mean frame-to-frame change of ``series`` over that of ``reference``, on consecutive frames
    where both are finite: 1 moves as much as the driver, above 1 flickers."""
    s, r = np.asarray(series, np.float64), np.asarray(reference, np.float64)
    ds, dr = np.diff(s), np.diff(r)
    ok = np.isfinite(ds) & np.isfinite(dr)
    if ok.sum() < 2 or np.abs(dr[ok]).mean() == 0:
        return float("nan")
    return float(np.abs(ds[ok]).mean() / np.abs(dr[ok]).mean())


class ScoreMeter:
    """Every per-frame measure of one render; feed it with :meth:`add`, read it with :meth:`table`.

    ``actor_descriptor`` is the identity reference: the actor's mean descriptor
    (:func:`facevae.instruments.mean_descriptor` of its training faces). ``cfg`` is a RenderConfig (read:
    ``score_upscale``, ``score_sharpen``, ``score_identity_every``, ``score_identity_threshold``)."""

    def __init__(self, n: int, align_cfg, cfg, actor_descriptor: np.ndarray):
        self.n, self.align, self.cfg = int(n), align_cfg, cfg
        self.mesh = MeshInstrument(cfg.score_upscale)
        nan = lambda: np.full(self.n, np.nan)  # noqa: E731
        self.series = {}
        for key in ("mouth", "eye"):
            for who in ("driver", "actor", "baseline"):
                self.series[f"mesh_{who}_{key}"] = nan()
                self.series[f"dlib_{who}_{key}"] = nan()
            self.series[f"dlib_instrument_{key}"] = nan()
        self.series["identity_actor_distance"] = nan()
        self.series["identity_driver_distance"] = nan()
        self.kept = np.zeros(self.n, bool)
        self.actor_descriptor = np.asarray(actor_descriptor, np.float64)
        self._rendered_desc: dict[int, np.ndarray] = {}
        self._driver_desc: list[np.ndarray] = []

    def add(self, index: np.ndarray, driver_crops, driver_landmarks, rendered, baseline) -> None:
        """Measure the kept frames ``index`` (track rows): the driver's crops and track landmarks,
        the rendered actor faces and the baseline's faces (all aligned 64 px, same order)."""
        index = np.asarray(index)
        if len(index) == 0:
            return
        cfg, s = self.cfg, self.series
        self.kept[index] = True
        for who, faces in (("driver", driver_crops), ("actor", rendered), ("baseline", baseline)):
            # The same unsharp mask on every face the mesh reads (measured on d10's own faces and
            # their reconstructions: mouth r 0.62 plain, 0.72 with amount 1).
            mesh = self.mesh.ratios(sharpen(faces, cfg.score_mesh_sharpen))
            s[f"mesh_{who}_mouth"][index], s[f"mesh_{who}_eye"][index] = mesh[:, 0], mesh[:, 1]
            if who != "driver":
                lm = dlib_ratios(faces, self.align, cfg.score_upscale, cfg.score_sharpen)
                s[f"dlib_{who}_mouth"][index], s[f"dlib_{who}_eye"][index] = lm[:, 0], lm[:, 1]
        track = landmark_ratios(driver_landmarks)
        s["dlib_driver_mouth"][index], s["dlib_driver_eye"][index] = track[:, 0], track[:, 1]
        ceiling = dlib_ratios(driver_crops, self.align, cfg.score_upscale, cfg.score_sharpen)
        s["dlib_instrument_mouth"][index], s["dlib_instrument_eye"][index] = ceiling[:, 0], ceiling[:, 1]
        every = max(1, int(cfg.score_identity_every))
        pick = np.flatnonzero(index % every == 0)
        if len(pick):
            rendered_desc = face_descriptors(rendered[pick], self.align, cfg.score_upscale)
            self._driver_desc.append(face_descriptors(driver_crops[pick], self.align, cfg.score_upscale))
            for row, d in zip(index[pick], rendered_desc):
                self._rendered_desc[int(row)] = d

    def identity(self) -> dict:
        if not self._rendered_desc:
            return {"kept": float("nan"), "actor_distance": float("nan"), "driver_distance": float("nan"), "frames": 0}
        driver_mean = np.concatenate(self._driver_desc).mean(axis=0)
        rows = np.array(sorted(self._rendered_desc))
        desc = np.stack([self._rendered_desc[r] for r in rows])
        out = identity_kept(desc, self.actor_descriptor, driver_mean, self.cfg.score_identity_threshold)
        self.series["identity_actor_distance"][rows] = np.linalg.norm(desc - self.actor_descriptor[None], axis=1)
        self.series["identity_driver_distance"][rows] = np.linalg.norm(desc - driver_mean[None], axis=1)
        return out

    def table(self, seed: int = 0, permutations: int = 1000):
        """One row per (instrument, measure); see the module docstring for the columns."""
        s = self.series
        ident = self.identity()
        kept_frames = int(self.kept.sum())
        rows = []
        for instrument in ("mesh", "dlib"):
            for measure, _ in MEASURES:
                key = measure.split("_")[0]
                d, a, b = s[f"{instrument}_driver_{key}"], s[f"{instrument}_actor_{key}"], s[f"{instrument}_baseline_{key}"]
                score = transfer_score(d, a, seed=seed, permutations=permutations)
                share = score["frames"] / kept_frames if kept_frames else float("nan")
                if kept_frames and share < MIN_SCORED_SHARE:
                    log.warning("%s %s: scored on %d of %d kept frames (%.0f%%): the instrument found no face on the rest",
                                instrument, measure, score["frames"], kept_frames, 100 * share)
                ceiling = s.get(f"{instrument}_instrument_{key}")
                rows.append({
                    "instrument": instrument,
                    "measure": measure,
                    "frames": self.n,
                    "kept_frames": kept_frames,
                    "scored_frames": score["frames"],
                    "scored_share": share,
                    "pearson": score["pearson"],
                    "shuffled_pearson": score["shuffled_pearson"],
                    "shuffled_mean": score["shuffled_mean"],
                    "shuffled_p95": score["shuffled_p95"],
                    "p_shuffle": score["p_shuffle"],
                    "circular_pearson": score["circular_pearson"],
                    "circular_p95": score["circular_p95"],
                    "instrument_pearson": pearson(d, ceiling) if ceiling is not None else np.nan,
                    "baseline_pearson": pearson(d, b),
                    "amplitude_ratio": amplitude_ratio(a, b),
                    "jitter": jitter(a, d),
                    "baseline_jitter": jitter(b, d),
                    "identity_kept": ident["kept"],
                    "identity_frames": ident["frames"],
                    "actor_distance": ident["actor_distance"],
                    "driver_distance": ident["driver_distance"],
                    "driver_mean": float(np.nanmean(d)) if np.isfinite(d).any() else np.nan,
                    "driver_std": float(np.nanstd(d)) if np.isfinite(d).any() else np.nan,
                    "actor_mean": float(np.nanmean(a)) if np.isfinite(a).any() else np.nan,
                    "actor_std": float(np.nanstd(a)) if np.isfinite(a).any() else np.nan,
                    "seed": seed,
                    "permutations": permutations,
                })
        return pd.DataFrame(rows)

    def close(self) -> None:
        self.mesh.close()


def write_score_outputs(outputs, meter: ScoreMeter, track, actor, driver, video, cfg, method: str | None = None) -> dict:
    """The score TSV, per-frame series TSV and plot that ``outputs`` names; returns a summary
    ``{instrument: {measure: {...}}, "identity_kept": ...}``. ``cfg`` is a RenderConfig; ``method``
    the driving method used (``render.drive`` auto resolves to blend or retarget per video)."""
    table = meter.table(cfg.seed, cfg.score_permutations)
    method = method or cfg.drive
    label = f"auto: {method}" if cfg.drive == "auto" else method
    for column, value in (("drive", method), ("video", video), ("driver", driver), ("actor", actor)):
        table.insert(0, column, value)
    if outputs.get("score"):
        write_text(outputs["score"], table.to_csv(sep="\t", index=False, float_format="%.6g"))
    if outputs.get("series"):
        series = pd.DataFrame({"frame": track.frame, "time": track.time, "kept": meter.kept.astype(int), **meter.series})
        write_text(outputs["series"], series.to_csv(sep="\t", index=False, float_format="%.6g"))
    if outputs.get("plot"):
        plot_series(outputs["plot"], track.time, meter.series, table, f"{actor} driven by {driver} ({video}), drive: {label}")
    summary: dict = {"identity_kept": float(table.identity_kept.iloc[0]) if len(table) else float("nan")}
    for row in table.to_dict("records"):
        summary.setdefault(row["instrument"], {})[row["measure"]] = {
            k: row[k] for k in ("pearson", "baseline_pearson", "amplitude_ratio", "shuffled_pearson", "circular_p95",
                                "scored_frames", "scored_share")
        }
    return summary


def plot_series(path, t, series, table, title) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for ax, (measure, _) in zip(axes, MEASURES):
        key = measure.split("_")[0]
        mesh = table[(table.instrument == "mesh") & (table.measure == measure)].iloc[0]
        dl = table[(table.instrument == "dlib") & (table.measure == measure)].iloc[0]
        ax.plot(t, series[f"mesh_driver_{key}"], lw=1.2, label="driver")
        ax.plot(t, series[f"mesh_actor_{key}"], lw=1.2, label="actor (rendered)")
        ax.plot(t, series[f"mesh_baseline_{key}"], lw=0.8, ls=":", color="grey", label="retrieval baseline")
        ax.set_ylabel(f"{measure} (face mesh)")
        ax.set_title(f"{measure}: mesh r = {mesh.pearson:.3f} (baseline {mesh.baseline_pearson:.3f}, circular-shift |r| "
                     f"p95 {mesh.circular_p95:.3f}), amplitude {mesh.amplitude_ratio:.2f} of the baseline's; "
                     f"dlib r = {dl.pearson:.3f}; identity kept {mesh.identity_kept:.0%}",
                     fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
