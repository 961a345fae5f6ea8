"""Encoding throughput: patches/s of ``encode`` with and without scores, from memory and streamed
from HDF5 files written with byte shuffle + gzip (what ``extract`` writes), gzip alone (what it wrote
before) or no compression (``extract --compression none``).

    python benchmarks/bench_encode.py [--device cpu|cuda] [--threads 2] [--quick]

What is timed (``time.perf_counter``, after one warm-up batch; best of 2 runs for reading and the
encoder-only rows, one run for the rows with scores and for the stage):

- ``microvae.encoding.encode_array``, the function behind ``microvae encode``, for three networks:
  the default recipe (``JTRVAEConfig()``: encoder 128×128, decoder 3×128 plus the canonical class
  head, K = 2 here) and the paper's network (encoder 2×256, decoder 3×256, K = 4), both at 32×32
  and with rotation and translation on; and the default recipe with the template pose (what
  ``train`` builds by default where objects turn: every patch is also searched against each
  class's template, here untrained). Modes: ``latents`` (``--no-scores``: the encoder alone),
  ``scores`` (the default: also recon_error from one decoder pass and −ELBO from K more).
- Reading alone: a ``PatchFile`` over the same patches in three files that differ only in their
  compression, read block by block as ``encode`` reads them (file sizes recorded).
- The ``encode`` stage end to end (``microvae.stages.run_encode``: read, encode, write the encoded
  artifact) of a default-recipe run (trained one epoch): without scores on the whole gzip file, with
  scores on the patches of one 512×512 scan (256×256 with ``--quick``).

Patches are cut by ``microvae extract`` from synthetic lattice scans (``microvae.synthetic``) so
that their compressibility is that of real noisy data, not of random numbers. Weights are
untrained (the cost does not depend on them). Writes results/encode.json and results/encode.md
(``--quick``: results/encode_quick.*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from microvae.config import EDGE_SIGMAS_PX, POSE_CANDIDATES, POSE_REFINE_STEPS, EncodeConfig
from microvae.encoding import encode_array
from microvae.models import JTRVAEConfig
from microvae.streaming import PatchFile
from microvae.training import build_model

NETWORKS = {
    "default recipe, K = 2": dict(image_size=32, n_classes=2),
    "default recipe with the template pose, K = 2": dict(
        image_size=32,
        n_classes=2,
        template_pose=True,
        pose_edge_sigmas_px=EDGE_SIGMAS_PX,
        pose_refine_steps=POSE_REFINE_STEPS,
        pose_candidates=POSE_CANDIDATES,
    ),
    "paper, K = 4": dict(image_size=32, n_classes=4, encoder_hidden=(256, 256), decoder_hidden=(256, 256, 256), latent_skips=False, canonical_class_head=False),
}
COMPRESSIONS = {
    "shuffle + gzip-1 (extract's default)": dict(compression="gzip", compression_opts=1, shuffle=True),
    "gzip-1 (extract's before)": dict(compression="gzip", compression_opts=1),
    "none (extract --compression none)": {},
}


def lattice_patches(count: int, folder: Path, shape: tuple[int, int] = (1024, 1024)) -> Path:
    """``folder``/patches.h5: a patches artifact of at least ``count`` 32×32 atom-centred patches
    (``microvae find-atoms`` and ``extract`` on synthetic scans of ``shape``)."""
    import tifffile

    from microvae.config import ExtractConfig, FindAtomsConfig
    from microvae.patches import PatchParams
    from microvae.stages import run_extract, run_find_atoms
    from microvae.synthetic import make_lattice

    folder.mkdir(parents=True, exist_ok=True)
    scans, total, seed = [], 0, 0
    while total < count:
        lattice = make_lattice(shape=shape, seed=seed)
        path = folder / f"scan{seed}.tif"
        tifffile.imwrite(path, lattice.image.astype(np.float32))
        scans.append(str(path))
        total += len(lattice.positions)
        seed += 1
    run_find_atoms(scans, folder / "atoms.h5", FindAtomsConfig())
    run_extract(scans, folder / "patches.h5", ExtractConfig(PatchParams(window=32)), atoms=folder / "atoms.h5")
    return folder / "patches.h5"


def rewrite(source: Path, target: Path, count: int, options: dict) -> Path:
    """The first ``count`` patches of ``source`` in a file of their own, chunked as extract chunks them."""
    with h5py.File(source, "r") as handle:
        data = handle["patches"][:count]
        chunks = handle["patches"].chunks
    with h5py.File(target, "w") as handle:
        handle.create_dataset("patches", data=data, chunks=chunks, **options)
    return target


def timed(function, repeats: int = 1) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--latent-patches", type=int, default=100_000, help="patches for the encoder-only rows")
    parser.add_argument("--score-patches", type=int, default=3_000, help="patches for the encode_array rows with scores")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 000 / 300 patches")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.latent_patches, args.score_patches = 5_000, 300
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch = 8192 if device.type == "cuda" else 1024
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        source = lattice_patches(args.latent_patches, folder)
        with h5py.File(source, "r") as handle:
            available = len(handle["patches"])
        count = min(args.latent_patches, available)
        images = PatchFile(source)[:count]
        files = {name: rewrite(source, folder / f"{index}.h5", count, options) for index, (name, options) in enumerate(COMPRESSIONS.items())}

        def row(**values):
            values["patches_per_s"] = values["patches"] / values["seconds"]
            rows.append(values)
            print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()), flush=True)

        for name, path in files.items():
            reader = PatchFile(path)
            seconds = timed(lambda: [None for _ in reader.blocks()], repeats=2)
            row(
                what="read only",
                network="",
                mode="",
                source=name,
                patches=count,
                seconds=seconds,
                file_mb=path.stat().st_size / 1e6,
                raw_mb=images.nbytes / 1e6,
            )
            reader.close()
        for network, changes in NETWORKS.items():
            model = build_model(JTRVAEConfig(**changes), seed=0).eval()
            encode_array(model, images[:batch], batch_size=batch, device=args.device)  # warm-up
            for mode, n, options in (("latents", count, dict(recon_error=False)), ("scores", min(count, args.score_patches), dict(neg_elbo=True))):
                repeats = 2 if mode == "latents" else 1
                seconds = timed(lambda: encode_array(model, images[:n], batch_size=batch, device=args.device, **options), repeats)
                row(what="encode_array", network=network, mode=mode, source="memory", patches=n, seconds=seconds)
                if mode == "latents":
                    for name, path in files.items():
                        reader = PatchFile(path)
                        seconds = timed(lambda: encode_array(model, reader, batch_size=batch, device=args.device, **options), repeats)
                        row(what="encode_array", network=network, mode=mode, source=name, patches=n, seconds=seconds)
                        reader.close()
        # the stage end to end (default recipe): a run folder trained for one epoch on the small file
        from microvae.stages import run_encode, run_train
        from microvae.training import TrainConfig

        small = lattice_patches(1, folder / "small", (256, 256) if args.quick else (512, 512))  # shuffle + gzip-1
        with h5py.File(small, "r") as handle:
            small_count = len(handle["patches"])
        run_train(small, folder / "run", JTRVAEConfig(n_classes=2), TrainConfig(epochs=1, device=args.device, val_fraction=0.0))
        for mode, path, n in (("latents", source, available), ("scores", small, small_count)):
            output = folder / f"encoded_{mode}.h5"
            seconds = timed(
                lambda: run_encode(folder / "run", path, output, EncodeConfig(device=args.device, batch_size=batch, scores=mode == "scores"), force=True)
            )
            row(what="encode stage", network="default recipe, K = 2", mode=mode, source="shuffle + gzip-1 (extract's default)", patches=n, seconds=seconds)
    meta = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "batch": batch,
        "load_avg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"encode{suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"<!-- python benchmarks/bench_encode.py | {meta} -->",
        "| what | network | mode | source | patches | patches/s | file MB (raw MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['file_mb']:.0f} ({r['raw_mb']:.0f})" if "file_mb" in r else ""
        lines.append(f"| {r['what']} | {r['network']} | {r['mode']} | {r['source']} | {r['patches']} | {r['patches_per_s']:,.0f} | {size} |")
    (args.out / f"encode{suffix}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
