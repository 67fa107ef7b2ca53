"""Test helpers (imported as ``support.*``; tests/ is on sys.path through conftest.py): media,
the loopback media server, Snakemake runs, the CI pipeline's overrides, renderer kits, the browser."""
