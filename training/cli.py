"""``sgan-train`` (and ``python -m training``): train a semi-supervised GAN classifier from a few labels."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from types import FrameType

from model import ModelDirectoryError
from training.config import TrainConfig, add_config_arguments, apply_preset, config_from_args, resume_config
from training.readers import DataError
from training.run import train
from training.rundir import RunDirectory
from training.trainer import Trainer

logger = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgan-train",
        description="Fit a K+1-class discriminator and a generator from a few labelled and many unlabelled "
        "images. The defaults are the best known recipe for the image size. Network options set fields of "
        "the recipe's configs (model/config.py), e.g. --discriminator conv_channels=32,64 --generator "
        "base_channels=64; the model card records them, so the server rebuilds the same networks.",
    )
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    return parser


def config_for(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    run_dir = RunDirectory(args.out)
    if args.resume:  # resuming may extend a run and change how it reports, nothing else
        return resume_config(run_dir.read_config(), args)
    if not args.dataset:
        raise DataError("--dataset is required (e.g. --dataset fashion-mnist)")
    if run_dir.holds_run():
        raise DataError(f"{args.out} already holds a training run: pass --resume, or choose another --out")
    return config_from_args(args, ["sgan-train", *argv])


def install_stop_handlers(trainer: Trainer) -> None:
    """Ctrl-C / SIGTERM: finish the current step, save the state, exit cleanly; a second one kills."""

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        logger.warning("%s: stopping after this step and saving the state", signal.Signals(signum).name)
        trainer.stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    apply_preset(parser, argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = config_for(args, argv)
        metrics = train(config, resume=args.resume, on_trainer=install_stop_handlers)
    except (DataError, ModelDirectoryError, FileNotFoundError) as exc:
        print(f"sgan-train: error: {exc}", file=sys.stderr)
        return 2
    if metrics.get("stopped"):
        print(f"stopped; resume with: sgan-train --out {config.out} --resume", file=sys.stderr)
        return 130
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
