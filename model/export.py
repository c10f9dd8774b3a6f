"""``sgan-export``: a model directory as ONNX files, for onnxruntime, Triton or any other ONNX runtime.

```
discriminator  pixels float32 (batch, C, H, W) in [0, 1]  ->  logits (batch, K), probabilities (batch, K),
                                                              realness (batch,)
generator      latent float32 (batch, Z)                  ->  images float32 (batch, C, H, W) in [0, 1]
```

The batch dimension is dynamic. The network standardises its own input, so the only preprocessing left to a
caller is the one image pipeline (docs/design.md, Image pipeline): decode, resize, polarity, ``uint8 / 255``. That
contract, the class names and the whole model card travel in each file's metadata (``sgan.*`` keys).

Exported with torch's ``torch.export``-based exporter (``dynamo=True``, torch's default since 2.9, which needs
onnxscript), after weight norm is folded into plain weights. onnx, onnxscript and onnxruntime are imported by
this module only, on use: ``pip install 'sgan-service[onnx]'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from model.directory import LoadedModel, ModelCard, ModelDirectoryError, load_model_dir
from model.imaging import pixels_to_tensor, tensor_to_pixels
from model.kplus1 import class_probabilities, realness_from_logits
from model.networks import fold_weight_norm

if TYPE_CHECKING:
    from torch.onnx import ONNXProgram

logger = logging.getLogger(__name__)

DISCRIMINATOR_INPUT = "pixels"
DISCRIMINATOR_OUTPUTS = ("logits", "probabilities", "realness")
GENERATOR_INPUT = "latent"
GENERATOR_OUTPUT = "images"
# The exporter's dependencies are optional; this is what to install when they are missing.
INSTALL_HINT = "pip install 'sgan-service[onnx]' (onnx, onnxscript, onnxruntime)"


class _ScoredDiscriminator(nn.Module):
    """The discriminator with the K+1 read-out (model/kplus1.py) in the graph, so a runtime gets what /classify
    answers, not bare logits."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.discriminator(pixels)  # (B, K)
        return logits, class_probabilities(logits), realness_from_logits(logits)


def _polarity_step(background: str) -> str:
    if background == "mixed":
        return "no inversion (the training images had mixed backgrounds)"
    border = "the mean of its 1-pixel border, dark below 127.5"
    return f"invert when the image's background ({border}) is not '{background}'"


def preprocessing_metadata(card: ModelCard) -> dict[str, str]:
    """The ``sgan.*`` metadata of an exported file: what a caller must do to an image before the network."""
    channels, height, width = card.image_shape
    return {
        "sgan.model_id": card.model_id,
        "sgan.class_names": json.dumps(card.class_names),
        "sgan.image_shape": json.dumps([channels, height, width]),
        "sgan.input": f"float32 pixels in [0, 1] (uint8 / 255), shape (batch, {channels}, {height}, {width}), "
        f"colour mode {card.normalization.get('color_mode')}; the network standardises them itself",
        "sgan.preprocessing": "decode (first frame, EXIF orientation, transparency onto white) -> "
        f"{card.normalization.get('color_mode')} -> resize to {height}x{width} with "
        f"{card.normalization.get('resize', 'LANCZOS')} (no crop) -> {_polarity_step(card.background)} -> uint8 / 255",
        "sgan.background": card.background,
        "sgan.normalization": json.dumps(card.normalization),
        "sgan.outputs": "probabilities = softmax(logits) = p(class | x, real); realness = sigmoid(logsumexp(logits)) "
        "= p(real | x), the K+1 discriminator's fake class having logit 0",
        "sgan.card": json.dumps(card.to_dict()),
    }


def _quiet_exporter() -> None:
    # The exporter warns, once per process, about torchvision operators it cannot register: not ours.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    # and its graph optimiser logs every pass at INFO.
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)


def discriminator_program(loaded: LoadedModel) -> ONNXProgram:
    """The discriminator (weight norm folded, in eval mode) as an ONNX program with a dynamic batch."""
    _quiet_exporter()
    fold_weight_norm(loaded.discriminator)
    module = _ScoredDiscriminator(loaded.discriminator).eval()
    # Two images: an example batch of one would fix the batch dimension at 1.
    example = torch.rand(2, *loaded.card.image_shape)
    program = torch.onnx.export(
        module,
        (example,),
        dynamo=True,
        input_names=[DISCRIMINATOR_INPUT],
        output_names=list(DISCRIMINATOR_OUTPUTS),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    assert program is not None
    _describe(program, loaded.card, "the K+1 discriminator of a semi-supervised GAN: class probabilities, realness")
    return program


def generator_program(loaded: LoadedModel) -> ONNXProgram:
    """The generator (batch norm in eval mode) as an ONNX program with a dynamic batch."""
    _quiet_exporter()
    fold_weight_norm(loaded.generator)
    generator = loaded.generator.eval()
    example = generator.sample_latent(2, generator=torch.Generator().manual_seed(0), device="cpu")
    program = torch.onnx.export(
        generator,
        (example,),
        dynamo=True,
        input_names=[GENERATOR_INPUT],
        output_names=[GENERATOR_OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    assert program is not None
    config = loaded.card.generator
    _describe(program, loaded.card, "the generator of a semi-supervised GAN: latent -> images in [0, 1]")
    program.model.metadata_props["sgan.latent"] = f"float32 (batch, {config.latent_size}) drawn from " + (
        "U(0, 1)" if config.latent_distribution == "uniform" else "N(0, 1)"
    )
    return program


def _describe(program: ONNXProgram, card: ModelCard, what: str) -> None:
    program.model.doc_string = f"sgan-service model {card.model_id}: {what}"
    program.model.metadata_props.update(preprocessing_metadata(card))


def onnx_bytes(program: ONNXProgram) -> bytes:
    """The serialised model, for an in-memory onnxruntime session (the server's onnxruntime backend)."""
    return bytes(program.model_proto.SerializeToString())


def max_difference(loaded: LoadedModel, model: bytes | str | Path, pixels: np.ndarray, batch_size: int = 500) -> dict:
    """onnxruntime against torch on uint8 images (N, C, H, W): the largest |difference| of the probabilities and
    of the realness over all images."""
    import onnxruntime  # optional: INSTALL_HINT

    session = onnxruntime.InferenceSession(
        model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"]
    )
    worst = {"probabilities": 0.0, "realness": 0.0}
    for start in range(0, len(pixels), batch_size):
        inputs = pixels_to_tensor(pixels[start : start + batch_size])  # (B, C, H, W) in [0, 1]
        _, probabilities, realness = session.run(list(DISCRIMINATOR_OUTPUTS), {DISCRIMINATOR_INPUT: inputs.numpy()})
        with torch.inference_mode():
            logits = loaded.discriminator(inputs)
            reference = {"probabilities": class_probabilities(logits), "realness": realness_from_logits(logits)}
        for name, value in (("probabilities", probabilities), ("realness", realness)):
            difference = float(np.abs(value - reference[name].numpy()).max())
            worst[name] = max(worst[name], difference)
    return worst


def generated_pixels(loaded: LoadedModel, count: int, seed: int = 0) -> np.ndarray:
    """``count`` of the model's own generated images as uint8 (N, C, H, W): images of its domain, for a check
    that needs no dataset."""
    generator = loaded.generator.eval()
    with torch.inference_mode():
        latent = generator.sample_latent(count, generator=torch.Generator().manual_seed(seed), device="cpu")
        return tensor_to_pixels(generator(latent))


@dataclass
class ExportResult:
    path: Path
    seconds: float
    size_bytes: int


def export_onnx(loaded: LoadedModel, out: Path, generator_out: Path | None = None) -> list[ExportResult]:
    """Write the discriminator to ``out`` (and the generator to ``generator_out``): one file each, weights inside."""
    jobs: list[tuple[Path, Any]] = [(out, discriminator_program)]
    if generator_out is not None:
        jobs.append((generator_out, generator_program))
    results = []
    for path, build in jobs:
        start = time.perf_counter()
        program = build(loaded)
        path.parent.mkdir(parents=True, exist_ok=True)
        program.save(str(path), external_data=False)
        results.append(ExportResult(path, time.perf_counter() - start, path.stat().st_size))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgan-export",
        description="Export a model directory's discriminator (and optionally its generator) to ONNX, with a "
        "dynamic batch and the preprocessing contract in the file's metadata; then check onnxruntime against "
        f"torch. Needs: {INSTALL_HINT}.",
    )
    parser.add_argument("model_dir", type=Path, help="a model directory written by sgan-train")
    output = parser.add_argument_group("output")
    output.add_argument("--onnx", type=Path, required=True, help="where to write the discriminator, e.g. d.onnx")
    output.add_argument("--generator-onnx", type=Path, help="also write the generator there")
    check = parser.add_argument_group("check")
    check.add_argument(
        "--check-images",
        type=int,
        default=256,
        help="compare onnxruntime with torch on this many of the model's own generated images (0: skip)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so before a long trace)
    except ImportError:
        logger.error("the ONNX exporter is not installed: %s", INSTALL_HINT)
        return 2
    try:
        loaded = load_model_dir(args.model_dir)
    except ModelDirectoryError as exc:
        logger.error("%s", exc)
        return 1
    for result in export_onnx(loaded, args.onnx, args.generator_onnx):
        logger.info("wrote %s: %.1f MiB in %.1f s", result.path, result.size_bytes / 2**20, result.seconds)
    if args.check_images > 0:
        worst = max_difference(loaded, args.onnx, generated_pixels(loaded, args.check_images))
        logger.info(
            "onnxruntime vs torch on %d generated images: max |diff| probabilities %.2e, realness %.2e",
            args.check_images,
            worst["probabilities"],
            worst["realness"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
