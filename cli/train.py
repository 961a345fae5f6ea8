"""``microvae train``: fit a j-trVAE to patches, in a run folder that resumes after interruption."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from microvae.config import JTRVAEConfig as M
from microvae.config import TrainConfig as T
from microvae.config import configs_from_settings

from .console import report, stderr
from .main import app


def _widths(widths: tuple[int, ...]) -> str:
    return "×".join(str(w) for w in widths) if len(set(widths)) > 1 else f"{len(widths)}×{widths[0]}"


@contextlib.contextmanager
def training_progress(quiet: bool, epochs: int) -> Iterator:
    """A rich bar over all epochs, with the current loss terms and samples/s; epoch lines stay on screen."""
    if quiet:
        yield None
        return
    columns = (TextColumn("[bold]epoch {task.fields[epoch]}/{task.total}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[terms]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=False, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("train", total=epochs, epoch=0, terms="")

        def update(event: dict) -> None:
            if event.get("event") == "batch":
                terms = f"loss {event['loss']:.4g} · recon {event['recon']:.4g} · KL z {event['kl_z']:.3g} τ {event['kl_tau']:.3g} y {event['kl_y']:.3g} · {event.get('samples_per_s', 0):.0f}/s"
                progress.update(task, epoch=event["epoch"], terms=terms)
            elif event.get("event") == "candidate":
                elbo = "" if event["heldout_neg_elbo"] is None else f", held-out −ELBO {event['heldout_neg_elbo']:.2f} nats"
                progress.console.print(f"candidate classes {event['name']}: separation {event['separation']:.3f}{elbo}, "
                                       f"patches per class {event['sizes']} ({event['seconds']:.1f} s)", highlight=False)
            elif event.get("event") == "epoch":
                progress.update(task, completed=event["epoch"])
                counts = [event[key] for key in sorted(k for k in event if k.startswith("n_class_"))]
                val = event.get("val_loss")
                progress.console.print(
                    f"epoch {event['epoch']}: loss {event['loss']:.4g}"
                    + (f", val {val:.4g}" if val == val and val is not None else "")
                    + (f", patches per class {counts}" if len(counts) > 1 else "")
                    + f", {event.get('samples_per_s', 0):.0f} samples/s",
                    highlight=False,
                )

        yield update


@app.command(
    "train",
    help=(
        "Train a rotation- and translation-invariant joint VAE (j-trVAE) on patches.\n\n"
        "PATCHES is a patches artifact from 'microvae extract' or a stack (N,H,W) or (N,C,H,W) in .npy, "
        ".tif or .h5. The run folder keeps config.json, provenance.json, checkpoints (every "
        "--checkpoint-every epochs and at the end), log.csv and loss.png. Rerun the same command after "
        "an interruption to continue from the last checkpoint.\n\n"
        "Model: discrete class y (--classes K, marginalised exactly), continuous z (--latent-dim D), an "
        "angle (projected normal) and a 2D shift that transform the decoder's coordinate grid. "
        "--classes 0 gives an rVAE; --no-rotation --no-translation --classes 0 a plain VAE.\n\n"
        "Classes start from the best-separated of several classical clusterings of the patches (--class-init), "
        "and the run ends with a verdict (class sizes, confidence, agreement with a classical baseline, "
        "warnings) in the log and RUN_DIR/summary.json. What this gives on data it was not tuned on is in "
        "benchmarks/results/discovery_ci.md; the paper's own settings are named in each option's help.\n\n"
        "Examples:\n\n"
        "  microvae train patches.h5 -o run/ --classes 3 --epochs 200\n\n"
        "  microvae train patches.h5 -o run/ --classes auto --no-rotation   # K chosen from the data (table printed)\n\n"
        "  microvae train patches.h5 -o run/ --classes 2 --no-translation   # atom-centred STEM patches\n\n"
        "  microvae train patches.h5 -o run/ --angle-prior 0 --device cuda --amp   # any orientation, on a GPU\n\n"
        "  microvae train patches.h5 -o run/ --angle-prior 0 --encoder equivariant   # codes that ignore the pose by construction\n\n"
        "  microvae train patches.h5 -o ens/ --classes 3 --ensemble 5   # 5 seeds: class uncertainty and stability\n\n"
        "  microvae train patches.h5 -o semi/ --classes 4 --labels known.csv   # rows 'patch_index,class'"
    ),
)
def train_command(
    patches: str = typer.Argument(..., help="Patches artifact (.h5) or image stack (.npy, .tif, .h5[:/dataset]).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (created; reused to resume).", show_default=False),
    classes: str = typer.Option(str(M.n_classes), "--classes", "-k", help="Number of discrete classes K (0: no discrete latent), or 'auto': K in 2…--max-classes whose best classical partition is best separated (the table is printed and kept in RUN_DIR/init/classes_auto.json)."),
    max_classes: int = typer.Option(6, "--max-classes", help="Largest K that --classes auto tries."),
    latent_dim: int = typer.Option(M.latent_dim, "--latent-dim", "-d", help="Continuous latents D besides angle and shift."),
    latent_geometry: str = typer.Option(M.latent_geometry, "--latent-geometry", help="'euclidean' (Gaussian prior), 'circle' (-d 1) or 'torus' (-d 2): angles with a uniform prior and wrapped-normal posterior, for periodic factors. Use with --beta-z-start 0 (KL warm-up; without it the circle posterior collapsed in our tests)."),
    rotation: bool = typer.Option(True, "--rotation/--no-rotation", help="Learn a rotation latent."),
    translation: bool = typer.Option(True, "--translation/--no-translation", help="Learn a shift latent (turn off for atom-centred or FFT patches)."),
    epochs: int = typer.Option(T.epochs, "--epochs", "-e", help="Total epochs (a resumed run continues up to this number)."),
    batch_size: int = typer.Option(T.batch_size, "--batch-size", "-b", help="Patches per optimisation step.", min=1),
    lr: float = typer.Option(T.lr, "--lr", help="Adam learning rate (paper: 5e-4 to 1e-3)."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, split, shuffling and noise: fixed seed, same result on CPU."),
    likelihood: str = typer.Option("auto", "--likelihood", help="'bernoulli' (values in [0,1]), 'gaussian', or 'auto' (Bernoulli when the data lie in [0,1])."),
    decoder: str = typer.Option(M.decoder, "--decoder", help="'mlp' (the paper's spatial generator) or 'conv' (spatial broadcast with latent skips)."),
    encoder: str = typer.Option(M.encoder, "--encoder", help="'mlp' (the paper's encoder: it has to learn that a turned or moved patch has the same code, and learns it only roughly) or 'equivariant' (the pose turns and moves with the patch, and z and the class read the patch in its canonical frame: invariant by construction; see `microvae diagnose`)."),
    encoder_rotations: int = typer.Option(M.encoder_rotations, "--encoder-rotations", help="Frames the equivariant encoder compares to find the angle (a multiple of 4 keeps quarter turns exact; more frames cost encoder time)."),
    hidden: Optional[int] = typer.Option(None, "--hidden", help=f"One width for every hidden layer, in the paper's layout (encoder 2 layers, MLP decoder 3; the paper: 256) [default: encoder {_widths(M.encoder_hidden)}, decoder {_widths(M.decoder_hidden)}].", show_default=False),
    pixel_fraction: float = typer.Option(T.pixel_fraction, "--pixel-fraction", help="Score this random fraction of the pixels per step (unbiased; 1 = all). The MLP decoder's cost is proportional to it."),
    min_pixels: int = typer.Option(T.min_pixels, "--min-pixels", help="But score at least this many pixels per patch and step (subtle classes need enough of them)."),
    class_balance: float = typer.Option(M.class_balance, "--class-balance", help="Weight of the penalty on unequal class usage, KL(mean q(y|x) ‖ uniform) per batch (0: the paper's objective). Keeps classes from merging or dying."),
    canonical_class_head: bool = typer.Option(M.canonical_class_head, "--canonical-class-head/--shared-class-head", help="q(y|x) reads the patch turned back to the canonical frame (pose-invariant classes), or the shared encoder's head (the paper)."),
    class_rotations: int = typer.Option(M.class_rotations, "--class-rotations", help="Pool the class posterior over this many rotated copies of each patch instead (0: off)."),
    angle_prior: float = typer.Option(M.angle_prior_concentration, "--angle-prior", help="Concentration of the angle prior around 0 (0: uniform on the circle; 2: a quarter turn costs 4 nats). Lower it for scans with large rotations."),
    shift_prior_sd: float = typer.Option(M.shift_prior_sd, "--shift-prior", help="Prior sd of the shift, in units of the patch half-width."),
    beta_z_start: Optional[float] = typer.Option(M.beta_z_start, "--beta-z-start", help="Initial weight of the z KL, annealed to 1 over the z window (holds z back while angle and classes form)."),
    beta_tau: float = typer.Option(M.beta_tau_start, "--beta-tau-start", help="Initial weight of the angle+shift KL (annealed to 1; the paper: 10)."),
    beta_y: float = typer.Option(M.beta_y_start, "--beta-y-start", help="Initial weight of the class KL (annealed to 1 over the first tenth of the epochs; keeps q(y|x) soft while the angle is learned)."),
    balance_unbiased: bool = typer.Option(M.class_balance_unbiased, "--unbiased-balance/--batch-balance", help="Estimate the class-balance term without the batch's sampling noise. The per-batch KL charges confident posteriors for a small batch's chance imbalance, which keeps them soft: good for the cards, but it held two phases at q(y|x) ≈ 0.5. Use with --z-delay for phases."),
    z_delay: float = typer.Option(M.z_delay, "--z-delay", help="Fraction of the epochs with the continuous latents off (z = 0): classes form first. For classes that differ by a graded quantity (phases, intensities), which a z on from the start takes for itself; with --unbiased-balance, --beta-y-start 1 and --class-init none, 0.34 split the two-phase benchmark lattice (accuracy 1.0 in 4 of 5 seeds, 0.93 in one)."),
    class_init: str = typer.Option(T.class_init, "--class-init", help="How the classes start. 'cluster': classical clusterings (k-means and a Gaussian mixture on PCA scores, k-means on a rotation- and shift-invariant Fourier descriptor and on the patches turned into the frame of a short class-free model) are made, and the best-separated one gives the classes for the first --init-fraction of the epochs; then they are free. 'restarts': choose by the held-out −ELBO of a short run from each instead. 'none': random start (the paper's procedure)."),
    init_fraction: float = typer.Option(T.init_fraction, "--init-fraction", help="Fraction of the epochs during which the initial classes act as observed (1: throughout; after it the classes are free)."),
    restart_fraction: float = typer.Option(T.restart_fraction, "--restart-fraction", help="Length of the short class-free pose run (and of each --class-init restarts run), as a fraction of --epochs."),
    checkpoint_every: int = typer.Option(T.checkpoint_every, "--checkpoint-every", help="Epochs between checkpoints."),
    val_fraction: float = typer.Option(T.val_fraction, "--val-fraction", help="Fraction held out for the validation loss (no optimiser step on it)."),
    device: str = typer.Option("auto", "--device", help="'auto' (CUDA when present), 'cpu' or 'cuda'."),
    amp: bool = typer.Option(False, "--amp", help="bf16 mixed precision on CUDA."),
    compile_step: bool = typer.Option(False, "--compile", help="torch.compile the training step (fused kernels). Pays on long runs: each new batch shape compiles once (10–25 s on 2 CPU cores); then 1.1–1.3× faster on the CPU. Same results within rounding; resuming may switch it."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Known classes of some patches (semi-supervised): a CSV of patch_index,class rows or a .npy array with −1 for unknown. Labelled patches train the class posterior; the rest are inferred.", show_default=False),
    label_weight: float = typer.Option(M.label_weight, "--label-weight", help="Weight of −log q(label|x) per labelled patch (Kingma et al.'s α)."),
    ensemble: int = typer.Option(0, "--ensemble", help="Train M runs with seeds SEED…SEED+M−1 in OUTPUT/member_i, align their classes, and record their agreement (encode then reports per-patch class agreement as an uncertainty map; the mean pairwise ARI helps choose --classes). 0 = one run.", min=0, show_default=False),
    memory_limit_gb: float = typer.Option(1.0, "--memory-limit-gb", help="Patches larger than this (GB of float32) are streamed from the patches file in shuffled chunks instead of held in memory (see README, Performance)."),
    force: bool = typer.Option(False, "--force", help="Replace a run folder made from other inputs or settings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_summary: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    settings = dict(classes=classes, max_classes=max_classes if classes == "auto" else 0, latent_dim=latent_dim, latent_geometry=latent_geometry, rotation=rotation, translation=translation, epochs=epochs,
                    batch_size=batch_size, lr=lr, seed=seed, likelihood=likelihood, decoder=decoder,
                    encoder=encoder, encoder_rotations=encoder_rotations,
                    pixel_fraction=pixel_fraction, min_pixels=min_pixels, class_balance=class_balance, label_weight=label_weight, canonical_class_head=canonical_class_head,
                    class_rotations=class_rotations, angle_prior_concentration=angle_prior, shift_prior_sd=shift_prior_sd,
                    beta_z_start=beta_z_start, beta_tau_start=beta_tau, beta_y_start=beta_y, z_delay=z_delay,
                    class_balance_unbiased=balance_unbiased, class_init=class_init, init_fraction=init_fraction, restart_fraction=restart_fraction,
                    checkpoint_every=checkpoint_every, val_fraction=val_fraction, device=device, amp=amp,
                    compile=compile_step)
    if hidden is not None:
        settings["hidden"] = hidden
    model_config, train_config = configs_from_settings(settings)
    from microvae.stages import run_train, run_train_ensemble

    quiet = quiet or int(os.environ.get("RANK", "0")) != 0      # under torchrun only rank 0 reports
    if ensemble:
        offset = {"epochs": 0}

        def member_done(index: int, result) -> None:
            offset["epochs"] += epochs
            if not (quiet or json_summary):
                stderr.print(f"  member {index} (seed {seed + index}): {result.status}")

        with training_progress(quiet or json_summary, epochs * ensemble) as progress:
            def member_progress(event: dict) -> None:
                if progress is not None:
                    progress({**event, "epoch": offset["epochs"] + event["epoch"]} if "epoch" in event else event)

            result = run_train_ensemble(patches, output, model_config, train_config, ensemble, force=force,
                                        progress=member_progress, on_member=member_done, labels=labels)
    else:
        with training_progress(quiet or json_summary, epochs) as progress:
            result = run_train(patches, output, model_config, train_config, force=force, progress=progress, labels=labels,
                               memory_limit=int(memory_limit_gb * 1e9))
    report(result, quiet, json_summary)
