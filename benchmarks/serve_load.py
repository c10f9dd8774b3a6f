"""Serving benchmark: the real server beside a naive one, under load, over a long soak, and /sample timed.

    python benchmarks/serve_load.py                                   # everything, about 6 minutes on 2 cores
    python benchmarks/serve_load.py --duration 5 --soak-requests 5000 # a quick pass
    python benchmarks/serve_load.py --profile                         # also a py-spy profile at the top concurrency

Each server runs as a real process on 127.0.0.1: ``python -m app`` (the real server, its defaults, the bundled
model unless ``--model-dir``) and ``benchmarks/naive_server.py`` (one forward pass per request, same model).
Load comes from Debian's ``wrk`` with one thread pinned to one core (``taskset``), posting a 28x28 PNG made
from the first Fashion-MNIST test image as a raw ``image/png`` body (``benchmarks/wrk_post.lua``); its own CPU
use is reported beside the server's, so a starved server would show. Errors are wrk's non-2xx answers plus
its socket errors (connect, read, write, timeout). RSS is the server's VmRSS from /proc (its worker
processes included), read before and after each run.

Also measured: the in-process limit (decode + preprocess + batched forward, no HTTP, in this process), GET
/sample latency, and a soak (``--soak-requests`` classify requests to a fresh server: RSS growth and errors).
Results go to ``benchmarks/results/serving.json`` and ``serving.md``; the notes below the marker line of
``serving.md`` are hand-written and kept when the file is rewritten.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
RESULTS_STEM = BENCHMARKS / "results" / "serving"
WRK_SCRIPT = BENCHMARKS / "wrk_post.lua"
NAIVE_SERVER = BENCHMARKS / "naive_server.py"
NOTES_MARKER = "<!-- Notes below this line are written by hand and kept when serve_load.py rewrites this file. -->"

# The targets (2 cores, bundled model, concurrency 64, 28x28 PNG).
TARGET_CONCURRENCY = 64
TARGET_SPEEDUP_OVER_NAIVE = 2.0
TARGET_SHARE_OF_IN_PROCESS = 0.30
TARGET_P99_MS = 100.0
TARGET_SOAK_RSS_GROWTH_PCT = 5.0


# ---------------------------------------------------------------------------------------------- processes


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on: the command name before it may contain spaces."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (uvicorn's worker processes, when there are several)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError):
                continue  # exited meanwhile
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def rss_mib(pid: int) -> float:
    """Resident memory of a process tree (VmRSS), MiB."""
    total_kib = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        total_kib += int(found.group(1)) if found else 0
    return total_kib / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree (all threads), seconds."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / _clock_ticks()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def running_server(name: str, model_dir: Path | None, log_dir: Path, extra_env: dict[str, str]) -> Iterator[Server]:
    """Start ``sgan`` (python -m app) or ``naive`` on a free port, wait until /ready is 200, stop it on exit."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("SGAN_")}
    if model_dir is not None:
        env["SGAN_MODEL_DIR"] = str(model_dir)  # unset: both servers serve the bundled model
    if name == "sgan":
        env.update({"SGAN_HOST": "127.0.0.1", "SGAN_PORT": str(port), **extra_env})
        command = [sys.executable, "-m", "app"]
    else:
        command = [sys.executable, str(NAIVE_SERVER), "--host", "127.0.0.1", "--port", str(port)]
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, process, port, log_path)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} server exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} server not ready after 120 s:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.base_url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def settle(server: Server, timeout_s: float = 60.0) -> None:
    """Wait until the server is idle: requests a finished wrk run left queued (its connections closed, but a
    one-at-a-time server still computes them) must not be charged to the next run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = server.cpu_seconds()
        time.sleep(0.25)
        if server.cpu_seconds() - before < 0.05:  # under a fifth of a core
            return


def server_log_problems(server: Server) -> int:
    """Lines in the server's log that report a failure (tracebacks, ERROR records)."""
    text = server.log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "Traceback" in line or " ERROR " in line or line.startswith("ERROR"))


# ---------------------------------------------------------------------------------------------- load


def run_wrk(
    url: str,
    body_file: Path,
    connections: int,
    duration_s: float,
    cpu: int | None,
    timeout_s: float,
    max_requests: int = 0,
) -> dict[str, Any]:
    """One wrk run (one thread, pinned to ``cpu``); its counts, latency percentiles and its own CPU time."""
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    env = {**os.environ, "WRK_BODY_FILE": str(body_file), "WRK_MAX_REQUESTS": str(max_requests)}
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        # wait4 gives the child's own CPU time: how much of the machine the load generator took.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read().decode(errors="replace")
    found = re.search(r"^WRK_JSON (\{.*\})$", text, re.MULTILINE)
    if process.returncode != 0 or not found:
        raise RuntimeError(f"wrk failed ({process.returncode}): {' '.join(command)}\n{text}")
    raw = json.loads(found.group(1))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    latency = {key: value / 1000.0 for key, value in raw["latency_us"].items()}  # ms
    return {
        "connections": connections,
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "latency_ms": {key: round(value, 3) for key, value in latency.items()},
        "errors": {
            "total": errors["status"] + socket_errors,
            "non_2xx": errors["status"],
            "socket": socket_errors,
            **errors,
        },
        "wrk_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    }


def inference_counters(base_url: str) -> tuple[float, float]:
    """(forward passes, images) so far, from the real server's Prometheus metrics."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    values = {}
    for name in ("sgan_inference_batch_size_count", "sgan_inference_batch_size_sum"):
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        values[name] = float(found.group(1)) if found else 0.0
    return values["sgan_inference_batch_size_count"], values["sgan_inference_batch_size_sum"]


def measure_level(server: Server, connections: int, args: argparse.Namespace, body_file: Path) -> dict[str, Any]:
    url = f"{server.base_url}/classify"
    if args.warmup > 0:
        run_wrk(url, body_file, connections, args.warmup, args.wrk_cpu, args.timeout)
    settle(server)
    # Batch sizes come from /metrics, which answers for all worker processes together.
    counters_before = inference_counters(server.base_url) if server.name == "sgan" else None
    rss_before, cpu_before = server.rss_mib(), server.cpu_seconds()
    result = run_wrk(url, body_file, connections, args.duration, args.wrk_cpu, args.timeout)
    rss_after, cpu_after = server.rss_mib(), server.cpu_seconds()
    settle(server)
    row: dict[str, Any] = {"server": server.name, "concurrency": connections, **result}
    row["rss_mib_before"] = round(rss_before, 1)
    row["rss_mib_after"] = round(rss_after, 1)
    # Percent of one core, as top shows it: 200 is both cores of a 2-core machine.
    row["server_cpu_percent"] = round(100 * (cpu_after - cpu_before) / result["seconds"], 1)
    row["wrk_cpu_percent"] = round(100 * result["wrk_cpu_s"] / result["seconds"], 1)
    if counters_before is not None:
        passes_before, images_before = counters_before
        passes, images = inference_counters(server.base_url)
        row["forward_passes"] = int(passes - passes_before)
        row["mean_batch_size"] = round((images - images_before) / max(1.0, passes - passes_before), 2)
    print(
        f"  {server.name:5s} c={connections:<3d} {row['requests_per_s']:8.1f} req/s  "
        f"p50 {row['latency_ms']['p50']:7.2f} ms  p99 {row['latency_ms']['p99']:7.2f} ms  "
        f"errors {row['errors']['total']}  RSS {rss_before:.0f}->{rss_after:.0f} MiB  "
        f"server CPU {row['server_cpu_percent']:.0f}%  wrk CPU {row['wrk_cpu_percent']:.0f}%",
        flush=True,
    )
    return row


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000
    return {
        "p50": round(float(np.percentile(values, 50)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "mean": round(float(values.mean()), 3),
        "max": round(float(values.max()), 3),
    }


def measure_sample(server: Server, count: int, requests: int) -> dict[str, Any]:
    """GET /sample?n=count (the PNG grid), one request at a time, each with its own seed."""
    url = f"{server.base_url}/sample"
    timings, errors, png_bytes = [], 0, 0
    with httpx.Client(timeout=30) as client:
        client.get(url, params={"n": count, "seed": 0})  # warm-up
        for seed in range(requests):
            start = time.perf_counter()
            response = client.get(url, params={"n": count, "seed": seed, "format": "png"})
            timings.append(time.perf_counter() - start)
            if response.status_code != 200 or response.headers.get("content-type") != "image/png":
                errors += 1
            png_bytes = len(response.content)
    row = {
        "n": count,
        "requests": requests,
        "errors": errors,
        "png_bytes": png_bytes,
        "latency_ms": percentiles_ms(timings),
    }
    print(
        f"  /sample n={count}: p50 {row['latency_ms']['p50']:.2f} ms  p99 {row['latency_ms']['p99']:.2f} ms", flush=True
    )
    return row


def measure_soak(args: argparse.Namespace, model_dir: Path | None, log_dir: Path, body_file: Path) -> dict[str, Any]:
    """A fresh server, a warm-up, then ``--soak-requests`` requests: RSS sampled throughout, errors counted."""
    extra_env = dict(args.server_env)
    with running_server("sgan", model_dir, log_dir, extra_env) as server:
        url = f"{server.base_url}/classify"
        rss_ready = server.rss_mib()
        warmup = run_wrk(
            url,
            body_file,
            args.soak_concurrency,
            600,
            args.wrk_cpu,
            args.timeout,
            max_requests=args.soak_warmup_requests,
        )
        settle(server)
        rss_start = server.rss_mib()
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample_rss() -> None:
            started = time.monotonic()
            while not stop.wait(1.0):
                samples.append((round(time.monotonic() - started, 1), round(server.rss_mib(), 1)))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        # A generous cap on the duration, in case the server stops answering: the count is what ends the run.
        cap_s = max(120.0, args.soak_requests / 50)
        result = run_wrk(
            url, body_file, args.soak_concurrency, cap_s, args.wrk_cpu, args.timeout, max_requests=args.soak_requests
        )
        stop.set()
        sampler.join()
        rss_end = server.rss_mib()
        log_problems = server_log_problems(server)
    peak = max([rss_end, *(rss for _, rss in samples)])
    row = {
        **result,
        "warmup_requests": warmup["requests"],
        "warmup_errors": warmup["errors"]["total"],
        "rss_mib_ready": round(rss_ready, 1),
        "rss_mib_start": round(rss_start, 1),
        "rss_mib_end": round(rss_end, 1),
        "rss_mib_peak": round(peak, 1),
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "rss_growth_from_ready_pct": round(100 * (rss_end - rss_ready) / rss_ready, 2),
        "rss_samples": samples[:: max(1, len(samples) // 60)],  # about 60 points for a plot
        "server_log_problems": log_problems,
    }
    print(
        f"  soak: {row['requests']} requests, {row['requests_per_s']:.0f} req/s, errors {row['errors']['total']}, "
        f"RSS {rss_start:.1f} -> {rss_end:.1f} MiB ({row['rss_growth_pct']:+.2f}%), peak {peak:.1f}",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------------- no HTTP


def measure_in_process(model_dir: Path, png: bytes, batch_size: int, seconds: float) -> dict[str, Any]:
    """Images/s for decode + preprocess + batched forward in this process: the same functions the server
    runs (``prepare_image``, then the engine's forward pass), no HTTP, no event loop, torch on every core."""
    import torch

    from app.engine import InferenceEngine
    from app.imaging import prepare_image
    from app.settings import Settings
    from model import load_model_dir

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    engine = InferenceEngine(load_model_dir(model_dir), max_batch_size=batch_size)
    card, max_pixels = engine.card, Settings().max_pixels

    def one_batch() -> tuple[float, float]:
        start = time.perf_counter()
        pixels = np.stack([prepare_image(png, card, max_pixels).pixels for _ in range(batch_size)])  # (B, C, H, W)
        decoded = time.perf_counter()
        engine._forward(pixels)  # the worker's own forward pass: the code the server runs per micro-batch
        return decoded - start, time.perf_counter() - decoded

    for _ in range(20):
        one_batch()
    decode_s = forward_s = 0.0
    images = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        decode, forward = one_batch()
        decode_s, forward_s, images = decode_s + decode, forward_s + forward, images + batch_size
    engine._executor.shutdown()
    row = {
        "images_per_s": round(images / (decode_s + forward_s), 1),
        "decode_us_per_image": round(1e6 * decode_s / images, 2),
        "forward_us_per_image": round(1e6 * forward_s / images, 2),
        "batch_size": batch_size,
        "torch_threads": threads,
        "images": images,
    }
    print(
        f"  in-process: {row['images_per_s']:.0f} images/s (decode {row['decode_us_per_image']:.1f} us + forward "
        f"{row['forward_us_per_image']:.1f} us per image, batch {batch_size}, {threads} torch threads)",
        flush=True,
    )
    return row


# ---------------------------------------------------------------------------------------------- profile


def profile_server(server: Server, args: argparse.Namespace, body_file: Path, raw_path: Path) -> dict[str, Any]:
    """py-spy samples the server (all threads, active ones only) during a load run at the top concurrency."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    seconds = max(5, round(args.duration))
    command = [
        py_spy,
        "record",
        "--pid",
        str(server.process.pid),
        "--duration",
        str(seconds + 2),
        "--rate",
        "250",
        "--format",
        "raw",
        "--threads",
        "--nonblocking",
        "--subprocesses",
        "--output",
        str(raw_path),
    ]
    if args.wrk_cpu is not None:
        command = ["taskset", "-c", str(args.wrk_cpu), *command]
    concurrency = max(args.concurrency)
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    load = run_wrk(f"{server.base_url}/classify", body_file, concurrency, seconds, args.wrk_cpu, args.timeout)
    _, stderr = spy.communicate(timeout=120)
    if spy.returncode != 0 or not raw_path.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {stderr.decode(errors='replace')}")
    return {
        "concurrency": concurrency,
        "requests_per_s_while_profiled": load["requests_per_s"],
        **summarise_profile(raw_path),
    }


def _frame_name(frame: str) -> str:
    """'classify (app/routes/classify.py:180)' -> 'classify (app/routes/classify.py)', site-packages shortened."""
    found = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not found:
        return frame
    function, path = found.groups()
    path = re.sub(r"^.*/site-packages/", "", path)
    path = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", path)
    path = re.sub(rf"^{re.escape(str(REPO_ROOT))}/", "", path)
    return f"{function} ({path})"


# Where a sample's time goes: the first of these found walking its stack from the leaf up (path fragments of the
# frame's file, or a function name), so a sample counts once, for the code closest to the CPU.
PROFILE_CATEGORIES = (
    ("torch forward pass (engine thread)", ("torch/", "model/networks.py", "model/kplus1.py", "_forward (app/engine")),
    ("image decode + preprocess", ("PIL/", "model/imaging.py", "app/imaging.py")),
    ("micro-batching engine (queue, hand-off to its thread)", ("app/engine.py",)),
    ("route code (read upload, build the answer)", ("app/routes/",)),
    ("metrics (prometheus-client)", ("app/metrics.py", "prometheus_client/")),
    ("body limits middleware", ("app/limits.py",)),
    ("response validation + JSON (pydantic)", ("pydantic", "fastapi/encoders.py", "json/")),
    ("FastAPI/Starlette (routing, dependencies, middleware)", ("fastapi/", "starlette/", "anyio/")),
    ("uvicorn HTTP protocol (parse, send)", ("uvicorn/protocols/", "httptools", "h11/")),
    (
        "event loop, sockets, thread hand-offs",
        ("asyncio/", "uvloop", "concurrent/futures/", "threading.py", "uvicorn/"),
    ),
)


def _category(code: list[str]) -> str:
    for frame in reversed(code):
        for name, fragments in PROFILE_CATEGORIES:
            if any(fragment in frame for fragment in fragments):
                return name
    return "other"


def summarise_profile(raw_path: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's raw output (collapsed stacks): the share of busy samples by thread kind, by category
    (PROFILE_CATEGORIES), by function (self time), and inclusive shares of this project's own functions."""
    self_counts: Counter[str] = Counter()
    own_inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        code = [_frame_name(frame) for frame in frames if not frame.startswith(("process ", "thread "))]
        if not code:
            continue
        total += count
        thread = next((frame for frame in frames if frame.startswith("thread ")), "thread ?")
        # "thread (0x7f..): sgan-torch_0" -> "sgan-torch": one line per kind of thread, all workers together.
        threads[re.sub(r"_\d+$", "", thread.rpartition(": ")[2]) or "?"] += count
        categories[_category(code)] += count
        self_counts[code[-1]] += count
        for name in {frame for frame in code if re.search(r"\((app|model)/", frame)}:
            own_inclusive[name] += count

    def shares(counter: Counter[str], limit: int | None = top) -> list[dict[str, Any]]:
        return [{"name": name, "percent": round(100 * count / total, 1)} for name, count in counter.most_common(limit)]

    return {
        "samples": total,
        "threads": shares(threads, None),
        "categories": shares(categories, None),
        "self": shares(self_counts),
        "own_inclusive": shares(own_inclusive),
    }


# ---------------------------------------------------------------------------------------------- inputs


def benchmark_png(data_dir: str | None) -> tuple[bytes, str]:
    """A 28x28 gray PNG: the first Fashion-MNIST test image when the data is there, else a synthetic garment."""
    from PIL import Image

    try:
        from training.readers import load_dataset

        dataset = load_dataset("fashion-mnist", "test", data_dir=data_dir)
        pixels = np.asarray(dataset.images[0][0], dtype=np.uint8)  # (28, 28)
        source = "Fashion-MNIST test image 0"
    except Exception as exc:  # no dataset on this machine: a light ellipse on black, Fashion-MNIST-like
        print(f"  (no Fashion-MNIST: {exc}; using a synthetic 28x28 image)", flush=True)
        rows, columns = np.mgrid[0:28, 0:28]
        pixels = np.where(((rows - 14) / 11) ** 2 + ((columns - 14) / 7) ** 2 <= 1, 200, 0).astype(np.uint8)
        source = "synthetic 28x28 ellipse"
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue(), source


def build_random_standin(directory: Path) -> Path:
    """The default 28x28 architecture (the MLP recipe, 10 classes) with random weights, float16 files."""
    import torch

    from model import Discriminator, Generator, ModelCard, default_configs, normalization_record, save_model_dir
    from training.readers import KNOWN_DATASETS

    torch.manual_seed(0)
    disc_config, gen_config = default_configs(10, 1, 28, 28)
    card = ModelCard(
        class_names=list(KNOWN_DATASETS["fashion-mnist"].class_names),
        discriminator=disc_config,
        generator=gen_config,
        normalization=normalization_record(disc_config),
        background="dark",
        training={"dataset": "random-weight stand-in for the bundled model (serve_load.py --random-standin)"},
    )
    save_model_dir(directory, Discriminator(disc_config), Generator(gen_config), card, weights_dtype=torch.float16)
    return directory


# ---------------------------------------------------------------------------------------------- report


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(args: argparse.Namespace, model_dir: Path, image_source: str, png: bytes) -> dict[str, Any]:
    from app.settings import Settings
    from model import read_card

    card = read_card(model_dir)
    with _patched_environ(dict(args.server_env)):
        settings = Settings()
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {
            name: _version(name)
            for name in (
                "torch",
                "fastapi",
                "starlette",
                "uvicorn",
                "httptools",
                "uvloop",
                "pydantic",
                "Pillow",
                "numpy",
            )
        },
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
        "wrk_cpu": args.wrk_cpu,
        "model_dir": str(model_dir),
        "model_is_bundled": args.model_dir is None and not args.random_standin,
        "model_is_random_standin": bool(args.random_standin),
        "model_id": card.model_id,
        "discriminator": {
            "architecture": card.discriminator.architecture,
            "hidden_sizes": list(card.discriminator.hidden_sizes),
        },
        "image": {"source": image_source, "bytes": len(png), "size": "28x28", "type": "image/png"},
        "server_settings": {
            key: getattr(settings, key)
            for key in (
                "max_batch_size",
                "max_batch_wait_ms",
                "max_queue",
                "torch_threads",
                "workers",
                "log_level",
                "access_log",
            )
            if hasattr(settings, key)
        },
        "server_env": dict(args.server_env),
    }


@contextmanager
def _patched_environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = {(row["server"], row["concurrency"]): row for row in results["load"]}
    sgan, naive = rows.get(("sgan", TARGET_CONCURRENCY)), rows.get(("naive", TARGET_CONCURRENCY))
    in_process, soak = results.get("in_process"), results.get("soak")
    targets: list[dict[str, Any]] = []

    def add(name: str, goal: str, measured: str, met: bool | None) -> None:
        targets.append({"target": name, "goal": goal, "measured": measured, "met": met})

    c = TARGET_CONCURRENCY
    if sgan and naive:
        ratio = sgan["requests_per_s"] / max(naive["requests_per_s"], 1e-9)
        add(
            "throughput vs naive",
            f">= {TARGET_SPEEDUP_OVER_NAIVE:g}x at c={c}",
            f"{ratio:.2f}x ({sgan['requests_per_s']:.0f} vs {naive['requests_per_s']:.0f} req/s)",
            ratio >= TARGET_SPEEDUP_OVER_NAIVE,
        )
    if sgan and in_process:
        share = sgan["requests_per_s"] / in_process["images_per_s"]
        add(
            "throughput vs in-process limit",
            f">= {100 * TARGET_SHARE_OF_IN_PROCESS:.0f}% at c={c}",
            f"{100 * share:.1f}% ({sgan['requests_per_s']:.0f} of {in_process['images_per_s']:.0f}/s)",
            share >= TARGET_SHARE_OF_IN_PROCESS,
        )
    if sgan:
        p99 = sgan["latency_ms"]["p99"]
        add("p99 latency", f"<= {TARGET_P99_MS:g} ms at c={c}", f"{p99:.1f} ms", p99 <= TARGET_P99_MS)
    sgan_rows = [row for row in results["load"] if row["server"] == "sgan"]
    if sgan_rows:
        errors = sum(row["errors"]["total"] for row in sgan_rows) + (soak["errors"]["total"] if soak else 0)
        add("errors", "0 (all load runs and the soak)", str(errors), errors == 0)
    if soak:
        growth = soak["rss_growth_pct"]
        add(
            "RSS growth over the soak",
            f"<= {TARGET_SOAK_RSS_GROWTH_PCT:g}%",
            f"{growth:+.2f}% over {soak['requests']} requests",
            growth <= TARGET_SOAK_RSS_GROWTH_PCT,
        )
    return targets


def render_markdown(results: dict[str, Any], notes: str) -> str:
    lines = _header_lines(results) + _load_lines(results)
    if results.get("in_process"):
        lines += _in_process_lines(results["in_process"])
    if results.get("sample"):
        lines += _sample_lines(results["sample"])
    if results.get("soak"):
        lines += _soak_lines(results["soak"])
    if results.get("profile"):
        lines += _profile_lines(results["profile"])
    lines += ["", NOTES_MARKER, "", notes.strip("\n"), ""]
    return "\n".join(lines)


def _header_lines(results: dict[str, Any]) -> list[str]:
    """The title, the machine, the model and the request, then the targets table."""
    env = results["environment"]
    model = (
        "the bundled model"
        if env["model_is_bundled"]
        else (
            "a random-weight stand-in with the bundled model's architecture"
            if env["model_is_random_standin"]
            else f"`{env['model_dir']}`"
        )
    )
    lines = [
        "# Serving: throughput, latency, memory and failure behaviour",
        "",
        f"Written by `benchmarks/serve_load.py` on {results['generated']}: `{results['command']}`.",
        f"{env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}, "
        + ", ".join(f"{name} {version}" for name, version in env["packages"].items() if version)
        + f"; {env['wrk']} (1 thread, pinned to CPU {env['wrk_cpu']}).",
        f"Model: {model} (`{env['model_id']}`, {env['discriminator']['architecture']} "
        f"{env['discriminator']['hidden_sizes']}). Request: POST /classify, raw `image/png` body, "
        f"{env['image']['source']} ({env['image']['bytes']} bytes).",
        "Server settings: "
        + ", ".join(f"{key}={value}" for key, value in env["server_settings"].items())
        + (f"; environment {env['server_env']}" if env["server_env"] else "")
        + ".",
        "",
        "## Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for target in results["targets"]:
        met = {True: "yes", False: "**no**", None: "?"}[target["met"]]
        lines.append(f"| {target['target']} | {target['goal']} | {target['measured']} | {met} |")
    return lines


def _load_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Load ({results['settings']['duration_s']:g} s per level after a {results['settings']['warmup_s']:g} s "
        "warm-up)",
        "",
        "`sgan` is the real server (`python -m app`, its defaults); `naive` is `benchmarks/naive_server.py`. "
        "CPU % is of one core (200% = both cores of a 2-core machine). Errors: non-2xx + socket errors. "
        "Mean batch: images per forward pass, from /metrics (all workers together).",
        "",
        "| server | concurrency | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | RSS MiB before -> after "
        "| server CPU % | wrk CPU % | mean batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["load"]:
        latency = row["latency_ms"]
        lines.append(
            f"| {row['server']} | {row['concurrency']} | {row['requests_per_s']:.0f} | {latency['p50']:.2f} | "
            f"{latency['p90']:.2f} | {latency['p99']:.2f} | {latency['max']:.1f} | {row['errors']['total']} | "
            f"{row['rss_mib_before']:.0f} -> {row['rss_mib_after']:.0f} | {row['server_cpu_percent']:.0f} | "
            f"{row['wrk_cpu_percent']:.0f} | {row.get('mean_batch_size') or ''} |"
        )
    return lines


def _in_process_lines(ip: dict[str, Any]) -> list[str]:
    return [
        "",
        "## In-process limit (no HTTP)",
        "",
        f"**{ip['images_per_s']:.0f} images/s**: `prepare_image` (decode + preprocess) "
        f"{ip['decode_us_per_image']:.1f} us per image, then the engine's forward pass in batches of "
        f"{ip['batch_size']}, {ip['forward_us_per_image']:.1f} us per image ({ip['torch_threads']} torch threads), "
        "one after the other in one process.",
    ]


def _sample_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## GET /sample (PNG grid, one request at a time)",
        "",
        "| n | requests | p50 ms | p90 ms | p99 ms | mean ms | errors | PNG bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        latency = row["latency_ms"]
        lines.append(
            f"| {row['n']} | {row['requests']} | {latency['p50']:.2f} | {latency['p90']:.2f} | "
            f"{latency['p99']:.2f} | {latency['mean']:.2f} | {row['errors']} | {row['png_bytes']} |"
        )
    return lines


def _soak_lines(soak: dict[str, Any]) -> list[str]:
    latency = soak["latency_ms"]
    return [
        "",
        f"## Soak ({soak['requests']} requests at concurrency {soak['connections']}, a fresh server)",
        "",
        "| requests | req/s | p50 ms | p99 ms | errors | RSS MiB ready | after warm-up | end | peak | growth "
        "| growth from ready | server log errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {soak['requests']} | {soak['requests_per_s']:.0f} | {latency['p50']:.2f} | {latency['p99']:.2f} | "
        f"{soak['errors']['total']} | {soak['rss_mib_ready']:.1f} | {soak['rss_mib_start']:.1f} | "
        f"{soak['rss_mib_end']:.1f} | {soak['rss_mib_peak']:.1f} | {soak['rss_growth_pct']:+.2f}% | "
        f"{soak['rss_growth_from_ready_pct']:+.2f}% | {soak['server_log_problems']} |",
        "",
        f"Growth is measured from after a {soak['warmup_requests']}-request warm-up (allocator pools and "
        "torch's lazy set-up fill during the first requests) to the end of the soak.",
    ]


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Where the time goes (py-spy, the real server at c={profile['concurrency']})",
        "",
        f"{profile['samples']} samples of busy threads, all worker processes, during a load run that made "
        f"{profile['requests_per_s_while_profiled']:.0f} requests/s while sampled (py-spy shares wrk's core). "
        "A sample counts for the code closest to the CPU (`PROFILE_CATEGORIES` in serve_load.py); C code "
        "that runs under the event loop with no Python frame (uvloop, httptools, socket writes) counts as "
        "the event loop.",
        "",
        "| thread | % of samples | | category | % of samples |",
        "|---|---|---|---|---|",
    ]
    thread_rows, category_rows = profile["threads"], profile["categories"]
    for index in range(max(len(thread_rows), len(category_rows))):
        thread = thread_rows[index] if index < len(thread_rows) else None
        category = category_rows[index] if index < len(category_rows) else None
        lines.append(
            (f"| {thread['name']} | {thread['percent']} | " if thread else "| | | ")
            + (f"| {category['name']} | {category['percent']} |" if category else "| | |")
        )
    lines += ["", "| function (self) | % | this project's function (inclusive) | % |", "|---|---|---|---|"]
    for own, inclusive in zip(profile["self"], profile["own_inclusive"], strict=False):
        lines.append(f"| `{own['name']}` | {own['percent']} | `{inclusive['name']}` | {inclusive['percent']} |")
    return lines


def kept_notes(md_path: Path) -> str:
    if not md_path.exists():
        return ""
    text = md_path.read_text()
    return text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in text else ""


# ---------------------------------------------------------------------------------------------- main


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key.startswith("SGAN_"):
        raise argparse.ArgumentTypeError(f"expected SGAN_NAME=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    load = parser.add_argument_group("load")
    load.add_argument("--duration", type=float, default=20.0, help="seconds per concurrency level (default 20)")
    load.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds before each level (default 3)")
    load.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    load.add_argument("--servers", nargs="+", choices=("sgan", "naive"), default=["sgan", "naive"])
    load.add_argument("--timeout", type=float, default=5.0, help="wrk's per-request timeout, counted as an error")
    default_cpu = max(os.sched_getaffinity(0)) if len(os.sched_getaffinity(0)) > 1 else None
    load.add_argument(
        "--wrk-cpu",
        type=int,
        default=default_cpu,
        help=f"the CPU wrk (and py-spy) is pinned to (default {default_cpu}; -1: not pinned)",
    )
    soak = parser.add_argument_group("soak")
    soak.add_argument("--soak-requests", type=int, default=50_000, help="0 skips the soak (default 50000)")
    soak.add_argument("--soak-warmup-requests", type=int, default=2_000)
    soak.add_argument("--soak-concurrency", type=int, default=TARGET_CONCURRENCY)
    other = parser.add_argument_group("other measurements")
    other.add_argument("--sample-n", type=int, nargs="*", default=[16, 64], help="GET /sample sizes to time")
    other.add_argument("--sample-requests", type=int, default=30, help="requests per /sample size (default 30)")
    other.add_argument("--in-process-seconds", type=float, default=5.0, help="0 skips the in-process limit")
    other.add_argument("--profile", action="store_true", help="py-spy the real server under the top concurrency")
    other.add_argument("--profile-raw", type=Path, help="keep py-spy's raw stacks there (speedscope/flamegraph input)")
    setup = parser.add_argument_group("setup")
    setup.add_argument("--model-dir", type=Path, help="default: the bundled model (SGAN_MODEL_DIR unset)")
    setup.add_argument(
        "--random-standin",
        action="store_true",
        help="serve a random-weight model with the bundled model's architecture",
    )
    setup.add_argument(
        "--server-env",
        type=_key_value,
        action="append",
        default=[],
        metavar="SGAN_NAME=VALUE",
        help="a setting for the real server (repeatable), e.g. SGAN_MAX_BATCH_WAIT_MS=2",
    )
    setup.add_argument("--data-dir", help="where to find Fashion-MNIST for the request image")
    setup.add_argument("--results", type=Path, default=RESULTS_STEM, help="path stem for .json and .md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.wrk_cpu == -1:
        args.wrk_cpu = None
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    from model import BUNDLED_MODEL_DIR

    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch_dir:
        scratch = Path(scratch_dir)
        model_dir: Path | None = args.model_dir
        if args.random_standin:
            model_dir = build_random_standin(scratch / "standin-model")
        elif model_dir is None and not (BUNDLED_MODEL_DIR / "model.json").is_file():
            print(f"no bundled model at {BUNDLED_MODEL_DIR}: pass --model-dir or --random-standin", file=sys.stderr)
            return 2
        served_dir = model_dir if model_dir is not None else BUNDLED_MODEL_DIR
        png, image_source = benchmark_png(args.data_dir)
        body_file = scratch / "request.png"
        body_file.write_bytes(png)
        command = " ".join(["python benchmarks/serve_load.py", *(sys.argv[1:] if argv is None else argv)])
        results: dict[str, Any] = {
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "timeout_s": args.timeout},
            "environment": environment(args, served_dir, image_source, png),
            "load": [],
        }
        extra_env = dict(args.server_env)

        if args.in_process_seconds > 0:
            from app.settings import Settings

            with _patched_environ(extra_env):
                batch_size = Settings().max_batch_size
            results["in_process"] = measure_in_process(served_dir, png, batch_size, args.in_process_seconds)

        for name in args.servers:
            with running_server(name, model_dir, scratch, extra_env if name == "sgan" else {}) as server:
                results.setdefault("rss_mib_ready", {})[name] = round(server.rss_mib(), 1)
                for connections in args.concurrency:
                    results["load"].append(measure_level(server, connections, args, body_file))
                if name == "sgan":
                    results["sample"] = [measure_sample(server, n, args.sample_requests) for n in args.sample_n]
                    if args.profile:
                        raw_path = args.profile_raw or scratch / "profile.txt"
                        results["profile"] = profile_server(server, args, body_file, raw_path)
                results.setdefault("server_log_problems", {})[name] = server_log_problems(server)

        if args.soak_requests > 0:
            results["soak"] = measure_soak(args, model_dir, scratch, body_file)

    results["targets"] = evaluate_targets(results)
    for target in results["targets"]:
        print(f"  target {target['target']}: {target['measured']} ({'met' if target['met'] else 'MISSED'})")
    write_results(results, args.results)
    return 0


def write_results(results: dict[str, Any], stem: Path) -> None:
    """``stem``.json and ``stem``.md, the markdown keeping the hand-written notes below its marker line."""
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path.write_text(render_markdown(results, kept_notes(md_path)))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    sys.exit(main())
