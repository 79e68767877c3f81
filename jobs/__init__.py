"""pccheck.jobs: run pccheck training as a Slurm (or local) job that survives time limits and preemption.

- `pccheck.jobs.submit`: the `pccheck-submit` command (submitit, rich live view with --wait).
- `pccheck.jobs.job`: what runs inside the job (stop at a step boundary, durable checkpoint, requeue).
- `pccheck.jobs.rundir`: the run directory (keyed on the run name) shared by both sides.
- `pccheck.jobs.slurm`: small Slurm helpers (controller check, job info, requeue, resubmission).

Nothing here imports torch or the C++ core at import time.
"""
