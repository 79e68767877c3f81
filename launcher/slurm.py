"""Small Slurm helpers used on both sides (submission and inside the job). Only the standard clients."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Optional

#: states after which a job runs no more (unless requeued, which makes it PENDING again)
TERMINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "TIMEOUT", "SPECIAL_EXIT", "REVOKED",
}
#: carries an sbatch template's submission id into a dependent resubmission
SUBMISSION_ENV = "PCCHECK_SUBMISSION"
#: states in which a job counts as on its way back (requeued)
REQUEUE_STATES = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESV_DEL_HOLD"}


def _ignore_term() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _run(cmd: list[str], timeout: float = 20.0, shielded: bool = False) -> subprocess.CompletedProcess:
    """Runs a Slurm client. `shielded`: the client ignores SIGTERM. Inside a job, a preemption or
    `scontrol requeue` from outside SIGTERMs every process of the job, our `scontrol requeue` included
    (seen: rc=-15); an ignored disposition survives exec, and SIGKILL after KillWait still ends it."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_ignore_term if shielded else None)


def controller_answers(timeout: float = 10.0) -> tuple[bool, str]:
    """(True, why) when a Slurm controller answers `scontrol ping` and sbatch/srun exist."""
    missing = [c for c in ("sbatch", "srun", "scontrol") if shutil.which(c) is None]
    if missing:
        return False, f"no Slurm clients on PATH ({', '.join(missing)} missing)"
    try:
        out = _run(["scontrol", "ping"], timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"`scontrol ping` did not answer within {timeout:.0f} s"
    except OSError as exc:
        return False, f"`scontrol ping` failed: {exc}"
    text = (out.stdout + out.stderr).strip().replace("\n", " ")
    if out.returncode == 0 and " UP" in out.stdout:
        return True, text
    return False, f"no Slurm controller answers (`scontrol ping`: {text or 'rc=%d' % out.returncode})"


def job_info(job_id: str) -> dict[str, str]:
    """`scontrol show job -o ID` as a dict ({} when unknown, e.g. purged after MinJobAge)."""
    if shutil.which("scontrol") is None:
        return {}
    try:
        out = _run(["scontrol", "show", "job", "-o", str(job_id)], shielded=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    return parse_show_job(out.stdout)


def parse_show_job(text: str) -> dict[str, str]:
    """Parses one `scontrol show job -o` line: space-separated key=value (a token without '=' continues
    the previous value, as in `Reason=... Comment=a b`)."""
    lines = text.strip().splitlines()
    info: dict[str, str] = {}
    last = None
    for token in (lines[0].split() if lines else []):
        key, sep, value = token.partition("=")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_:/]*", key):
            if key not in info:
                info[key] = value
                last = key
            else:
                last = None
        elif last is not None:
            info[last] += " " + token
    return info


def job_state(job_id: str) -> tuple[str, int, str]:
    """(state, restarts, reason); state "UNKNOWN" when Slurm no longer knows the job."""
    info = job_info(job_id)
    if not info:
        return "UNKNOWN", 0, ""
    state = info.get("JobState", "UNKNOWN")
    try:
        restarts = int(info.get("Restarts", "0"))
    except ValueError:
        restarts = 0
    return state, restarts, info.get("Reason", "")


def requeue(job_id: str) -> tuple[bool, str]:
    """`scontrol requeue ID`: (ok, message). Missing scontrol and refusals come back as (False, why)."""
    exe = shutil.which("scontrol")
    if exe is None:
        return False, "scontrol is not on PATH inside the job (container without the Slurm hook?)"
    try:
        out = _run([exe, "requeue", str(job_id)], timeout=60, shielded=True)
    except subprocess.TimeoutExpired:
        return False, "`scontrol requeue` timed out after 60 s"
    except OSError as exc:
        return False, f"`scontrol requeue` failed to run: {exc}"
    if out.returncode == 0:
        return True, "scontrol requeue"
    return False, f"`scontrol requeue {job_id}` refused: {(out.stderr or out.stdout).strip() or 'rc=%d' % out.returncode}"


def resubmit_dependent(job_id: str, submitit_dir: Path, job_name: Optional[str] = None) -> tuple[Optional[str], str]:
    """Fallback when requeue is impossible: submit the same submitit job again, to start after this one.

    Returns (new job id or None, message). The new job finds its pickle under its own id (submitit
    waits up to 60 s for it), so the pickle is copied right after sbatch answers.
    """
    exe = shutil.which("sbatch")
    if exe is None:
        return None, "sbatch is not on PATH either"
    script = Path(submitit_dir) / f"{job_id}_submission.sh"
    pickle = Path(submitit_dir) / f"{job_id}_submitted.pkl"
    if not script.exists() or not pickle.exists():
        return None, f"cannot resubmit: {script.name} or {pickle.name} missing in {submitit_dir}"
    cmd = [exe, "--parsable", f"--dependency=afterany:{job_id}", "--kill-on-invalid-dep=yes"]
    if job_name:
        cmd.append(f"--job-name={job_name}")
    try:
        out = _run(cmd + [str(script)], timeout=60, shielded=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"sbatch failed: {exc}"
    if out.returncode != 0:
        return None, f"sbatch refused the resubmission: {(out.stderr or out.stdout).strip()}"
    new_id = out.stdout.strip().split(";")[0]
    new_pickle = Path(submitit_dir) / f"{new_id}_submitted.pkl"
    tmp = new_pickle.with_suffix(".tmp")
    shutil.copyfile(pickle, tmp)
    os.replace(tmp, new_pickle)
    shutil.copyfile(script, Path(submitit_dir) / f"{new_id}_submission.sh")
    return new_id, f"resubmitted as job {new_id} (--dependency=afterany:{job_id})"


def resubmit_script(job_id: str, script: list[str], job_name: str, submission: str) -> tuple[Optional[str], str]:
    """Fallback for sbatch templates: `sbatch SCRIPT ARGS` again, to start after this job, in the same
    submission (PCCHECK_SUBMISSION), so budgets and records carry over. (new job id or None, message)."""
    exe = shutil.which("sbatch")
    if exe is None:
        return None, "sbatch is not on PATH either"
    cmd = [exe, "--parsable", f"--dependency=afterany:{job_id}", "--kill-on-invalid-dep=yes", f"--job-name={job_name}",
           f"--export=ALL,{SUBMISSION_ENV}={submission}", *script]
    try:
        out = _run(cmd, timeout=60, shielded=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"sbatch failed: {exc}"
    if out.returncode != 0:
        return None, f"sbatch refused the resubmission: {(out.stderr or out.stdout).strip()}"
    new_id = out.stdout.strip().split(";")[0]
    return new_id, f"resubmitted as job {new_id} (--dependency=afterany:{job_id})"


def kill_wait() -> Optional[float]:
    """Slurm's KillWait: seconds from the SIGTERM of a time limit or requeue to the SIGKILL (None if unknown)."""
    if shutil.which("scontrol") is None:
        return None
    try:
        out = _run(["scontrol", "show", "config"], shielded=True)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^KillWait\s*=\s*(\d+)", out.stdout, re.MULTILINE)
    return float(m.group(1)) if m else None
