"""Rule reenact: one driver video through one actor's VAE -> composite mp4, score TSV, plots."""

import os
import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.render import RenderConfig, render_reenactment
from facevae.rulerun import run_rule


def main(smk):
    import torch

    torch.set_num_threads(max(1, smk.threads))
    render_reenactment(
        smk.input.track,
        smk.input.video,
        smk.input.model,
        dict(smk.output.items()),
        RenderConfig.from_config(smk.params.render),
        actor=smk.wildcards.actor,
        driver=smk.wildcards.driver,
        video=smk.wildcards.video,
        meta_path=smk.input.meta,
        attributes_path=smk.input.get("attributes"),
        faces_path=smk.input.faces,
        retarget_path=smk.input.retarget[0] if len(smk.input.retarget) else None,
        faceapi_model=os.path.dirname(smk.input.faceapi[0]) if len(smk.input.faceapi) else None,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
