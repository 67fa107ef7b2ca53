"""What rules/faces.smk needs from the config, as plain functions (testable without Snakemake)."""

from __future__ import annotations

import re

from facevae.config import people

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
