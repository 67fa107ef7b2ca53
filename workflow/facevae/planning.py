"""Rule planning, in one light module: what each stage builds (targets, output patterns), which
files a rule reads (input functions), the (actor, driver) pairs, and the config settings each rule
depends on (its params: changing one re-runs exactly the jobs that read it).

The `.smk` files import it at parse time, so it imports nothing heavy (no torch, cv2, h5py, dlib,
numpy; tests/test_planning.py checks in a fresh interpreter), and stage modules never hold planning.
Sections follow the stages: faces, training, CelebA, attributes, reenactment, exploring, the page,
the report.
"""

from __future__ import annotations

import os
import re

from facevae import FacevaeError
from facevae.config import people

# ----------------------------------------------------------------------------------------- faces

#: Keys of ``faces`` that only the per-person assembly reads: changing them must not redo tracks.
_DATASET_ONLY = ("fps",)
_DATASET_ONLY_FILTERS = ("duplicate",)


def _is_url(source: str) -> bool:
    return bool(re.match(r"^https?://", source or ""))


def track_settings(config: dict) -> dict:
    """The ``faces`` section without the keys that only affect the training-set assembly."""
    faces = {k: v for k, v in (config.get("faces") or {}).items() if k not in _DATASET_ONLY}
    faces["filters"] = {k: v for k, v in (faces.get("filters") or {}).items() if k not in _DATASET_ONLY_FILTERS}
    return faces


def faces_people(config: dict) -> dict:
    everyone = people(config)
    actors = config.get("actors") or {}
    dataset = {a: e["dataset"] for a, e in actors.items() if (e or {}).get("dataset")}
    return {
        "people": {p: {"person": p, "role": e["role"], "reference": e.get("reference")} for p, e in everyone.items()},
        "reference_input": {p: [e["reference"]] if e.get("reference") else [] for p, e in everyone.items()},
        "exclude": {p: dict(e.get("exclude") or {}) for p, e in everyone.items()},
        "track_settings": track_settings(config),
        "video_actors": sorted(a for a in actors if a not in dataset),
        "dataset_actors": sorted(dataset),
        "drivers": sorted(config.get("drivers") or {}),
        "dataset": dataset,
        "dataset_input": {a: [] if _is_url(src) else [src] for a, src in dataset.items()},
    }


def faces_tracks(config: dict, person: str) -> list[str]:
    videos = sorted((people(config)[person].get("videos") or {}))
    return [f"results/tracks/{person}/{video}.h5" for video in videos]


def name_pattern(names: list[str]) -> str:
    """A wildcard constraint matching exactly these names (names are [A-Za-z0-9_-] only)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


def faces_person_targets(config: dict) -> list[str]:
    info = faces_people(config)
    targets = []
    for person, entry in sorted(people(config).items()):
        targets += faces_tracks(config, person)
        report = ["kept.png", "counts.json"]
        if person in info["dataset"]:
            targets.append(f"results/faces/{person}.h5")
        else:
            report += ["table.tsv", "rejected.png"]
            if entry["role"] == "actor":
                targets.append(f"results/faces/{person}.h5")
        targets += [f"results/faces/{person}/{name}" for name in report]
    return targets


# -------------------------------------------------------------------------------------- training

FEATURENET = "results/featurenet/featurenet.pt"


def actor_names(config: dict) -> list[str]:
    return sorted(config.get("actors") or {})


def train_settings(config: dict) -> dict:
    """The ``train:`` section (defaults filled in by validation): the rule's params, so editing it re-runs training."""
    return dict(config.get("train") or {})


def featurenet_settings(config: dict) -> dict:
    return dict(config.get("featurenet") or {})


def feature_net_input(config: dict) -> list[str]:
    """The DFC feature network a training job needs: the user's file, the workflow's, or none."""
    train = config.get("train") or {}
    if train.get("model") != "dfc":
        return []
    user = (train.get("dfc") or {}).get("feature_net")
    return [user] if user else [FEATURENET]


# ---------------------------------------------------------------------------------------- celeba

def celeba_section(config: dict) -> dict:
    """The config's ``celeba:`` section, or one clear error when a CelebA output is asked without it."""
    if not config.get("celeba"):
        raise FacevaeError(
            "results/celeba/aligned.h5 needs a `celeba:` section in the config "
            "(images, attributes, optional identities and limit): see docs/config.md"
        )
    return config["celeba"]


def celeba_inputs(config: dict) -> list[str]:
    """The attribute (and identity) lists: rule inputs, so editing them re-runs the alignment."""
    celeba = celeba_section(config)
    return [celeba["attributes"]] + ([celeba["identities"]] if celeba.get("identities") else [])


#: The keys of the ``faces:`` section that decide how a face is detected and cropped.
ALIGNMENT_KEYS = ("aligner", "device", "face_alignment", "size", "template_scale", "template_offset_y", "align_points")


def alignment_settings(config: dict) -> dict:
    """The part of the ``faces:`` section that CelebA's alignment depends on (a rule param: only a
    change of aligner or template re-aligns CelebA, not the actors' sampling or filters)."""
    faces = config.get("faces") or {}
    return {k: faces[k] for k in ALIGNMENT_KEYS if k in faces}


# ------------------------------------------------------------------------------------ attributes

DEFAULTS = {
    "edit": ["Smiling", "Eyeglasses", "Mouth_Slightly_Open", "Male"],
    "amounts": [0.0, 1.5, 3.0, 4.5, 6.0],
    "rows": 4,
    "orthogonalise": ["Smiling", "Mouth_Slightly_Open", "Male", "Eyeglasses"],
    "pca_components": 8,
    "pca_steps": [-3.0, -1.5, 0.0, 1.5, 3.0],
    "probe_folds": 5,
    "probe_l2": 0.01,
    "mouth_faces": 100,
    "random_vectors": 8,
    "seed": 0,
}


def settings_of(config_section: dict | None) -> dict:
    """The ``attributes:`` config section with every default filled in."""
    out = dict(DEFAULTS)
    out.update({k: v for k, v in (config_section or {}).items() if v is not None})
    return out


def drivers_of(config: dict, actor: str) -> list[str]:
    """The people that drive ``actor``: the reenactment pairs' (:func:`reenact_pairs`, the one
    definition: ``reenact: []`` means none, no ``reenact`` key every actor with every driver)."""
    return sorted({d for a, d in reenact_pairs(config) if a == actor})


def driver_face_files(config: dict, actor: str) -> dict[str, list[str]]:
    """Per driver of ``actor``, the files its faces come from: its tracks (one per video), or the
    faces file of an actor-driver given as a dataset without videos."""
    found = {}
    for driver in drivers_of(config, actor):
        entry = (config.get("actors") or {}).get(driver) or (config.get("drivers") or {}).get(driver) or {}
        videos = sorted(entry.get("videos") or {})
        found[driver] = [f"results/tracks/{driver}/{v}.h5" for v in videos] if videos else [f"results/faces/{driver}.h5"]
    return found


def edit_outputs(config: dict, actor: str = "{actor}") -> list[str]:
    """Every file the attributes_edits rule writes for ``actor`` (a wildcard pattern by default)."""
    settings = settings_of(config.get("attributes"))
    names = [f"add_{a}.png" for a in settings["edit"]]
    names += [f"orth_{a}.png" for a in settings["orthogonalise"]]
    names += [f"pca_{k}.png" for k in range(1, int(settings["pca_components"]) + 1)]
    names += ["mouth.tsv", "mouth.png"]
    return [f"results/attributes/{actor}/{name}" for name in names]


def edit_caption(path: str) -> str:
    """The report caption (report/<name>.rst) of an edit output: add_, orth_, pca_ grids or the mouth curve."""
    name = os.path.basename(path)
    return "attributes_" + ("mouth" if name.startswith("mouth") else name.split("_")[0])


def attribute_targets(config: dict) -> list[str]:
    """The final outputs of the attribute stage (none without a ``celeba:`` section)."""
    if not config.get("celeba"):
        return []
    out = []
    for actor in sorted(config["actors"]):
        out += [f"results/attributes/{actor}.h5", f"results/attributes/{actor}/probe.tsv",
                f"results/attributes/{actor}/probe.png"]
        out += edit_outputs(config, actor)
    return out


#: ``attributes:`` keys the attributes_vectors rule depends on (the rest only change the pictures).
VECTOR_KEYS = ("orthogonalise", "pca_components", "probe_folds", "probe_l2", "seed")


def vector_settings(config: dict) -> dict:
    """The ``attributes:`` settings of the attributes_vectors rule (a rule param: changing a grid
    setting does not re-encode CelebA)."""
    settings = settings_of(config.get("attributes"))
    return {k: settings[k] for k in VECTOR_KEYS}


def edit_settings(config: dict) -> dict:
    """The ``attributes:`` settings of the attributes_edits rule."""
    return settings_of(config.get("attributes"))


# ------------------------------------------------------------------- reenactment, exploring, page

REENACT_DIR = "results/reenact/{actor}/{driver}"
EXPLORE_DIR = "results/explore/{actor}"


def reenact_pairs(config: dict) -> list[tuple[str, str]]:
    """The (actor, driver) pairs to render: ``reenact`` when given, else every actor with every driver."""
    if config.get("reenact") is not None:
        pairs = [(p["actor"], p["driver"]) for p in config["reenact"]]
    else:
        pairs = [(a, d) for a in (config.get("actors") or {}) for d in (config.get("drivers") or {})]
    return list(dict.fromkeys(pairs))  # unique, in order


def driver_videos(config: dict, driver: str) -> list[str]:
    """The video names of a driver (a driver or an actor: cross-reenactment)."""
    entry = (config.get("drivers") or {}).get(driver) or (config.get("actors") or {}).get(driver) or {}
    return sorted(entry.get("videos") or {})


def reenact_outputs(config: dict) -> dict[str, str]:
    """Named output patterns of one reenactment job (wildcards actor, driver, video)."""
    base = REENACT_DIR + "/{video}"
    outputs = {
        "video": base + ".mp4",
        "score": base + ".tsv",
        "series": base + ".series.tsv",
        "plot": base + ".expression.png",
        "sheet": base + ".sheet.png",
    }
    if (config.get("render") or {}).get("paste_back"):
        outputs["paste"] = base + ".paste.mp4"
    return outputs


#: The most the render's chunk of full-resolution driver frames may hold (layout grid or
#: paste_back). 256 frames per chunk held ~24.9 MB each at 4K: ~6.4 GB, ~26 GB at 8K.
RENDER_FRAME_BUFFER_BYTES = 512 << 20
# What one reenact job holds besides the frame chunk, MB: Python, torch, the model, the score's
# instruments (dlib, face-api's net, MediaPipe) -- the 4000 MB the SLURM profile gave every job ran
# the 480p renders; this keeps that as the floor. A full-resolution paste_back video adds its x264
# encoder's frames (lookahead, reference and threads' frames: ~60 frames of 1.5 bytes a pixel) and
# the frames in flight (the frame, the pasted frame, the panels: ~8 of 3 bytes a pixel).
# ESTIMATES from the formula, not yet measured: bench/perf/bench_render.py should record peak RSS at
# 1080p and 4K (issue 39, item 7) and these constants follow the measurement.
RENDER_BASE_MB = 4000
RENDER_ENCODER_FRAMES = 60
RENDER_FRAMES_IN_FLIGHT = 8
RENDER_ASSUMED_SIZE = (3840, 2160)  # before ingest wrote the driver's meta (Snakemake re-evaluates after)


def reenact_mem_mb(meta_path, render: dict) -> int:
    """mem_mb of one reenact job (rules/reenact.smk), from the driver's resolution in its ingest
    meta JSON and the render settings: a cluster scheduler gets what the job holds at 4K or 8K."""
    import json

    try:
        with open(meta_path) as handle:
            meta = json.load(handle)
        width, height = int(meta["width"]), int(meta["height"])
    except (OSError, ValueError, KeyError, TypeError):
        width, height = RENDER_ASSUMED_SIZE
    pixels = width * height
    mb = RENDER_BASE_MB * 2**20
    full_frames = (render or {}).get("layout") == "grid" or bool((render or {}).get("paste_back"))
    if full_frames:
        mb += min(RENDER_FRAME_BUFFER_BYTES, 256 * 3 * pixels) + RENDER_FRAMES_IN_FLIGHT * 3 * pixels
    if (render or {}).get("paste_back"):
        mb += RENDER_ENCODER_FRAMES * 1.5 * pixels
    return int(-(-mb // (100 * 2**20)) * 100)  # whole hundreds of MB, rounded up


def reenact_attributes(config: dict, actor: str) -> list[str]:
    """The actor's CelebA attribute vectors, an input only when ``render.edit`` asks for them."""
    return [f"results/attributes/{actor}.h5"] if (config.get("render") or {}).get("edit") else []


RETARGET_OUTPUTS = {
    "map": "results/models/{actor}/retarget.pt",
    "table": "results/models/{actor}/retarget.tsv",
}
# The render.retarget keys the fitted map depends on (the others -- neutral, gain, transfer -- are applied
# at render time), so changing a render-time key re-renders without refitting.
RETARGET_FIT_KEYS = ("features", "map", "bandwidth", "l2", "max_centres", "folds", "readout", "eye_gain_max",
                     "brow_weight", "eye_keeps_mouth")


def drives_by_retargeting(config: dict) -> bool:
    """render.drive retarget or blend, or auto (which retargets every driver who is not the actor
    and blends for the actor's own clips)."""
    return ((config.get("render") or {}).get("drive") or "auto") in ("auto", "retarget", "blend")


def retarget_fit_settings(config: dict) -> dict:
    """The ``render.retarget`` keys rule fit_retarget depends on."""
    section = (config.get("render") or {}).get("retarget") or {}
    return {k: section[k] for k in RETARGET_FIT_KEYS if k in section}


def reenact_retarget(config: dict, actor: str) -> list[str]:
    """The actor's retargeting map, an input when ``render.drive`` may retarget."""
    return [RETARGET_OUTPUTS["map"].format(actor=actor)] if drives_by_retargeting(config) else []


FACEAPI_WEIGHTS = {
    "manifest": "results/weights/face-api/face_landmark_68_model-weights_manifest.json",
    "weights": "results/weights/face-api/face_landmark_68_model.bin",
}


def reenact_faceapi(config: dict) -> list[str]:
    """face-api's landmark weights (rule faceapi_weights), an input when the drive may retarget with
    render.retarget.mouth_points faceapi."""
    mouth = ((config.get("render") or {}).get("retarget") or {}).get("mouth_points", "faceapi")
    return list(FACEAPI_WEIGHTS.values()) if drives_by_retargeting(config) and mouth == "faceapi" else []


def reenact_targets(config: dict) -> list[str]:
    """Every file of every reenactment job."""
    patterns = reenact_outputs(config)
    return [
        pattern.format(actor=actor, driver=driver, video=video)
        for actor, driver in reenact_pairs(config)
        for video in driver_videos(config, driver)
        for pattern in patterns.values()
    ]


EXPLORE_OUTPUTS = {
    "walk": EXPLORE_DIR + "/walk.mp4",
    "interpolate": EXPLORE_DIR + "/interpolate.mp4",
    "samples": EXPLORE_DIR + "/samples.png",
}


def explore_targets(config: dict) -> list[str]:
    return [p.format(actor=actor) for actor in (config.get("actors") or {}) for p in EXPLORE_OUTPUTS.values()]


# The actor's browser page (rules/page.smk): models and description, then the page with its runtime.
PAGE_MODEL_OUTPUTS = {
    "decoder": EXPLORE_DIR + "/decoder.onnx",
    "drive": EXPLORE_DIR + "/drive.onnx",
    "manifest": EXPLORE_DIR + "/page.json",
}
PAGE_INDEX = EXPLORE_DIR + "/index.html"
PAGE_VENDOR = EXPLORE_DIR + "/vendor"


def page_attributes(config: dict, actor: str) -> list[str]:
    """The actor's CelebA attribute vectors, an input of the page when the attribute stage runs."""
    return [f"results/attributes/{actor}.h5"] if config.get("celeba") else []


def page_model_settings(config: dict) -> dict:
    """What rule page_models depends on: the page: section, the crop geometry, the retarget gain and
    neutral transfer, and the attribute directions offered (attributes.edit)."""
    from_page = {k: v for k, v in (config.get("page") or {}).items() if k != "build"}
    return {
        **from_page,
        "faces": {k: v for k, v in (config.get("faces") or {}).items()
                  if k in ("size", "template_scale", "template_offset_y", "align_points")},
        "gain": config["render"]["retarget"]["gain"],  # validated: the schema's default is filled in
        "transfer": config["render"]["retarget"]["transfer"],
        "attributes": (config.get("attributes") or {}).get("edit"),  # validated: the schema default list
    }


def page_targets(config: dict) -> list[str]:
    """Every actor's page, unless ``page.build`` is false."""
    if not (config.get("page") or {}).get("build", True):
        return []
    return [PAGE_INDEX.format(actor=actor) for actor in (config.get("actors") or {})]


# ---------------------------------------------------------------------------------------- report

def summary_inputs(config: dict) -> dict[str, list[str]]:
    """The files results/summary.tsv is made from: each actor's faces counts, training metrics and
    model (its held-out and mean-face MSE), and every reenactment's score TSV."""
    actors = sorted(config.get("actors") or {})
    return {
        "counts": [f"results/faces/{a}/counts.json" for a in actors],
        "metrics": [f"results/models/{a}/metrics.tsv" for a in actors],
        "models": [f"results/models/{a}/model.pt" for a in actors],
        "scores": [f"results/reenact/{a}/{d}/{v}.tsv" for a, d in reenact_pairs(config) for v in driver_videos(config, d)],
    }
