# Training: every actor's faces -> results/models/{actor}/ (one VAE each). With train.model dfc the
# feature network is trained once on CelebA (results/featurenet/) unless train.dfc.feature_net names one.
# The checkpoints (results/checkpoints/{actor}/ckpt.pt, featurenet.ckpt.pt) are deliberately not outputs: Snakemake deletes
# a failed job's outputs, and a killed training job must keep it to resume.

from facevae.planning import (
    actor_names,
    feature_net_input,
    featurenet_settings,
    train_settings,
)


rule train_featurenet:
    """Fit the DFC loss's feature network to CelebA's 40 attributes (shared by all actors)."""
    input:
        "results/celeba/aligned.h5",
    output:
        net="results/featurenet/featurenet.pt",
        metrics="results/featurenet/metrics.tsv",
        plot="results/featurenet/accuracy.png",
    log:
        "results/logs/train_featurenet.log",
    benchmark:
        "results/benchmarks/train_featurenet.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=featurenet_settings(config),
        # a file, not a folder: actor names hold no dot, so it never meets results/checkpoints/{actor}/
        checkpoint="results/checkpoints/featurenet.ckpt.pt",
    script:
        "../workflow/scripts/train_featurenet.py"


rule train_vae:
    """Train one actor's face VAE; resumes from its checkpoint when re-run after a kill."""
    input:
        faces="results/faces/{actor}.h5",
        feature_net=feature_net_input(config),
    output:
        model="results/models/{actor}/model.pt",
        metrics="results/models/{actor}/metrics.tsv",
        loss_plot=in_report(
            "results/models/{actor}/loss.png",
            "train_loss",
            "2. Training",
            figure="loss",
        ),
        reconstructions=in_report(
            "results/models/{actor}/reconstructions.png",
            "train_reconstructions",
            "2. Training",
            figure="reconstructions",
        ),
        samples=in_report(
            "results/models/{actor}/samples.png",
            "train_samples",
            "2. Training",
            figure="samples",
        ),
        split="results/models/{actor}/split.tsv",
    log:
        "results/logs/train_vae/{actor}.log",
    benchmark:
        "results/benchmarks/train_vae/{actor}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        settings=train_settings(config),
        checkpoint="results/checkpoints/{actor}/ckpt.pt",
    script:
        "../workflow/scripts/train_vae.py"


ALL_TARGETS.extend(
    f"results/models/{actor}/{name}"
    for actor in actor_names(config)
    for name in (
        "model.pt",
        "metrics.tsv",
        "loss.png",
        "reconstructions.png",
        "samples.png",
        "split.tsv",
    )
)
