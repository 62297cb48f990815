"""tadsweep: run an AdaTAD+LoRA improvement study as a Snakemake workflow."""
