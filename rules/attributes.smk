# CelebA attributes in each actor's latent space: vectors, probes, edit and direction grids
# (results/attributes/). Only part of the workflow when the config has a `celeba:` section.

from facevae.planning import (
    attribute_targets,
    driver_face_files,
    edit_caption,
    edit_outputs,
    edit_settings,
    vector_settings,
)
from facevae.planning import alignment_settings


rule attributes_vectors:
    """Encode aligned CelebA with one actor's model: attribute vectors, directions, identity-split probes."""
    input:
        model="results/models/{actor}/model.pt",
        aligned="results/celeba/aligned.h5",
        faces="results/faces/{actor}.h5",
    output:
        h5="results/attributes/{actor}.h5",
        probe=in_report(
            "results/attributes/{actor}/probe.tsv",
            "attributes_probe",
            "5. Attributes",
            figure="probe.tsv",
        ),
        probe_png=in_report(
            "results/attributes/{actor}/probe.png",
            "attributes_probe",
            "5. Attributes",
            figure="probe.png",
        ),
    log:
        "results/logs/attributes_vectors/{actor}.log",
    benchmark:
        "results/benchmarks/attributes_vectors/{actor}.tsv"
    wildcard_constraints:
        actor=NAME,
    conda:
        "../envs/faces.yaml"
    threads: 2
    params:
        settings=vector_settings(config),
    script:
        "../workflow/scripts/attributes_vectors.py"


rule attributes_edits:
    """Edit grids (actor's and drivers' faces), direction traversals and mouth-width curves."""
    input:
        model="results/models/{actor}/model.pt",
        h5="results/attributes/{actor}.h5",
        faces="results/faces/{actor}.h5",
        drivers=lambda wc: sum(driver_face_files(config, wc.actor).values(), []),
    output:
        [
            in_report(
                path,
                edit_caption(path),
                "5. Attributes",
                figure=os.path.basename(path),
            )
            for path in edit_outputs(config)
        ],
    log:
        "results/logs/attributes_edits/{actor}.log",
    benchmark:
        "results/benchmarks/attributes_edits/{actor}.tsv"
    wildcard_constraints:
        actor=NAME,
    conda:
        "../envs/faces.yaml"
    threads: 2
    params:
        drivers=lambda wc: driver_face_files(config, wc.actor),
        outdir=lambda wc: f"results/attributes/{wc.actor}",
        settings=edit_settings(config),
        faces=alignment_settings(config),
    script:
        "../workflow/scripts/attributes_edits.py"


ALL_TARGETS.extend(attribute_targets(config))
