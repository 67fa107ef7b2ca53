"""Rule fit_retarget: an actor's faces and model -> results/models/{actor}/retarget.pt (+ .tsv)."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.driving import RetargetSettings, fit_actor_retarget
from facevae.rulerun import run_rule


def main(smk):
    import torch

    torch.set_num_threads(max(1, smk.threads))
    fit_actor_retarget(
        smk.input.faces,
        smk.input.model,
        {"map": smk.output.map, "table": smk.output.table},
        RetargetSettings.from_config(smk.params.settings),
        actor=smk.wildcards.actor,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
