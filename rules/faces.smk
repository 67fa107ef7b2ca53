# Faces: every video -> results/tracks/{person}/{video}.h5 (one row per frame); every actor ->
# results/faces/{actor}.h5 (training set); every person -> results/faces/{person}/ (table of every
# detection, contact sheets of kept and rejected faces, counts by reason).

from facevae.planning import (
    faces_people,
    faces_tracks,
    faces_person_targets,
    name_pattern,
)

FACES = faces_people(config)


rule faces_track:
    """Detect, landmark and align every frame of one video; measure and judge each face."""
    input:
        video="results/videos/{person}/{video}.mp4",
        meta="results/videos/{person}/{video}.json",
        reference=lambda wc: FACES["reference_input"][wc.person],
    output:
        "results/tracks/{person}/{video}.h5",
    log:
        "results/logs/faces_track/{person}/{video}.log",
    benchmark:
        "results/benchmarks/faces_track/{person}/{video}.tsv"
    conda:
        "../envs/faces.yaml"
    threads: 2
    params:
        person=lambda wc: FACES["people"][wc.person],
        exclude=lambda wc: FACES["exclude"][wc.person].get(wc.video, []),
        faces=FACES["track_settings"],
    script:
        "../workflow/scripts/faces_track.py"


rule faces_actor:
    """An actor's training set from the tracks of all their videos, with its report."""
    input:
        tracks=lambda wc: faces_tracks(config, wc.person),
    output:
        faces="results/faces/{person}.h5",
        table="results/faces/{person}/table.tsv",
        kept=in_report(
            "results/faces/{person}/kept.png",
            "faces_kept",
            "1. Faces",
            "{person}",
            figure="kept",
        ),
        rejected=in_report(
            "results/faces/{person}/rejected.png",
            "faces_rejected",
            "1. Faces",
            "{person}",
            figure="rejected",
        ),
        counts=in_report(
            "results/faces/{person}/counts.json",
            "faces_counts",
            "1. Faces",
            "{person}",
            figure="counts",
        ),
    log:
        "results/logs/faces_actor/{person}.log",
    benchmark:
        "results/benchmarks/faces_actor/{person}.tsv"
    wildcard_constraints:
        person=name_pattern(FACES["video_actors"]),
    conda:
        "../envs/faces.yaml"
    params:
        faces=config["faces"],
    script:
        "../workflow/scripts/faces_person.py"


rule faces_driver:
    """A driver's report (table, contact sheets, counts) from the tracks of their videos."""
    input:
        tracks=lambda wc: faces_tracks(config, wc.person),
    output:
        table="results/faces/{person}/table.tsv",
        kept=in_report(
            "results/faces/{person}/kept.png",
            "faces_kept",
            "1. Faces",
            "{person}",
            figure="kept",
        ),
        rejected=in_report(
            "results/faces/{person}/rejected.png",
            "faces_rejected",
            "1. Faces",
            "{person}",
            figure="rejected",
        ),
        counts=in_report(
            "results/faces/{person}/counts.json",
            "faces_counts",
            "1. Faces",
            "{person}",
            figure="counts",
        ),
    log:
        "results/logs/faces_driver/{person}.log",
    benchmark:
        "results/benchmarks/faces_driver/{person}.tsv"
    wildcard_constraints:
        person=name_pattern(FACES["drivers"]),
    conda:
        "../envs/faces.yaml"
    params:
        faces=config["faces"],
    script:
        "../workflow/scripts/faces_person.py"


rule faces_dataset:
    """An actor's given blog-format HDF5 (actors.<a>.dataset, path or URL), checked and used as is."""
    input:
        lambda wc: FACES["dataset_input"][wc.person],
    output:
        faces="results/faces/{person}.h5",
        kept="results/faces/{person}/kept.png",
        counts="results/faces/{person}/counts.json",
    log:
        "results/logs/faces_dataset/{person}.log",
    benchmark:
        "results/benchmarks/faces_dataset/{person}.tsv"
    wildcard_constraints:
        person=name_pattern(FACES["dataset_actors"]),
    conda:
        "../envs/faces.yaml"
    params:
        source=lambda wc: FACES["dataset"][wc.person],
        size=config["faces"]["size"],
        download=config["download"],
    script:
        "../workflow/scripts/faces_dataset.py"


ALL_TARGETS.extend(faces_person_targets(config))
