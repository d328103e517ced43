"""The deployment examples (examples/deploy/): what can be checked without SLURM, Cloud
Batch or a container runtime. The Cloud Batch job has the shape of Batch's v1 Job resource
(https://cloud.google.com/batch/docs/reference/rest/v1/projects.locations.jobs), the
scripts parse (and pass shellcheck where it is installed), the Dockerfile installs extras
that exist, and shards.sh runs, resumes and merges shards through a file:// bucket."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trialrun
from conftest import ROOT

DEPLOY = ROOT / "examples" / "deploy"
SCRIPTS = [DEPLOY / "shards.sh", DEPLOY / "slurm-sweep.sh", DEPLOY / "build-check.sh"]

# Fields of Batch v1's Job, TaskGroup, TaskSpec, Runnable and Container that a job config
# may set (output-only ones left out), from the REST reference above.
JOB_FIELDS = {"priority", "taskGroups", "allocationPolicy", "labels", "logsPolicy", "notifications"}
TASK_GROUP_FIELDS = {
    "taskSpec",
    "taskCount",
    "parallelism",
    "schedulingPolicy",
    "taskEnvironments",
    "taskCountPerNode",
    "requireHostsFile",
    "permissiveSsh",
    "runAsNonRoot",
}
TASK_SPEC_FIELDS = {
    "runnables",
    "computeResource",
    "maxRunDuration",
    "maxRetryCount",
    "lifecyclePolicies",
    "environment",
    "volumes",
}
CONTAINER_FIELDS = {
    "imageUri",
    "commands",
    "entrypoint",
    "volumes",
    "options",
    "blockExternalNetwork",
    "username",
    "password",
    "enableImageStreaming",
}


def test_the_cloud_batch_job_has_the_documented_shape() -> None:
    job = json.loads((DEPLOY / "cloud-batch-job.json").read_text())
    assert set(job) <= JOB_FIELDS
    [group] = job["taskGroups"]  # "Only one TaskGroup is supported now."
    assert set(group) <= TASK_GROUP_FIELDS
    assert 1 <= int(group["parallelism"]) <= int(group["taskCount"])  # int64 as strings
    spec = group["taskSpec"]
    assert set(spec) <= TASK_SPEC_FIELDS
    assert 0 <= spec["maxRetryCount"] <= 10
    assert re.fullmatch(r"\d+s", spec["maxRunDuration"])
    [runnable] = spec["runnables"]
    container = runnable["container"]
    assert set(container) <= CONTAINER_FIELDS
    # The image's helper, as shards.sh's usage has it: run CONFIG SYNC_PREFIX.
    assert container["entrypoint"] == "trialrun-shards"
    command, config, prefix = container["commands"]
    assert command == "run" and prefix.startswith("gs://")
    mounts = {v["mountPath"] for v in spec["volumes"]}
    assert any(config.startswith(f"{mount}/") for mount in mounts)
    [policy] = job["allocationPolicy"]["instances"]
    assert policy["policy"]["provisioningModel"] in {"STANDARD", "SPOT", "PREEMPTIBLE"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_scripts_pass_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_the_dockerfile_installs_extras_that_exist_as_a_user_that_is_not_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    [default] = re.findall(r"^ARG EXTRAS=(\S+)$", dockerfile, re.MULTILINE)
    assert set(default.split(",")) <= set(extras)
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.MULTILINE):
        assert (ROOT / source).exists(), source
    [user] = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user not in {"root", "0"}


def shards(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """shards.sh with this interpreter's trialrun and fsspec first on PATH."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        [str(DEPLOY / "shards.sh"), *args],
        cwd=cwd,
        env={**os.environ, "PATH": path, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_shards_run_resume_from_the_bucket_and_merge(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config()
    prefix = (tmp_path / "bucket" / "sweep").as_uri()
    array = {"SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
    for index in ("0", "1"):
        done = shards("run", str(config), prefix, cwd=tmp_path, **array, SLURM_ARRAY_TASK_ID=index)
        assert done.returncode == 0, done.stderr
    [first] = (tmp_path / "bucket" / "sweep" / "shard-0").iterdir()

    # Task 0 again on another machine (a requeue): its run comes back from the bucket.
    again = shards(
        "run",
        str(config),
        prefix,
        cwd=tmp_path,
        **array,
        SLURM_ARRAY_TASK_ID="0",
        TRIALRUN_RUNS_DIR="elsewhere",
    )
    assert again.returncode == 0, again.stderr
    assert [p.name for p in (tmp_path / "elsewhere").iterdir()] == [first.name]
    assert [p.name for p in (tmp_path / "bucket" / "sweep" / "shard-0").iterdir()] == [first.name]

    merged = shards("merge", prefix, "2", "merged", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    run = trialrun.open_run(tmp_path / "runs" / "merged")
    counts: dict[str, Any] = run.counts()
    assert counts["done"] == 16 and counts["pending"] == 0
