# Reenactment: every (actor, driver) pair's driver videos through the actor's VAE
# (results/reenact/{actor}/{driver}/{video}.*). A driver may be another actor (cross-reenactment).

from facevae.render_plan import reenact_attributes, reenact_outputs, reenact_targets


rule reenact:
    """Encode the driver's track (posterior means), decode as the actor, compose, mux audio, score."""
    input:
        track="results/tracks/{driver}/{video}.h5",
        video="results/videos/{driver}/{video}.mp4",
        meta="results/videos/{driver}/{video}.json",
        model="results/models/{actor}/model.pt",
        attributes=lambda wc: reenact_attributes(config, wc.actor),
    output:
        **reenact_outputs(config),
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
    params:
        render=config["render"],
    script:
        "../workflow/scripts/reenact_video.py"


ALL_TARGETS.extend(reenact_targets(config))
