"""facevae: videos of people -> aligned faces -> per-actor face VAEs -> reenactment videos.

The Snakemake rules under ``rules/`` are thin; the real work lives here as plain functions and
small classes that are unit-tested without Snakemake.
"""

__version__ = "0.1.0"


class FacevaeError(Exception):
    """An error a user can act on: its message names the bad thing (config key, URL, file, actor).

    Rule scripts print it as one line instead of a traceback.
    """
