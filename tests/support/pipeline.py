"""What the test session's ONE pipeline run changes in the default config.yaml, stage by stage.

The run is the demo config with its URLs on the loopback server, made small enough for CI on two
CPU cores. Each stage owns one function below and returns only its own config section(s).
"""

from __future__ import annotations


def faces(media) -> dict:
    # Training sets sampled at 15 faces/s (d6: 375 faces from its first 25 s, d10: ~225); tracks keep
    # every frame. At 10 faces/s (186 training faces) the cross-identity render of d6 by tpsmm gave a
    # face-mesh mouth r of 0.12-0.21 (below its circular-shift p95); at 15, 0.53 (seed 0).
    return {"faces": {"aligner": "dlib", "fps": 15}}


def celeba(media) -> dict:
    # The shared CelebA sample's first 2000 images (~10-15 s to align on 2 cores); the attribute
    # stage with small grids and a short mouth-curve control so both actors stay quick.
    return {
        "celeba": {
            "images": str(media("celeba/img_align_celeba_89x109")),
            "attributes": str(media("celeba/list_attr_celeba.txt")),
            "identities": str(media("celeba/identity_CelebA.txt")),
            "limit": 2000,
        },
        "attributes": {"rows": 2, "pca_components": 3, "mouth_faces": 40, "random_vectors": 6},
    }


def train(media) -> dict:
    # The default model (calibrated Gaussian decoder) at its default width, batch 16 for 50 epochs
    # with a cosine learning rate: ~110 s for d6's 277 training faces on two cores. Width 8 (the
    # earlier setting) drew mouths too blurred for the face mesh to read (self-reenactment mesh
    # mouth r 0.39, dlib 0.79); width 16: 0.73 / 0.87. Tests that judge the model families train
    # their own (tests/test_train.py).
    return {"train": {"epochs": 50, "min_steps": 0, "batch_size": 16, "width": 16, "checkpoint_minutes": 0},
            "expert": {"train": {"lr_schedule": "cosine"}}}


def render(media) -> dict:
    # Self-reenactment: d6 is trained on the first 25 s of its clip only, and the rest of the same
    # clip (a local file section) drives it; tpsmm (speech, audio) drives d6 with paste-back on; an
    # HDTF talking head (natural speech: small, fast mouth movements, the mouth half open at rest;
    # issue 38) drives it too.
    return {
        "actors": {"d6": {"videos": {"d6": {"end": "00:00:25"}}}},
        "drivers": {"d6rest": {"videos": {"rest": {"path": str(media("videos/lp_d6.mp4")), "start": "00:00:25"}}},
                    "hdtf": {"videos": {"talk": {"path": str(media("videos/hdtf_RD_Radio2_000.mp4"))}}}},
        "reenact": [{"actor": "d6", "driver": "tpsmm"}, {"actor": "d6", "driver": "d6rest"}, {"actor": "d6", "driver": "hdtf"}],
        "render": {"panel_size": 128, "paste_back": True},
        "expert": {"render": {"score": {"permutations": 500}}},
        "explore": {"panel_size": 128, "walk": {"points": 4, "steps": 10}, "interpolate": {"steps": 12},
                    "samples": {"rows": 4, "cols": 4}},
    }


def pipeline_overrides(media) -> dict:
    merged: dict = {}
    for stage in (faces, celeba, train, render):
        for key, value in stage(media).items():
            if key == "expert":  # one block, each stage its own section of it
                merged.setdefault("expert", {}).update(value)
                continue
            if key in merged:
                raise ValueError(f"two stages override config section {key!r}")
            merged[key] = value
    return merged
