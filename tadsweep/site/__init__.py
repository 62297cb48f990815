"""Site: what a real study needs from its cluster -- paths, SLURM settings, the container."""
