"""``sgan-train`` (and ``python -m training``): train a semi-supervised GAN classifier from a few labels."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from model import ModelDirectoryError
from training.data import DataError
from training.trainer import TrainConfig, Trainer, read_config, train

logger = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgan-train",
        description="Fit a K+1-class discriminator and a generator from a few labelled and many unlabelled "
        "images. The defaults are the best known recipe for the image size.",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset", help="mnist, fashion-mnist, kmnist, cifar10, or a path to IDX/.npz/CIFAR/image folder"
    )
    data.add_argument("--data-dir", help="directory holding the dataset's files (else SGAN_DATA_DIR, ./data)")
    data.add_argument("--download", action="store_true", help="fetch a named dataset with torchvision")
    data.add_argument("--labels-per-class", type=int, default=10, help="labelled images per class (default 10)")
    data.add_argument("--val-size", type=int, default=5000, help="validation images carved from training")
    data.add_argument("--train-subset", type=int, help="use only this many training images (quick runs)")
    data.add_argument("--image-size", type=int, help="image folders: resize to this square size (default 32)")
    data.add_argument("--channels", type=int, choices=(1, 3), help="image folders: 1 (gray) or 3 (RGB)")

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, help="run directory: model/, state/, metrics.jsonl, samples/")
    run.add_argument("--epochs", type=int, help="epochs over the unlabelled set (default: the recipe's)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    run.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1")
    run.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="training-step precision: auto = bf16 autocast on CUDA and on CPUs with native bf16, else fp32",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    run.add_argument("--compile", action="store_true", help="torch.compile the networks (worth it on a GPU)")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument(
        "--baseline", action="store_true", help="labelled images only: no generator, no unlabelled data"
    )
    recipe.add_argument("--architecture", choices=("mlp", "conv"), help="default: mlp for 28x28 gray, else conv")
    recipe.add_argument("--batch-size", type=int, default=100)
    recipe.add_argument("--learning-rate", type=float, help="default: the recipe's (1e-3 mlp, 3e-4 conv)")
    recipe.add_argument("--unsup-weight", type=float, default=1.0, help="weight of the unsupervised loss")
    recipe.add_argument("--augment-shift", type=int, help="random translation of training images, in pixels")
    recipe.add_argument(
        "--augment-flip", action=argparse.BooleanOptionalAction, help="random horizontal flips of training images"
    )
    recipe.add_argument(
        "--fake-noise-fraction", type=float, help="share of each fake batch replaced by noise images (known fakes)"
    )
    recipe.add_argument(
        "--entropy-weight", type=float, help="weight of the conditional entropy of p(y|x) on unlabelled images"
    )
    recipe.add_argument(
        "--consistency-weight",
        type=float,
        help="weight of the mean-teacher term: D vs its EMA on a shifted view of each unlabelled batch",
    )
    recipe.add_argument(
        "--consistency-shift", type=int, default=2, help="largest shift in pixels of the teacher's view"
    )
    recipe.add_argument("--ema-decay", type=float, default=0.999, help="EMA of D's weights used for evaluation")
    networks = parser.add_argument_group(
        "networks",
        "set fields of the recipe's network configs (model/config.py), e.g. --discriminator "
        "conv_channels=32,64 --discriminator hidden_dropout=0.3 --generator base_channels=64; recorded in the "
        "model card, so the server rebuilds the same networks",
    )
    networks.add_argument("--discriminator", action="append", type=_option, default=[], metavar="FIELD=VALUE")
    networks.add_argument("--generator", action="append", type=_option, default=[], metavar="FIELD=VALUE")
    return parser


def _option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    return name.strip(), value.strip()


def config_from_args(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    if args.resume:
        config = read_config(args.out)
        if args.epochs is not None:  # resuming may extend a run, nothing else may change
            config.epochs = args.epochs
        config.progress = not args.no_progress
        return config
    if not args.dataset:
        raise DataError("--dataset is required (e.g. --dataset fashion-mnist)")
    if (Path(args.out) / "state" / "training.pt").exists():
        raise DataError(f"{args.out} already holds a training run: pass --resume, or choose another --out")
    return TrainConfig(
        dataset=args.dataset,
        out=args.out,
        labels_per_class=args.labels_per_class,
        data_dir=args.data_dir,
        download=args.download,
        epochs=args.epochs,
        seed=args.seed,
        val_size=args.val_size,
        baseline=args.baseline,
        architecture=args.architecture,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        unsup_weight=args.unsup_weight,
        ema_decay=args.ema_decay,
        augment_shift=args.augment_shift,
        augment_flip=args.augment_flip,
        fake_noise_fraction=args.fake_noise_fraction,
        entropy_weight=args.entropy_weight,
        consistency_weight=args.consistency_weight,
        consistency_shift=args.consistency_shift,
        discriminator_options=dict(args.discriminator),
        generator_options=dict(args.generator),
        device=args.device,
        precision=args.precision,
        train_subset=args.train_subset,
        image_size=args.image_size,
        channels=args.channels,
        progress=not args.no_progress,
        compile=args.compile,
        command=["sgan-train", *argv],
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def install_stop_handlers(trainer: Trainer) -> None:
        # Ctrl-C / SIGTERM: finish the current step, save the state, exit cleanly; a second one kills.
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            if trainer.stop_requested:
                raise KeyboardInterrupt
            logger.warning("%s: stopping after this step and saving the state", signal.Signals(signum).name)
            trainer.stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    try:
        config = config_from_args(args, argv)
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
