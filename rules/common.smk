import os
import sys

# The workflow's library (workflow/facevae) is importable without installing the package; rule
# scripts add the same folder themselves (they may run in a conda env or on a cluster node).
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))

from facevae.config import ConfigError, validate, people, video_entry

try:
    validate(config)
except ConfigError as err:
    raise WorkflowError(str(err))


NAME = "[A-Za-z0-9][A-Za-z0-9_-]*"


wildcard_constraints:
    person=NAME,
    video=NAME,


PEOPLE = people(config)


def person_videos(person):
    return sorted(PEOPLE[person].get("videos") or {})


def videos_of(person):
    """The ingested mp4 of every configured video of one person."""
    return [f"results/videos/{person}/{video}.mp4" for video in person_videos(person)]


def local_video_input(wildcards):
    """A local source file is an input, so replacing it re-runs its ingest job."""
    path = PEOPLE[wildcards.person]["videos"][wildcards.video].get("path")
    return [path] if path else []


# Every stage file (rules/<stage>.smk) appends the final outputs it builds; rule all asks for them.
ALL_TARGETS = []


def in_report(pattern, caption, category, subcategory="{actor}", **labels):
    """``pattern`` marked for Snakemake's report: caption report/<caption>.rst, one category per
    stage, one subcategory per actor (or person), ``labels`` naming the entry (wildcards allowed).
    """
    return report(
        pattern,
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory=subcategory,
        labels=labels or None,
    )
