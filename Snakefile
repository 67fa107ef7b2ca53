# facevae: videos of people -> aligned faces -> per-actor face VAEs -> reenactment videos.
# Run: snakemake --cores all   (config: config.yaml; see README.md)


# Snakemake's own error for a config file that does not parse names no file, line or column, and
# YAML keeps the last of two equal keys silently: config.yaml and every --configfile are checked
# here, before Snakemake merges them. (A --configfile that does not parse stops Snakemake before
# this file runs: `python -m facevae.config FILE` names its line and column.)
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))
from facevae.config import ConfigError, check_yaml_file

try:
    for path in ["config.yaml"] * os.path.exists("config.yaml") + [
        str(p) for p in workflow.config_settings.configfiles
    ]:
        check_yaml_file(path)
except ConfigError as err:
    raise WorkflowError(str(err))


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
include: "rules/page.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
