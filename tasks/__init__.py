"""The Celery binding of the farm, and only that.

The app and its routes (`tasks.app`); the `farm.measure` task and the GPU
worker process (`tasks.measure`, entered through `tasks.worker_main`); the
recorder's `farm.record` and `farm.run_event` tasks (`tasks.record`); getting
results to the broker (`tasks.delivery`) and the farm's state in Redis
(`tasks.broker_state`). Measuring lives in `workers`, storing in `farm.store`.
"""
