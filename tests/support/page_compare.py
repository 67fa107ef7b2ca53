"""The page's video-file mode against the pipeline's own driving path on the same clip, judged
with the independent instrument (MediaPipe's face mesh) -- shared by tests/test_page.py (asserts),
bench/perf/bench_page.py (a table row on a model trained with the defaults) and
bench/quality/ci_seeds.py (the test's bar per train.seed).

The pipeline side is what `render.drive retarget` does with the page's settings: the driver's dlib
track with face-api's mouth points (render.retarget.mouth_points faceapi), the actor's retargeting map, the neutral from the same calibration window, PyTorch's decoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from facevae.expression import pearson


def copy_site(workdir: Path, actor: str, driver: str, video: str, folder: Path) -> Path:
    """The actor's built page and the driver's ingested clip (as ``clip.mp4``) copied into ``folder``, to
    serve: serve_page serves no link that leads out of its folder."""
    shutil.copytree(workdir / f"results/explore/{actor}", folder, dirs_exist_ok=True)
    shutil.copyfile(workdir / f"results/videos/{driver}/{video}.mp4", folder / "clip.mp4")
    return folder


def step_through(session, workdir: Path, driver: str, video: str) -> list[dict]:
    """The page's video-file mode stepped through every frame of the served ``clip.mp4`` (see
    :func:`copy_site`) at the driver's frame rate: its log (frame, box, landmarks, crop, image)."""
    fps = json.loads((workdir / f"results/videos/{driver}/{video}.json").read_text())["fps"]
    return session.js("([u, f]) => window.facevae.stepThrough(u, f)", ["clip.mp4", fps])


def mesh_mouth(faces: np.ndarray) -> np.ndarray:
    """Face mesh mouth opening of N x 64 x 64 x 3 uint8 faces (NaN where the mesh finds none)."""
    from facevae.instruments import MeshInstrument

    mesh = MeshInstrument(upscale=4)
    try:
        return mesh.ratios(faces)[:, 0]
    finally:
        mesh.close()


def compare_with_pipeline(log: list[dict], workdir: Path, actor: str, driver: str, video: str, manifest: dict,
                          mouth_points: str = "faceapi") -> dict:
    """``log``: the page's ``stepThrough`` entries (frame, crop, image). Returns the matched frame
    count, the median |page - pipeline| pixel difference (of full scale), the mesh mouth r between
    the two renders with its circular-shift p95 (what the series' smoothness alone gives), each
    render's mouth r with the driver's own crops, face-api's distance from dlib's landmarks, and where
    the renders part: the page against PyTorch's path fed the page's (face-api's) landmarks, and the
    two landmark models' mouth openings against each other and against the driver's mesh mouth."""
    from facevae.driving import driver_landmarks, load_retarget, neutral_shape, normalise_landmarks, retarget_track
    from facevae.faces.io import DriverTrack
    from facevae.instruments import landmark_ratios
    from facevae.modelio import decode, load_model

    model = load_model(workdir / f"results/models/{actor}/model.pt")
    retarget = load_retarget(workdir / f"results/models/{actor}/retarget.pt")
    calibration = manifest["drive"]["calibration_seconds"]
    with DriverTrack(workdir / f"results/tracks/{driver}/{video}.h5") as track:
        # The drivers' points as rule reenact takes them (render.retarget.mouth_points, default faceapi:
        # dlib's with face-api's mouth; the weights are the page's own copy).
        points = driver_landmarks(track, mouth_points, workdir / f"results/videos/{driver}/{video}.mp4",
                                  workdir / f"results/explore/{actor}/vendor/face-api/model")
        z, _ = retarget_track(retarget, track, neutral=[0, calibration], gain=manifest["drive"]["gain"],
                              transfer=manifest["drive"]["transfer"], landmarks=points)
        by_frame = {int(f): i for i, f in enumerate(track.frame)}
        pairs = [(e, by_frame[e["frame"]]) for e in log if e.get("image") and e["frame"] in by_frame
                 and track.kept[by_frame[e["frame"]]]]
        rows = [r for _, r in pairs]
        dlib_crop = np.asarray(track.landmarks[:], np.float64)[rows] * (64 / track.crop_size)
        driver_faces = np.concatenate([track.read_crops(i, i + 1) for i in rows])
        times = np.asarray(track.time[:], np.float64)[rows]
        kept = int(track.kept.sum())
    page_faces = np.asarray([e["image"] for e, _ in pairs], np.uint8).reshape(-1, 64, 64, 3)
    pipeline_faces = decode(model, z[rows])
    diff = np.abs(page_faces.astype(np.int16) - pipeline_faces.astype(np.int16))
    page_mouth, pipeline_mouth, driver_mouth = mesh_mouth(page_faces), mesh_mouth(pipeline_faces), mesh_mouth(driver_faces)
    shifted = [pearson(np.roll(page_mouth, k), pipeline_mouth) for k in range(15, len(page_mouth) - 15)]
    # face-api's landmarks against dlib's, both in the 64-px crop, per inter-ocular distance.
    page_crop = np.asarray([e["crop"] for e, _ in pairs])
    err = np.linalg.norm(normalise_landmarks(page_crop) - normalise_landmarks(dlib_crop), axis=2)
    # Where the two renders part: PyTorch's driving path fed face-api's landmarks (the page's) instead
    # of dlib's (the same transfer and gain as retarget_track above; the same calibration window
    # as the page's stepThrough). If it follows the page, the renders differ by the landmark model.
    page_neutral = neutral_shape(normalise_landmarks(page_crop), times, (0, calibration))
    pytorch_on_page_lm = decode(model, retarget.drive(page_crop, page_neutral, manifest["drive"]["transfer"],
                                                      manifest["drive"]["gain"]))
    page_open, dlib_open = landmark_ratios(page_crop)[:, 0], landmark_ratios(dlib_crop)[:, 0]
    return {
        "frames": len(pairs), "kept": kept, "median_diff": float(np.median(diff)) / 255,
        "mouth_r": pearson(page_mouth, pipeline_mouth), "shift_p95": float(np.percentile(shifted, 95)),
        "page_transfer": pearson(page_mouth, driver_mouth), "pipeline_transfer": pearson(pipeline_mouth, driver_mouth),
        "page_vs_pytorch_on_page_landmarks": pearson(page_mouth, mesh_mouth(pytorch_on_page_lm)),
        "landmark_mouth_r": pearson(page_open, dlib_open),
        "faceapi_driver_r": pearson(page_open, driver_mouth), "dlib_driver_r": pearson(dlib_open, driver_mouth),
        "landmarks": {"all": float(err.mean()), "median": float(np.median(err)), "mouth": float(err[:, 48:].mean()),
                      "eyes": float(err[:, 36:48].mean()), "jaw": float(err[:, :17].mean())},
    }
