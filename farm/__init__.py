"""The coordinator side of the farm.

Parses sweep files (`farm.sweep_file`, into `farm.spec`'s models), expands
them into runs (`farm.sweep`), enqueues, cancels and retries them
(`farm.coordinator`), keeps results in the store (`farm.store`), and turns them
into reports (`farm.report`), all behind `farmctl` (`farm.cli`). It never
imports GPU, engine or worker code.
"""
