# CelebA input: the aligned faces with their 40 attributes (results/celeba/aligned.h5). Only part of
# the workflow when the config has a `celeba:` section (CelebA has no public direct URL).

from facevae.planning import alignment_settings, celeba_inputs, celeba_section


rule celeba_align:
    """Re-align CelebA's images with the actors' aligner and template; attributes and identity per face."""
    input:
        lambda wildcards: celeba_inputs(config),
    output:
        h5="results/celeba/aligned.h5",
        sheet="results/celeba/aligned.png",
        rejected="results/celeba/rejected.png",
    log:
        "results/logs/celeba_align.log",
    benchmark:
        "results/benchmarks/celeba_align.tsv"
    conda:
        "../envs/faces.yaml"
    threads: 8
    params:
        celeba=lambda wildcards: celeba_section(config),
        faces=alignment_settings(config),
    script:
        "../workflow/scripts/celeba_align.py"


if config.get("celeba"):
    ALL_TARGETS.extend(
        [
            "results/celeba/aligned.h5",
            "results/celeba/aligned.png",
            "results/celeba/rejected.png",
        ]
    )
