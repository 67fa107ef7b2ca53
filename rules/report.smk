# What `snakemake --report results/report.zip` gathers beyond the stages' own pictures: a short score
# table per reenactment and results/summary.tsv (the run's numbers, per actor and per pair). Both
# are read from the files the stages wrote, never passed as params (which would re-run jobs).

from facevae.planning import reenact_targets
from facevae.planning import summary_inputs


rule reenact_scores:
    """The short form of one reenactment's score file, for the report."""
    input:
        score="results/reenact/{actor}/{driver}/{video}.tsv",
    output:
        in_report(
            "results/reenact/{actor}/{driver}/{video}.scores.tsv",
            "reenact_scores",
            "3. Reenactment",
            driver="{driver}",
            video="{video}",
            figure="scores",
        ),
    log:
        "results/logs/reenact_scores/{actor}/{driver}/{video}.log",
    benchmark:
        "results/benchmarks/reenact_scores/{actor}/{driver}/{video}.tsv"
    wildcard_constraints:
        actor=NAME,
        driver=NAME,
    localrule: True
    conda:
        "../envs/render.yaml"
    script:
        "../workflow/scripts/reenact_scores.py"


rule summary:
    """Per actor: faces kept, epochs, held-out vs mean-face MSE; per reenactment: its scores."""
    input:
        **summary_inputs(config),
    output:
        report(
            "results/summary.tsv",
            caption="../report/summary.rst",
            category="0. Summary",
            labels={"table": "summary"},
        ),
    log:
        "results/logs/summary.log",
    benchmark:
        "results/benchmarks/summary.tsv"
    localrule: True
    conda:
        "../envs/render.yaml"
    script:
        "../workflow/scripts/run_summary.py"


ALL_TARGETS.extend(
    path.removesuffix(".tsv") + ".scores.tsv"
    for path in reenact_targets(config)
    if path.endswith(".tsv") and not path.endswith(".series.tsv")
)
ALL_TARGETS.append("results/summary.tsv")
