# Reenactment: every (actor, driver) pair's driver videos through the actor's VAE
# (results/reenact/{actor}/{driver}/{video}.*). A driver may be another actor (cross-reenactment).

from facevae.planning import (
    FACEAPI_WEIGHTS,
    RETARGET_OUTPUTS,
    reenact_attributes,
    reenact_faceapi,
    reenact_mem_mb,
    reenact_outputs,
    reenact_retarget,
    reenact_targets,
    retarget_fit_settings,
)

# The reenact outputs a person looks at (the score file's short form is rule reenact_scores').
REENACT_REPORTED = ("video", "paste", "plot", "sheet")


rule fit_retarget:
    """Fit the actor's map from its own landmarks to its latent means (render.drive retarget)."""
    input:
        faces="results/faces/{actor}.h5",
        model="results/models/{actor}/model.pt",
    output:
        **RETARGET_OUTPUTS,
    log:
        "results/logs/fit_retarget/{actor}.log",
    benchmark:
        "results/benchmarks/fit_retarget/{actor}.tsv"
    wildcard_constraints:
        actor=NAME,
    conda:
        "../envs/render.yaml"
    threads: 2
    params:
        settings=retarget_fit_settings(config),
    script:
        "../workflow/scripts/fit_retarget.py"


rule faceapi_weights:
    """face-api's 68-point landmark weights from the page's npm lock file (the drivers' mouth points)."""
    output:
        **FACEAPI_WEIGHTS,
    log:
        "results/logs/faceapi_weights.log",
    benchmark:
        "results/benchmarks/faceapi_weights.tsv"
    conda:
        "../envs/page.yaml"
    threads: 1
    script:
        "../workflow/scripts/faceapi_weights.py"


rule reenact:
    """Drive the actor with the driver's track (render.drive), decode, compose, mux audio, score."""
    input:
        track="results/tracks/{driver}/{video}.h5",
        # The driver's faces report: its rule stops with "no usable face" (and the counts by
        # reason) when no frame of the driver's videos is usable, before anything is rendered.
        driver_faces="results/faces/{driver}/counts.json",
        video="results/videos/{driver}/{video}.mp4",
        meta="results/videos/{driver}/{video}.json",
        model="results/models/{actor}/model.pt",
        faces="results/faces/{actor}.h5",
        retarget=lambda wc: reenact_retarget(config, wc.actor),
        faceapi=reenact_faceapi(config),
        attributes=lambda wc: reenact_attributes(config, wc.actor),
    output:
        **{
            name: (
                in_report(
                    path,
                    f"reenact_{name}",
                    "3. Reenactment",
                    driver="{driver}",
                    video="{video}",
                    figure=name,
                )
                if name in REENACT_REPORTED
                else path
            )
            for name, path in reenact_outputs(config).items()
        },
    log:
        "results/logs/reenact/{actor}/{driver}/{video}.log",
    benchmark:
        "results/benchmarks/reenact/{actor}/{driver}/{video}.tsv"
    wildcard_constraints:
        actor=NAME,
        driver=NAME,
    conda:
        "../envs/render.yaml"
    threads: 2
    resources:
        # From the driver's resolution (its ingest meta) and the layout: paste_back at 4K or 8K needs
        # more than the profile's default (facevae.planning.reenact_mem_mb).
        mem_mb=lambda wc, input: reenact_mem_mb(input.meta, config["render"]),
    params:
        render=config["render"],
    script:
        "../workflow/scripts/reenact_video.py"


ALL_TARGETS.extend(reenact_targets(config))
