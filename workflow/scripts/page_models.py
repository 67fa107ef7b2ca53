"""Rule page_models: an actor's model, faces and retargeting map -> decoder.onnx, drive.onnx, page.json."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.page import build_page_models
from facevae.rulerun import run_rule


def main(smk):
    import torch

    torch.set_num_threads(max(1, smk.threads))
    build_page_models(
        smk.input.model,
        smk.input.faces,
        smk.input.retarget,
        smk.input.attributes[0] if smk.input.attributes else None,
        {name: smk.output[name] for name in ("decoder", "drive", "manifest")},
        smk.params.settings,
        actor=smk.wildcards.actor,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
