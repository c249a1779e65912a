"""One training in several processes on this machine (DDP: one per GPU, or gloo on CPU), by `torchrun`.

`train_distributed` writes the rows and the job to a folder, runs

    torchrun --standalone --nproc_per_node N -m embedfactory.training.launch JOB.json

and returns the first process's report. Every process runs `trainer.train_contrastive` on the same rows
and config; the Trainer gives each its share of every batch (`TrainConfig.processes`), the losses gather
the embeddings of all, and the first process alone writes the model and the checkpoints. Each process
reports what it wrote (`report.<rank>.json`), so that can be checked. The first process appends each
step's loss to a file that the caller's `progress` is fed from while the processes run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import TrainConfig


def train_distributed(rows: list[dict], cfg: TrainConfig, output_dir: str, checkpoints: dict | None = None,
                      processes: int | None = None, card: dict | None = None,
                      progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Train on `processes` (default `cfg.processes`) local processes; `checkpoints`: {"store", "path"} of
    a `checkpoints.StoreCheckpoints` (the path as `Store.path` gives it); `card`: model card fields
    (`trainer.train_contrastive`); `progress(step, steps, loss)`: called for each step as the first
    process logs it. Returns the first process's report, with each process's under `processes`."""
    processes = processes or cfg.processes
    with tempfile.TemporaryDirectory() as work:
        pq.write_table(pa.Table.from_pylist(rows), f"{work}/rows.parquet")
        log = Path(work, "progress.jsonl")
        job = {"rows": f"{work}/rows.parquet", "config": cfg.model_dump(mode="json"), "output_dir": output_dir,
               "checkpoint_dir": f"{work}/trainer", "checkpoints": checkpoints, "report": f"{work}/report",
               "card": card, "progress": str(log)}
        Path(work, "job.json").write_text(json.dumps(job))
        running = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    f"--nproc_per_node={processes}", "-m", "embedfactory.training.launch",
                                    f"{work}/job.json"], env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
                                        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))})
        seen = 0
        while True:
            ended = running.poll() is not None
            lines = log.read_text().splitlines() if log.exists() else []
            for line in lines[seen:len(lines) if ended else len(lines) - 1]:  # the last may be half written
                if progress:
                    progress(*json.loads(line))
                seen += 1
            if ended:
                break
            time.sleep(0.5)
        if running.returncode:
            raise RuntimeError(f"distributed training ({processes} processes) exited {running.returncode}")
        reports = [json.loads(Path(f"{work}/report.{rank}.json").read_text()) for rank in range(processes)]
    return {**reports[0], "processes": [{k: r[k] for k in ("rank", "wrote_model", "checkpoint_saves", "losses")}
                                        for r in reports]}


def main(job_file: str) -> None:
    from ..store import Store
    from .checkpoints import StoreCheckpoints
    from .trainer import train_contrastive

    job = json.loads(Path(job_file).read_text())
    rows = pq.read_table(job["rows"]).to_pylist()
    spec = job["checkpoints"]
    checkpoints = StoreCheckpoints(Store(spec["store"]), spec["path"]) if spec else None
    first = int(os.environ.get("RANK", "0")) == 0

    def progress(step: int, steps: int, loss: float) -> None:
        if first:
            with open(job["progress"], "a") as f:
                f.write(json.dumps([step, steps, loss]) + "\n")

    report = train_contrastive(rows, TrainConfig.model_validate(job["config"]), job["output_dir"], progress,
                               checkpoints=checkpoints, checkpoint_dir=job["checkpoint_dir"], card=job.get("card"))
    Path(f"{job['report']}.{report['rank']}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
