"""microvae's j-trVAE against pyroVED's jiVAE and AtomAI's jrVAE, side by side in one run.

Throughput (default): samples/s of the full training step (forward, ELBO, backward, optimiser step) on
one fixed batch of cards, after warm-up, for the paper's network (encoder 2×256, spatial MLP decoder
3×256, tanh), K = 4 classes, 2 continuous latents, rotation and translation on, at 28×28 and 48×48:

  - microvae: microvae.training's step (class enumerated), all pixels and the default pixel subset
    (TrainConfig.scored_fraction: 5 % of the pixels, at least 40: 5.1 % at 28×28, 5 % at 48×48);
  - pyroVED 0.3.0 ``jiVAE``: ``SVItrainer(enumerate_parallel=True).svi.step`` (TraceEnum_ELBO);
  - AtomAI 0.8.1 ``jrVAE`` (discrete_dim [4], translation on): its own ``train_epoch`` over one batch
    (Gumbel-softmax: one decoder pass per image instead of K).

Quality (``--quality``): ±12°, ±60°, ±120° cards (3000, 28×28, seed 1); microvae with its default
recipe and pyroVED's jiVAE with its documented recipe, same epochs and batch size; matched accuracy,
ARI, and the circular correlation of the learned angle with the true one within each suit (mean).

    python benchmarks/bench_peers.py [--sizes 28 48] [--threads 1] [--device cpu] [--seconds 20] [--json out.json]
    python benchmarks/bench_peers.py --quick                   # smoke run: 28×28, 3 s per measurement
    python benchmarks/bench_peers.py --quality [--epochs 45] [--device cuda]   # --quality --quick: smoke run
    python benchmarks/bench_peers.py --time-to-quality [--budget 600] [--seeds 0] [--threads 2]

Time to quality (``--time-to-quality``): the wall time each model needs to reach issue 15's bars
(matched accuracy ≥ 0.97, angle correlation modulo symmetry ≥ 0.9) on the zoo's ±60° cards
(``make_case('cards_60', seed, 'bench')``: 2000 cards, 28×28), on the same machine. microvae runs
its CLI default (``run_train``: pose run, candidate partitions, main run) at a ladder of epoch
budgets, each a fresh run timed whole; the peers train epoch by epoch with the clock stopped while
they are scored. Each model stops at the bars or when its training time passes ``--budget`` s.

Run it with a Python that has the peers (see benchmarks/README.md: a throw-away venv that shares the
system torch); a peer that does not import is reported as 'not installed'. Writes results/peers.{json,md}
(--quality: peers_quality.*; --quick: *_quick.*); --json also writes the JSON to the path given.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_throughput import paper_config, time_steps, training_step  # noqa: E402

from microvae.cards import make_cards  # noqa: E402
from microvae.encoding import encode_array
from microvae.metrics import adjusted_rand_index, circular_correlation, matched_accuracy  # noqa: E402
from microvae.models import JTRVAEConfig  # noqa: E402
from microvae.training import TrainConfig, fit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NOTES: list[str] = []
warnings.filterwarnings("ignore", message="torch.meshgrid")  # AtomAI's coordinate grid


# --- importing the peers ------------------------------------------------------------------


def _stub_torchvision_if_broken() -> None:
    """pyroVED and AtomAI import torchvision at module level but use it only for plots (make_grid) and
    for CNN backbones that jrVAE never builds. PyPI's torchvision wheels are CUDA builds whose
    extension does not load beside a CPU-only torch; then a stub stands in (recorded in the notes)."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception as error:  # ImportError, or RuntimeError/OSError from a mismatched build
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    package, utils, models = (types.ModuleType(n) for n in ("torchvision", "torchvision.utils", "torchvision.models"))
    package.__path__, package.utils, package.models = [], utils, models

    def unavailable(*args, **kwargs):
        raise RuntimeError("torchvision is stubbed in bench_peers.py")

    utils.make_grid = unavailable
    for name in ("mobilenet_v2", "resnet50", "vgg16"):
        setattr(models, name, unavailable)
    sys.modules.update({"torchvision": package, "torchvision.utils": utils, "torchvision.models": models})
    NOTES.append(f"torchvision replaced by a stub (plots and CNN backbones only) because it did not import: {reason}")


def import_peer(name: str):
    """The peer's module, or an ImportError whose message says why it is not available."""
    if importlib.util.find_spec(name) is None:
        raise ImportError(f"No module named {name!r}")
    _stub_torchvision_if_broken()
    try:
        if name == "pyroved":
            import pyroved

            return pyroved
        import atomai.models

        return atomai.models
    except Exception as error:
        raise ImportError(f"{type(error).__name__}: {error}") from error


def version(module_name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(module_name)
    except PackageNotFoundError:
        return None


def count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


# --- one training step per model ----------------------------------------------------------


def microvae_step(x: torch.Tensor, pixel_fraction: float, bare: bool):
    changes = {"latent_skips": False, "canonical_class_head": False} if bare else {}
    step, model = training_step(paper_config(x.shape[-1], **changes), x, pixel_fraction)
    return step, count(model)


def pyroved_step(x: torch.Tensor):
    pv = import_peer("pyroved")
    size, device = x.shape[-1], str(x.device)
    model = pv.models.jiVAE(
        (size, size), latent_dim=2, discrete_dim=4, invariances=["r", "t"], hidden_dim_e=[256, 256], hidden_dim_d=[256, 256, 256], device=device
    )
    trainer = pv.trainers.SVItrainer(model, lr=1e-3, enumerate_parallel=True, device=device)
    images = x[:, 0]
    return (lambda: trainer.svi.step(images, scale_factor=[1.0, 1.0])), count(model.encoder_z, model.decoder)


def atomai_model(images: torch.Tensor, batch_size: int):
    """AtomAI's jrVAE (the paper's widths, K = 4, translation on) on (N, W, W) ``images``, on their
    device, with its trainer compiled as ``jrVAE.fit`` does (priors 0.1, its default mse loss)."""
    models = import_peer("atomai")
    size, device = images.shape[-1], images.device
    model = models.jrVAE(
        (size, size), latent_dim=2, discrete_dim=[4], translation=True, numlayers_encoder=2, numhidden_encoder=256, numlayers_decoder=3, numhidden_decoder=256
    )
    model.device = str(device)  # AtomAI picks CUDA whenever it is present; follow --device instead
    model.x_coord = model.x_coord.to(device)
    model.encoder_net.to(device)
    model.decoder_net.to(device)
    model.dx_prior, model.kdict_["phi_prior"] = 0.1, 0.1  # what jrVAE.fit sets (its defaults)
    model.compile_trainer((images, None), None, training_cycles=1, batch_size=batch_size)
    model.loss = "mse"  # jrVAE.fit's default; its "ce" calls np.product, which NumPy 2 removed
    return model


def atomai_step(x: torch.Tensor):
    images = x[:, 0]
    model = atomai_model(images, len(images))
    model.train_iterator = [(images,)]  # so that train_epoch() is exactly one step on this batch
    return model.train_epoch, count(model.encoder_net, model.decoder_net)


def throughput(args) -> dict:
    device = torch.device(args.device)
    defaults = TrainConfig()
    models = [
        ("microvae j-trVAE, all pixels", lambda x: microvae_step(x, 1.0, args.bare)),
        (
            f"microvae j-trVAE, default pixel subset ({defaults.pixel_fraction:g}, ≥ {defaults.min_pixels} px)",
            lambda x: microvae_step(x, defaults.scored_fraction(x.shape[-2] * x.shape[-1]), args.bare),
        ),
        ("pyroVED 0.3.0 jiVAE (SVI, TraceEnum_ELBO)", pyroved_step),
        ("AtomAI 0.8.1 jrVAE (Gumbel-softmax)", atomai_step),
    ]
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    rows = []
    for size in args.sizes:
        x = torch.from_numpy(make_cards(args.batch, size=size, max_angle_deg=60.0, seed=0).images).to(device)
        for name, build in models:
            row = {"model": name, "size": size, "batch": args.batch}
            cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
            try:
                step, params = build(x)
                row.update(status="ok", params=params, **time_steps(step, args.batch, seconds=args.seconds, warmup=warmup, device=device))
            except ImportError as error:
                row.update(status="not installed", error=str(error))
            except Exception as error:  # a peer that breaks is a row, not a crash
                row.update(status="failed", error=f"{type(error).__name__}: {error}")
            finally:
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn  # the peers set them
            rows.append(row)
            rate = (
                f"{row['samples_per_s']:9.1f} samples/s ({row['steps']} steps, {row['seconds']:.1f} s)"
                if row["status"] == "ok"
                else f"{row['status']}: {row['error'][:200]}"
            )
            print(f"{size}×{size}  {name:58s} {rate}", flush=True)
    return {"rows": rows, "warmup_steps": warmup}


def throughput_table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | size | steps | samples | seconds | samples/s | microvae (all pixels) / this | microvae (default pixel subset) / this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        size = f"{row['size']}×{row['size']}"
        if row["status"] != "ok":
            lines.append(f"| {row['model']} | {size} | | | | {row['status']} | | |")
            continue
        mine = [r for r in rows if r["size"] == row["size"] and r["model"].startswith("microvae") and r["status"] == "ok"]
        ratios = ["" if row["model"].startswith("microvae") or len(mine) <= i else f"{mine[i]['samples_per_s'] / row['samples_per_s']:.2f}×" for i in (0, 1)]
        lines.append(
            f"| {row['model']} | {size} | {row['steps']} | {row['samples']} | {row['seconds']:.1f} | {row['samples_per_s']:.1f} | {ratios[0]} | {ratios[1]} |"
        )
    return lines


# --- quality on the cards -----------------------------------------------------------------


def train_microvae(images: np.ndarray, args) -> tuple[np.ndarray, np.ndarray]:
    train = TrainConfig(epochs=args.epochs, seed=args.seed, device=args.device, val_fraction=0.0, checkpoint_every=args.epochs)
    with tempfile.TemporaryDirectory() as run_dir:
        model = fit(images, JTRVAEConfig(image_size=images.shape[-1]), train, run_dir).model
    encoded = encode_array(model, images, device=args.device)
    return encoded["class"], encoded["angle_rad"]


def pyroved_recipe(images: np.ndarray, seed: int, device: str):
    """jiVAE's docstring recipe on (N, 1, W, W) ``images``: SVItrainer(lr=1e-3, enumerate_parallel=True),
    KL scale [40 for 10 epochs, then 40 → 3 over 40 epochs, then 3] on the continuous latents and 3
    on the discrete one. Returns (step_epoch(epoch), predict() → (classes, angle_rad))."""
    pv = import_peer("pyroved")
    size, widths = images.shape[-1], JTRVAEConfig()
    hidden = {"hidden_dim_e": list(widths.encoder_hidden), "hidden_dim_d": list(widths.decoder_hidden)}
    model = pv.models.jiVAE((size, size), latent_dim=2, discrete_dim=4, invariances=["r", "t"], seed=seed, device=device, **hidden)
    trainer = pv.trainers.SVItrainer(model, lr=1e-3, enumerate_parallel=True, device=device, seed=seed)
    x = torch.from_numpy(images[:, 0])
    loader = pv.utils.init_dataloader(x, batch_size=TrainConfig().batch_size)
    kl_scale = torch.cat([torch.ones(10) * 40, torch.linspace(40, 3, 40)])

    def step_epoch(epoch: int) -> None:
        trainer.step(loader, scale_factor=[float(kl_scale[min(epoch, len(kl_scale) - 1)]), 3.0])

    def predict() -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():  # its encode() moves data to CUDA whenever present, so call the encoder directly
            loc, _, alpha = (torch.cat(t) for t in zip(*(model.encoder_z(b.to(device)) for b in x.split(256))))
        return alpha.argmax(1).cpu().numpy(), loc[:, 0].cpu().numpy()  # its angle is the first latent, in radians

    return step_epoch, predict


def train_pyroved(images: np.ndarray, args) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pyroved_recipe` for ``args.epochs`` epochs."""
    step_epoch, predict = pyroved_recipe(images, args.seed, args.device)
    for epoch in range(args.epochs):
        step_epoch(epoch)
    return predict()


def quality(args) -> dict:
    rows = []
    for angle in args.angles:
        cards = make_cards(args.n, size=28, max_angle_deg=angle, seed=1)
        for name, train in (("microvae j-trVAE (defaults)", train_microvae), ("pyroVED 0.3.0 jiVAE", train_pyroved)):
            row, started = {"model": name, "max_angle_deg": angle, "epochs": args.epochs}, time.perf_counter()
            try:
                predicted, angles = train(cards.images, args)
                per_suit = [circular_correlation(cards.angle_rad[cards.labels == s], angles[cards.labels == s]) for s in range(4)]
                row.update(
                    status="ok",
                    accuracy=matched_accuracy(cards.labels, predicted),
                    ari=adjusted_rand_index(cards.labels, predicted),
                    angle_corr=float(np.mean(per_suit)),
                    angle_corr_per_suit=per_suit,
                    class_counts=np.bincount(predicted, minlength=4).tolist(),
                )
            except ImportError as error:
                row.update(status="not installed", error=str(error))
            except Exception as error:
                row.update(status="failed", error=f"{type(error).__name__}: {error}")
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows, "n": args.n, "seed": args.seed, "batch_size": TrainConfig().batch_size}


def quality_table(rows: list[dict]) -> list[str]:
    lines = ["| ±angle | model | matched accuracy | ARI | angle corr (mean over suits) | class counts | s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = f"{r['accuracy']:.3f} | {r['ari']:.3f} | {r['angle_corr']:.3f} | {r['class_counts']}" if r["status"] == "ok" else f"{r['status']} | | |"
        lines.append(f"| {r['max_angle_deg']:g}° | {r['model']} | {cells} | {r['seconds']:.0f} |")
    return lines


# --- time to quality on the zoo's ±60° cards --------------------------------------------------

QUALITY_BARS = {"accuracy": 0.97, "angle_corr_sym": 0.9}


def _scored(case, classes: np.ndarray, angle_rad: np.ndarray, seconds: float, epochs: int) -> dict:
    from bench_discovery import score

    found = score(case, np.asarray(classes, dtype=np.int64), np.asarray(angle_rad, dtype=np.float64))
    found.update(seconds=seconds, epochs=epochs)
    found["meets"] = {key: bool(found.get(key, -1.0) >= bar) for key, bar in QUALITY_BARS.items()}
    return found


def ttq_microvae(case, seed: int, args) -> list[dict]:
    """The CLI default at each epoch budget of ``args.ladder``, each run timed whole (encoding not timed)."""
    from bench_discovery import train_default

    trajectory = []
    for epochs in args.ladder:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            encoded, _ = train_default(case, seed, epochs, args.device, Path(folder), {})
            seconds = time.perf_counter() - started  # includes the one encoding pass train_default makes
        trajectory.append(_scored(case, encoded["class"], encoded["angle_rad"], seconds, epochs))
        print(json.dumps({"model": "microvae", **{k: trajectory[-1][k] for k in ("epochs", "seconds", "accuracy")}}), flush=True)
        if all(trajectory[-1]["meets"].values()) or seconds > args.budget:
            break
    return trajectory


def _epochs_until(case, step_epoch, predict, args, name: str) -> list[dict]:
    """Train by ``step_epoch()`` until the bars or ``args.budget`` s of training; score after each epoch."""
    trajectory, clock, epoch = [], 0.0, 0
    while clock <= args.budget:
        started = time.perf_counter()
        step_epoch(epoch)
        clock += time.perf_counter() - started
        epoch += 1
        classes, angle_rad = predict()
        trajectory.append(_scored(case, classes, angle_rad, clock, epoch))
        print(json.dumps({"model": name, **{k: trajectory[-1][k] for k in ("epochs", "seconds", "accuracy")}}), flush=True)
        if all(trajectory[-1]["meets"].values()):
            break
    return trajectory


def ttq_pyroved(case, seed: int, args) -> list[dict]:
    """pyroVED's jiVAE with :func:`pyroved_recipe`, one epoch at a time."""
    step_epoch, predict = pyroved_recipe(case.patches, seed, args.device)
    return _epochs_until(case, step_epoch, predict, args, "pyroved")


def ttq_atomai(case, seed: int, args) -> list[dict]:
    """AtomAI's jrVAE set up as its ``fit`` does (:func:`atomai_model`, batch 32), one epoch at a time."""
    torch.manual_seed(seed)
    images = case.patches[:, 0]
    model = atomai_model(torch.from_numpy(images).to(args.device), TrainConfig().batch_size)

    def predict():
        z_mean, _, alphas = model.encode(images)
        return np.asarray(alphas).argmax(1), np.asarray(z_mean)[:, 0]  # its angle is the first latent, in radians

    return _epochs_until(case, lambda e: model.train_epoch(), predict, args, "atomai")


def time_to_quality(args) -> dict:
    from microvae.zoo import make_case

    rows = []
    for seed in args.seeds:
        case = make_case("cards_60", seed, "bench")
        for name, run in (("microvae (CLI default)", ttq_microvae), ("pyroVED 0.3.0 jiVAE", ttq_pyroved), ("AtomAI 0.8.1 jrVAE", ttq_atomai)):
            row = {"model": name, "seed": seed, "n": len(case.patches), "window": case.patches.shape[-1]}
            try:
                row.update(status="ok", trajectory=run(case, seed, args))
            except ImportError as error:
                row.update(status="not installed", error=str(error))
            except Exception as error:
                row.update(status="failed", error=f"{type(error).__name__}: {error}")
            rows.append(row)
    return {"rows": rows, "bars": QUALITY_BARS, "budget_s": args.budget, "ladder": args.ladder}


def _first_meeting(trajectory: list[dict], key: str) -> str:
    hit = next((point for point in trajectory if point["meets"][key]), None)
    if hit is not None:
        return f"{hit['seconds']:.0f} s ({hit['epochs']} ep)"
    best = max(trajectory, key=lambda point: point.get(key, -1.0))
    return f"not in {trajectory[-1]['seconds']:.0f} s (best {best.get(key, float('nan')):.3f} at {best['seconds']:.0f} s)"


def ttq_table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | seed | time to accuracy ≥ 0.97 | time to angle corr (mod symmetry) ≥ 0.9 | last point: epochs, s, accuracy, angle |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['seed']} | {r['status']} | | |")
            continue
        last = r["trajectory"][-1]
        lines.append(
            f"| {r['model']} | {r['seed']} | {_first_meeting(r['trajectory'], 'accuracy')} | {_first_meeting(r['trajectory'], 'angle_corr_sym')} | "
            f"{last['epochs']}, {last['seconds']:.0f}, {last['accuracy']:.3f}, {last['angle_corr_sym']:.3f} |"
        )
    return lines


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 28 48; --quick: 28)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seconds", type=float, default=None, help="time budget per measurement, in whole steps (default 20; --quick: 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 5 on CUDA)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bare", action="store_true", help="microvae without its additions to the paper's network (latent skips, canonical class head)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 28×28, 3 s per measurement; with --quality 300 cards, ±60°, 2 epochs (results in *_quick.*)"
    )
    parser.add_argument("--quality", action="store_true", help="train on the cards and score classes and angles instead")
    parser.add_argument("--epochs", type=int, default=45, help="--quality: epochs for both models")
    parser.add_argument("--angles", type=float, nargs="+", default=[12.0, 60.0, 120.0], help="--quality: ±max angles")
    parser.add_argument("--n", type=int, default=3000, help="--quality: number of cards")
    parser.add_argument("--seed", type=int, default=0, help="--quality: training seed")
    parser.add_argument("--time-to-quality", action="store_true", help="wall time to the bars on the zoo's ±60° cards (microvae, pyroVED, AtomAI)")
    parser.add_argument("--budget", type=float, default=600.0, help="--time-to-quality: most training seconds per model")
    parser.add_argument("--ladder", type=int, nargs="+", default=[3, 6, 12, 24, 48], help="--time-to-quality: microvae's epoch budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="--time-to-quality: zoo seeds")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.quick and args.quality:
        args.n, args.epochs, args.angles = 300, 2, [60.0]
    if args.quick and args.time_to_quality:
        args.budget, args.ladder = 10.0, [2]
    args.sizes = args.sizes or ([28] if args.quick else [28, 48])
    args.seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 20.0)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    torch.set_num_threads(args.threads)

    mode = "time_to_quality" if args.time_to_quality else "quality" if args.quality else "throughput"
    result = {"time_to_quality": time_to_quality, "quality": quality, "throughput": throughput}[mode](args)
    lines = {"time_to_quality": ttq_table, "quality": quality_table, "throughput": throughput_table}[mode](result["rows"])
    meta = {
        "command": " ".join(["python", "benchmarks/bench_peers.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": args.device,
        "threads": args.threads,
        "batch": args.batch,
        "seconds_per_measurement": args.seconds,
        "microvae_bare": args.bare,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load": [round(v, 2) for v in os.getloadavg()],
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "versions": {name: version(name) for name in ("torch", "numpy", "pyro-ppl", "pyroved", "atomai", "torchvision")},
        "notes": NOTES,
    }
    stem = {"time_to_quality": "peers_time_to_quality", "quality": "peers_quality", "throughput": "peers"}[mode] + ("_quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    payload = json.dumps({"meta": meta, **result}, indent=2)
    (RESULTS / f"{stem}.json").write_text(payload)
    if args.json is not None:
        args.json.write_text(payload)
    table = "\n".join(
        [
            f"<!-- {meta['command']} | {meta['date']} | device {args.device}, {args.threads} thread(s), load {meta['load']} | {meta['versions']} -->",
            *lines,
            *(f"\nNote: {n}" for n in NOTES),
        ]
    )
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
