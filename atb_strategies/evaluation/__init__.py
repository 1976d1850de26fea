"""Out-of-sample evaluation: walk-forward folds, pooled statistics, reports."""
