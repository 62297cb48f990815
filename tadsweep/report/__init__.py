"""Report: training curves, the summary table, statistics, the headline, the figures, progress."""

# The figures' file names under plots/ (tadsweep.report.plots draws them; the rules declare them
# as outputs without importing matplotlib while the workflow parses).
PLOT_NAMES = (
    "axis_effects",
    "heatmaps",
    "map_vs_tiou",
    "training_curves",
    "pp_heatmap",
    "ensemble_gain",
    "cost_frontier",
)
