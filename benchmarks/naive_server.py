"""The simple alternative that ``serve_load.py`` measures the real server against.

What a first version of the service would look like: FastAPI, the same model directory loaded with the same
``load_model_dir``, the same image pipeline (``model.imaging``) and the same answer fields,
but one discriminator forward pass per request, run inline in the request handler, with torch's default
thread count. No micro-batching, no off-loop decoding, no limits, no metrics.

    python benchmarks/naive_server.py --port 8001 [--model-dir DIR]

``SGAN_MODEL_DIR`` is read as the real server reads it; empty or unset means the bundled model.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from PIL import Image

from model import BUNDLED_MODEL_DIR, class_probabilities, load_model_dir, realness_from_logits
from model.imaging import pixels_to_tensor, to_model_pixels


def create_naive_app(model_dir: Path) -> FastAPI:
    model = load_model_dir(model_dir)
    card = model.card
    app = FastAPI(title="naive SGAN classifier")

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready", "model_id": card.model_id}

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        data = await request.body()
        try:
            # (C, H, W) uint8, in the training polarity
            pixels, inverted = to_model_pixels(Image.open(io.BytesIO(data)), card.image_shape, card.background)
        except Exception as exc:
            raise HTTPException(status_code=400, detail=f"cannot decode the image: {exc}") from None
        with torch.inference_mode():
            logits = model.discriminator(pixels_to_tensor(pixels[None]))  # (1, K)
            probabilities = class_probabilities(logits)[0].tolist()
            realness = float(realness_from_logits(logits)[0])
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {
            "label": card.class_names[best],
            "index": best,
            "confidence": probabilities[best],
            "probabilities": dict(zip(card.class_names, probabilities, strict=True)),
            "realness": realness,
            "inverted": inverted,
            "model_id": card.model_id,
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The naive one-forward-per-request server (a benchmark peer).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model-dir", default=os.environ.get("SGAN_MODEL_DIR") or None)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir) if args.model_dir else BUNDLED_MODEL_DIR
    uvicorn.run(create_naive_app(model_dir), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
