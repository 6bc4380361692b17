"""The Snakemake workflow's plan, torch-free: the config and grids checked against
workflow/schemas, the presets, which runs to schedule, their resources. Imports only
recipe/, the run state (runs/runstate.py) and the foundation."""
