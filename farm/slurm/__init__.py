"""Slurm as a source of workers (`farmctl slurm`): worker jobs for GPU queues with
waiting runs. `plan` decides (pure), `jobs` writes a job's request and script,
`commands` runs sbatch/squeue/scancel, `loop` ties them to the store and Redis,
`status` is `farmctl status`'s view of the jobs. docs/deployment.md#slurm."""
