# facevae: videos of people -> aligned faces -> per-actor face VAEs -> reenactment videos.
# Run: snakemake --cores all   (config: config.yaml; see README.md)


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/faces.smk"
include: "rules/celeba.smk"
include: "rules/train.smk"
include: "rules/attributes.smk"
include: "rules/reenact.smk"
include: "rules/explore.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
