"""Which reenactment and exploration files the workflow builds (used by rules/reenact.smk and
rules/explore.smk at parse time; plain Python, no heavy imports)."""

from __future__ import annotations

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


def reenact_attributes(config: dict, actor: str) -> list[str]:
    """The actor's CelebA attribute vectors, an input only when ``render.edit`` asks for them."""
    return [f"results/attributes/{actor}.h5"] if (config.get("render") or {}).get("edit") else []


RETARGET_OUTPUTS = {
    "map": "results/models/{actor}/retarget.pt",
    "table": "results/models/{actor}/retarget.tsv",
}
# The render.retarget keys the fitted map depends on (the others -- neutral, gain -- are applied
# at render time), so changing a render-time key re-renders without refitting.
RETARGET_FIT_KEYS = ("features", "map", "bandwidth", "l2", "max_centres", "folds")


def drives_by_retargeting(config: dict) -> bool:
    """render.drive retarget, or auto (which retargets every driver who is not the actor)."""
    return ((config.get("render") or {}).get("drive") or "auto") in ("auto", "retarget")


def retarget_fit_settings(config: dict) -> dict:
    """The ``render.retarget`` keys rule fit_retarget depends on."""
    section = (config.get("render") or {}).get("retarget") or {}
    return {k: section[k] for k in RETARGET_FIT_KEYS if k in section}


def reenact_retarget(config: dict, actor: str) -> list[str]:
    """The actor's retargeting map, an input when ``render.drive`` may retarget."""
    return [RETARGET_OUTPUTS["map"].format(actor=actor)] if drives_by_retargeting(config) else []


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
    the attribute directions offered (attributes.edit)."""
    from_page = {k: v for k, v in (config.get("page") or {}).items() if k != "build"}
    return {
        **from_page,
        "faces": {k: v for k, v in (config.get("faces") or {}).items()
                  if k in ("size", "template_scale", "template_offset_y", "align_points")},
        "gain": ((config.get("render") or {}).get("retarget") or {}).get("gain", 1.0),
        "attributes": (config.get("attributes") or {}).get("edit"),  # None: attributes' default
    }


def page_targets(config: dict) -> list[str]:
    """Every actor's page, unless ``page.build`` is false."""
    if not (config.get("page") or {}).get("build", True):
        return []
    return [PAGE_INDEX.format(actor=actor) for actor in (config.get("actors") or {})]
