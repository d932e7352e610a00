"""Studies: drivers that run the existing stages over a grid of settings and tabulate the results."""
