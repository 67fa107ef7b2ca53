# The actor's browser page: latent explorer and live webcam reenactment
# (results/explore/{actor}/index.html; `make explore ACTOR=<name>` serves it).

from facevae.planning import (
    PAGE_INDEX,
    PAGE_MODEL_OUTPUTS,
    PAGE_VENDOR,
    page_attributes,
    page_model_settings,
    page_targets,
)

PAGE_SOURCES = [
    os.path.join(workflow.basedir, "workflow", "page", name)
    for name in (
        "index.html",
        "app.js",
        "align.js",
        "integrity.js",
        "page.css",
        "package.json",
        "package-lock.json",
    )
]


rule page_models:
    """The actor's decoder and driving path as ONNX graphs, and page.json (latent ranking, faces, geometry)."""
    input:
        model="results/models/{actor}/model.pt",
        faces="results/faces/{actor}.h5",
        retarget="results/models/{actor}/retarget.pt",
        attributes=lambda wc: page_attributes(config, wc.actor),
    output:
        **PAGE_MODEL_OUTPUTS,
    log:
        "results/logs/page_models/{actor}.log",
    benchmark:
        "results/benchmarks/page_models/{actor}.tsv"
    wildcard_constraints:
        actor=NAME,
    conda:
        "../envs/render.yaml"
    threads: 1
    params:
        settings=page_model_settings(config),
    script:
        "../workflow/scripts/page_models.py"


rule page:
    """The static page beside the models, with its pinned npm runtime (npm ci of the lock file)."""
    input:
        **PAGE_MODEL_OUTPUTS,
        sources=PAGE_SOURCES,
    output:
        index=in_report(PAGE_INDEX, "page", "4. Exploration", figure="page"),
        vendor=directory(PAGE_VENDOR),
    log:
        "results/logs/page/{actor}.log",
    benchmark:
        "results/benchmarks/page/{actor}.tsv"
    wildcard_constraints:
        actor=NAME,
    conda:
        "../envs/page.yaml"
    threads: 1
    script:
        "../workflow/scripts/build_page.py"


ALL_TARGETS.extend(page_targets(config))
