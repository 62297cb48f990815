"""Report: training curves, the summary table, statistics, the headline, the figures, progress."""
