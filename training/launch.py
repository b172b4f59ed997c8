"""Starting `train.py`: config and run folder, devices and processes, logging, stop signals.

* Devices: one process per visible GPU (spawned as 4.1 does, or started by `torchrun`, whose
  RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* variables are honoured), joined by NCCL; on the CPU one process
  with a notice, or `--nprocs N` joined by gloo. A single process runs in place, without a process group.
* Stopping: the first SIGINT (Ctrl+C) or SIGTERM asks every process to stop after its current step;
  rank 0 then saves `G_<step>.pth`/`D_<step>.pth` atomically and the run exits with 128 + signal
  number. A second signal more than a second later aborts at once (the last saved files stay intact).
"""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.atomic import DiskFullError, remove_stale_temps, write_bytes_atomic
from core.checkpoint import CheckpointError
from core.config import ConfigError, HParams, load_config
from core.features import DatasetError
from core.lock import FolderLockedError, folder_lock
from core.runlog import StopFlag, attached_handlers
from core.schema import sovits_config
from training.loop import RunContext, ScorerFactory, Trainer, TrainingError

logger = logging.getLogger(__name__)

__all__ = ["TrainOptions", "run_training"]

SOURCE_DIR = Path(__file__).resolve().parents[1]
CONSOLE_FORMAT = "%(levelname)s:%(name)s:%(message)s"
FILE_FORMAT = "%(asctime)s\t%(name)s\t%(levelname)s\t%(message)s"
# Errors whose message already says what to do: printed without a traceback.
USER_ERRORS = (ConfigError, DatasetError, CheckpointError, TrainingError, DiskFullError, FolderLockedError)


@dataclass
class TrainOptions:
    """What `train.py` was asked to do (see `train.py --help`)."""

    config: str = "./configs/config.json"
    model: str = "44k"
    device: str = "auto"
    nprocs: int | None = None
    num_workers: int | None = None
    scorer_factory: ScorerFactory | None = None  # train.py --eval_metrics: figures of the validation resyntheses


@contextmanager
def _run_logging(model_dir: str, rank: int) -> Iterator[None]:
    """4.1's console (`LEVEL:name:message`) and `train.log` handlers on the root logger, for this run."""
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(CONSOLE_FORMAT if rank == 0 else f"[rank {rank}] {CONSOLE_FORMAT}"))
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    handlers: list[logging.Handler] = [console]
    if rank == 0:
        log_file = logging.FileHandler(os.path.join(model_dir, "train.log"), encoding="utf-8")
        log_file.setFormatter(logging.Formatter(FILE_FORMAT))
        handlers.append(log_file)
    with attached_handlers(handlers):
        yield


def _check_git_hash(model_dir: str, run_log: logging.Logger) -> None:
    """Record the source revision in `githash` (4.1); warn when a resumed run's code changed."""
    if not (SOURCE_DIR / ".git").exists():
        run_log.warning("%s is not a git repository, therefore hash value comparison will be ignored.", SOURCE_DIR)
        return
    try:
        current = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_DIR, capture_output=True,
                                 text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return
    path = os.path.join(model_dir, "githash")
    if os.path.exists(path):
        saved = Path(path).read_text().strip()
        if saved != current:
            run_log.warning("git hash values are different. %s(saved) != %s(current)", saved[:8], current[:8])
    else:
        write_bytes_atomic(path, current.encode())


def _write_run_config(model_dir: str, raw: bytes, run_log: logging.Logger) -> None:
    """`logs/<model>/config.json` = the config this run trains with; a different previous one is kept as
    `config.json.bak`. Called only once every check has passed, so a refused run changes nothing."""
    path = os.path.join(model_dir, "config.json")
    old = Path(path).read_bytes() if os.path.isfile(path) else raw
    if old != raw:
        write_bytes_atomic(path + ".bak", old)
        run_log.info("%s changed; the previous one is kept as config.json.bak", path)
    write_bytes_atomic(path, raw)


@dataclass
class _Run:
    """What every training process of one run shares."""

    hps: HParams
    model_dir: str
    device_type: str
    num_workers: int
    config_bytes: bytes
    scorer_factory: ScorerFactory | None = None


def _worker(rank: int, world_size: int, local_rank: int, run: _Run, parent_stops: bool) -> int:
    """Body of every training process; returns its exit status (0, 1 or 128 + signal)."""
    stop = StopFlag()
    stop.install()
    try:
        hps, model_dir = run.hps, run.model_dir
        with _run_logging(model_dir, rank):
            run_log = logging.getLogger(os.path.basename(os.path.normpath(model_dir)))
            try:
                # A launcher may show each process only its own GPU (then local rank 1 is that process's cuda:0).
                gpu = local_rank % torch.cuda.device_count() if run.device_type == "cuda" else 0
                device = torch.device(f"cuda:{gpu}" if run.device_type == "cuda" else "cpu")
                if device.type == "cpu" and world_size > 1:  # CPU processes share the cores
                    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
                if device.type == "cuda":
                    torch.cuda.set_device(device)
                    torch.backends.cudnn.benchmark = True
                if world_size > 1:
                    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                            world_size=world_size, rank=rank)
                if rank == 0:
                    run_log.info("config: %s", json.dumps(hps.to_dict(), ensure_ascii=False))
                    if device.type == "cpu":
                        run_log.info("Training on the CPU (no CUDA GPU, or --device cpu): it works, but slowly.")
                    _check_git_hash(model_dir, run_log)
                    if world_size > 1:
                        run_log.info("%d processes on %s (%s)", world_size, device.type, dist.get_backend())
                torch.manual_seed(int(hps.train.seed))
                # Crops and volume augmentation draw from Python's RNG (in the main process when no
                # loader workers run; torch seeds each worker's own).
                random.seed(int(hps.train.seed))
                context = RunContext(rank, world_size, device, run.num_workers, stop, run.scorer_factory)
                trainer = Trainer(hps, model_dir, context)
                if rank == 0:
                    _write_run_config(model_dir, run.config_bytes, run_log)
                # A spawning parent gives the stop's exit status itself.
                return stop.exit_code() if trainer.fit() and not parent_stops else 0
            except USER_ERRORS as err:
                if rank == 0 or not isinstance(err, (ConfigError, DatasetError)):
                    run_log.error("%s", err)
                return 1
            except KeyboardInterrupt:  # a second Ctrl+C: saves are atomic, so every file on disk is whole
                run_log.warning("Aborted at once; the checkpoints saved before are intact. Run the same command "
                                "to resume from the newest one.")
                return 128 + (stop.signum or signal.SIGINT)
            finally:
                if dist.is_initialized():
                    dist.destroy_process_group()
    finally:
        stop.restore()


def _spawned(rank: int, world_size: int, run: _Run) -> None:
    sys.exit(_worker(rank, world_size, rank, run, True))


def _spawn(world_size: int, run: _Run) -> int:
    """One process per rank (4.1's torch.multiprocessing spawn); signals are passed on to them."""
    port = str(run.hps.train.port).strip()  # 4.1 needed a JSON string; an integer works too
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", int(port)))
        except OSError:
            raise TrainingError(f"train.port {port} is in use (another training running?); set another "
                                "port in the config") from None
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ["MASTER_PORT"] = port
    ctx = mp.start_processes(_spawned, args=(world_size, run), nprocs=world_size, join=False, start_method="spawn")
    stop = StopFlag()

    def forward(signum: int, frame: object) -> None:
        # Ctrl+C already reached the children through the terminal; they ignore a repeat within a second.
        for process in ctx.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)
        stop.handle(signum, frame)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not ctx.join(timeout=1.0):
            pass
    except mp.ProcessExitedException as err:
        if err.signal_name:  # killed from outside (e.g. by the kernel's out-of-memory killer)
            print(f"ERROR: {err}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stop.exit_code()


def _device_plan(options: TrainOptions) -> tuple[str, int]:
    """(device type, number of processes) for this machine and the options."""
    cuda = torch.cuda.is_available()
    if options.device == "cuda" and not cuda:
        raise TrainingError("--device cuda: training needs an NVIDIA GPU with CUDA (none found)")
    if not cuda or options.device == "cpu":
        return "cpu", options.nprocs or 1
    count = torch.cuda.device_count()
    nprocs = options.nprocs or count
    if nprocs > count:
        raise TrainingError(f"--nprocs {nprocs} but only {count} GPU(s) are visible")
    return "cuda", nprocs


def run_training(options: TrainOptions) -> int:
    """Train as `python train.py -c <config> -m <model>`; returns the process exit status.

    Holds the folder's lock, trains until `train.epochs` (0), a stop signal (128 + signal number, after
    saving) or an error with advice (1); the config is copied to `logs/<model>/config.json` only once
    training could start.
    """
    model_dir = os.path.join("logs", options.model)
    try:
        hps = load_config(options.config)
        sovits_config(hps, options.config, for_training=True)
        device_type, nprocs = _device_plan(options)
        workers = min(5, os.cpu_count() or 1) if options.num_workers is None else max(0, options.num_workers)
        run = _Run(hps, model_dir, device_type, workers, Path(options.config).read_bytes(), options.scorer_factory)
        torchrun = all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        leader = not torchrun or os.environ["RANK"] == "0"
        with folder_lock(model_dir, "train.py") if leader else nullcontext():
            if leader:
                removed = remove_stale_temps(model_dir, "G_") + remove_stale_temps(model_dir, "D_")
                if removed:
                    logger.warning("removed %d temporary file(s) left by an interrupted save in %s", len(removed),
                                   model_dir)
            if torchrun:
                env = os.environ
                return _worker(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]), run, False)
            return _worker(0, 1, 0, run, False) if nprocs == 1 else _spawn(nprocs, run)
    except USER_ERRORS as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 1
