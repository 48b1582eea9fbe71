"""Cluster profiles: what a SLURM allocation looks like on one cluster, kept in YAML under slurm/clusters/.

A profile says *where* jobs run (partition, account, qos, constraint), *what each job gets* (nodes, tasks and
GPUs per node, CPUs, memory, time limit) and *what runs before it* (setup lines: modules, environment variables
such as VLPBENCH_CACHE on shared storage). A suite says *what* runs; the same suite runs under any profile.

    vlpbench run --suite my.yaml --executor slurm --cluster localhost      # slurm/clusters/localhost.yaml
    vlpbench run --suite my.yaml --executor slurm --cluster ./mycluster.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CLUSTERS_DIR = Path(__file__).resolve().parent / "clusters"


class ProfileError(ValueError):
    """A missing or malformed cluster profile; the message names the file and the field."""


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The profile's name (its file name without .yaml).")
    description: str = ""
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = Field(None, description="sbatch --constraint, e.g. a100|h100.")
    nodes: int = Field(1, ge=1, description="Nodes per training job (evaluation jobs take one).")
    tasks_per_node: int = Field(1, ge=1, description="Processes per node: one per GPU for DDP.")
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: float | None = Field(None, gt=0, description="Memory per node; None = the partition's default.")
    eval_tasks_per_node: int = Field(1, ge=1, description="Processes for the evaluation tasks of benchmarks that "
                                                          "shard over a process group (zero-shot retrieval; the "
                                                          "one-process numbers either way); others take one.")
    time_min: int = Field(60, ge=1, description="Time limit per job; a job that reaches it is checkpointed and "
                                                "requeued (submitit), up to max_requeues times.")
    max_requeues: int = Field(3, ge=0)
    array_parallelism: int = Field(64, ge=1, description="How many array tasks may run at once.")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before each job (module load, "
                                                               "export VLPBENCH_CACHE=/shared/...).")
    sbatch: dict[str, Any] = Field(default_factory=dict, description="Extra #SBATCH options, e.g. {exclude: "
                                                                     "node7, reservation: mine}.")

    def tasks(self, *, training: bool, sharded: bool = False) -> tuple[int, int]:
        """(nodes, tasks per node) of a job: pretraining takes the profile's; an evaluation one node and one task,
        or eval_tasks_per_node for a benchmark that shards."""
        if training:
            return self.nodes, self.tasks_per_node
        return 1, self.eval_tasks_per_node if sharded else 1

    def slurm_parameters(self, *, job_name: str, training: bool, sharded: bool = False) -> dict[str, Any]:
        """submitit.SlurmExecutor parameters (sbatch's names)."""
        nodes, tasks = self.tasks(training=training, sharded=sharded)
        params: dict[str, Any] = {
            "job_name": job_name, "time": self.time_min, "nodes": nodes, "ntasks_per_node": tasks,
            "cpus_per_task": self.cpus_per_task, "array_parallelism": self.array_parallelism,
            "setup": list(self.setup), "stderr_to_stdout": False,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node if training else min(tasks, self.gpus_per_node)
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}M"
        if self.sbatch:
            params["additional_parameters"] = dict(self.sbatch)
        return params


def list_profiles() -> list[str]:
    return sorted(p.stem for p in CLUSTERS_DIR.glob("*.yaml"))


def load_profile(name_or_path: str) -> ClusterProfile:
    """A shipped profile by name (slurm/clusters/NAME.yaml) or a YAML file by path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = CLUSTERS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProfileError(f"no cluster profile {name_or_path!r}: shipped profiles are {list_profiles()} "
                              f"(slurm/clusters/), or give a path to a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a cluster profile is a mapping of fields (partition, gpus_per_node, ...)")
    data.setdefault("name", path.stem)
    try:
        return ClusterProfile(**data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())
        raise ProfileError(f"{path}: {problems} (fields: {', '.join(ClusterProfile.model_fields)})") from None
