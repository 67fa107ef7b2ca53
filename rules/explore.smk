# Exploring each actor's latent space: random walk, interpolation, samples (results/explore/{actor}/).

from facevae.planning import EXPLORE_OUTPUTS, explore_targets


rule explore:
    """Decode a random N(0, I) walk, a mix of two of the actor's faces, and a sample grid."""
    input:
        model="results/models/{actor}/model.pt",
        faces="results/faces/{actor}.h5",
    output:
        **{
            name: in_report(path, f"explore_{name}", "4. Exploration", figure=name)
            for name, path in EXPLORE_OUTPUTS.items()
        },
    log:
        "results/logs/explore/{actor}.log",
    benchmark:
        "results/benchmarks/explore/{actor}.tsv"
    wildcard_constraints:
        actor=NAME,
    conda:
        "../envs/render.yaml"
    threads: 2
    params:
        explore=config["explore"],
        device=config["render"]["device"],
    script:
        "../workflow/scripts/explore_actor.py"


ALL_TARGETS.extend(explore_targets(config))
