"""The GPU-node side of the farm.

Measures one run on GPUs already held (`workers.runner.run_one`): preflight,
idle baselines, power sampling and energy counters, the engine under load,
per-load-point figures and validity checks. It never imports Celery, SQL,
click or the store.
"""
