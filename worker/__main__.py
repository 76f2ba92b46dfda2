"""`python -m worker`: a pull-based worker that runs each task's pipeline and reports results."""

from __future__ import annotations

# isort: off
import common.early  # noqa: F401 - first of all: a SIGTERM while the rest imports exits 0
# isort: on
import argparse
import logging
import os
import socket
import sys
from pathlib import Path

import cv2

from common import auth
from common.cli import DefaultsHelpFormatter
from common.config import build, config_or_exit
from common.errors import ConfigError, PipelineSpecError
from common.imageinfo import MAX_IMAGE_PIXELS
from common.pipeline import DEVICES, STAGES, parse_pipeline
from common.runtime import Supervisor, setup_logging, stop_on_signals
from worker.detectors import StageEnv
from worker.group import WorkerGroup
from worker.loop import Worker, WorkerConfig
from worker.models.store import MODEL_DIR_ENV, default_model_dir
from worker.multi import MultiMaster
from worker.pipeline import StageCache

log = logging.getLogger("worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    stages = "; ".join(f"{k}: {v.help}" for k, v in STAGES.items())
    p = argparse.ArgumentParser(prog="python -m worker", description=__doc__,
                                epilog=f"stages: {stages}",
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--master", default="http://127.0.0.1:8000",
                   help="master URL; several, separated by commas, to serve each of them (its own loops, "
                        "leases and connection per master)")
    p.add_argument("--name", default="", help="worker name shown by the master (default host-pid)")
    p.add_argument("--batch", type=int, default=WorkerConfig.batch, help="tasks leased per request (1..256)")
    p.add_argument("--wait-s", type=float, default=WorkerConfig.wait_s, help="long-poll time per request (0..5)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads per detector call, for OpenCV and onnxruntime (0: one per core)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where ONNX detectors (person, objects, onnx:) run: auto takes CUDA or OpenVINO when the "
                        "installed onnxruntime build has it, else the CPU; a stage's device= overrides it")
    p.add_argument("--model-dir", type=Path, default=None,
                   help=f"model cache (default: ${MODEL_DIR_ENV}, else {default_model_dir()}); "
                        "fill it with `python -m worker.models`")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS,
                   help="frames claiming more pixels (read from their header) are refused unread, as an error result")
    p.add_argument("--processes", type=int, default=0,
                   help="run each batch's tasks in a local pool of this many processes (CPU-heavy stages); "
                        "0 or 1: in this process. Use with --batch at least as large")
    p.add_argument("--loops", type=int, default=1,
                   help="pull loops in this process, each registered as its own worker with its own connection: "
                        "concurrency for stages that wait rather than compute (sleep:MS, a remote accelerator), "
                        "at the cost of one process (1..256; not with --processes)")
    p.add_argument("--preload", default="", help="pipeline to load before taking work, e.g. person,face")
    p.add_argument("--token-file", default="", help="file holding the master's token (default: $FRAMEHIVE_TOKEN)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="how much to log")
    args = p.parse_args(argv)
    try:
        if args.preload:
            parse_pipeline(args.preload)
    except ConfigError as e:
        p.error(str(e))
    if args.threads < 0:
        p.error("--threads must be >= 0")
    if args.max_image_pixels < 1:
        p.error("--max-image-pixels must be >= 1")
    return args


def from_flags(args: argparse.Namespace) -> WorkerConfig:
    """The pull loop's config from parsed flags and the token file (or $FRAMEHIVE_TOKEN), for the first
    master given (configs_from_flags: one per master)."""
    return configs_from_flags(args)[0]


def configs_from_flags(args: argparse.Namespace) -> list[WorkerConfig]:
    """One config per master of --master URL1,URL2,...; with several, each worker's name says its master."""
    urls = [u.strip() for u in args.master.split(",") if u.strip()]
    if not urls or len(set(urls)) != len(urls):
        raise ConfigError("--master: give one URL, or several different ones separated by commas")
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    return [build(WorkerConfig, {
        "master_url": url, "token": auth.load_token(args.token_file or None),
        "name": args.name if len(urls) == 1 else f"{name}@{i}",
        "batch": max(args.batch, args.processes), "wait_s": args.wait_s, "processes": args.processes,
        "loops": args.loops}) for i, url in enumerate(urls)]

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = config_or_exit("python -m worker", lambda: configs_from_flags(args))
    config = configs[0]
    setup_logging(args.log_level)
    if args.threads:
        cv2.setNumThreads(args.threads)
    stop = stop_on_signals()
    stages = StageCache(StageEnv(device=args.device, threads=args.threads, model_dir=args.model_dir,
                                 max_image_pixels=args.max_image_pixels))
    try:
        for spec in parse_pipeline(args.preload) if args.preload else ():
            stages.get(spec)
    except (PipelineSpecError, ConfigError, RuntimeError) as e:
        log.error("cannot preload %s: %s", args.preload, e)
        return 2
    if len(configs) > 1:
        worker = MultiMaster(configs, stages=stages)
    else:
        worker = WorkerGroup(config, stages=stages) if config.loops > 1 else Worker(config, stages=stages)
    supervisor = Supervisor("worker", stop)
    supervisor.add(worker, join_timeout_s=60)  # a stop finishes the task in hand and hands back the rest
    return supervisor.run()

if __name__ == "__main__":
    sys.exit(main())
