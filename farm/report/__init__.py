"""From measurements to answers: run points, statistics, reports, recommendations,
comparisons and the open dataset export. Reads the store; never measures."""
