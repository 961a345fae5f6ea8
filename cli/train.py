"""``microvae train``: fit a j-trVAE to patches, in a run folder that resumes after interruption."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from microvae.models import JTRVAEConfig
from microvae.stages import run_train
from microvae.training import TrainConfig

from .console import report, stderr
from .main import app


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
        "Examples:\n\n"
        "  microvae train patches.h5 -o run/ --classes 3 --epochs 200\n\n"
        "  microvae train patches.h5 -o run/ --classes 2 --no-translation   # atom-centred STEM patches"
    ),
)
def train_command(
    patches: str = typer.Argument(..., help="Patches artifact (.h5) or image stack (.npy, .tif, .h5[:/dataset]).", show_default=False),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder (created; reused to resume).", show_default=False),
    classes: int = typer.Option(3, "--classes", "-k", help="Number of discrete classes K (0: no discrete latent)."),
    latent_dim: int = typer.Option(2, "--latent-dim", "-d", help="Continuous latents D besides angle and shift."),
    rotation: bool = typer.Option(True, "--rotation/--no-rotation", help="Learn a rotation latent."),
    translation: bool = typer.Option(True, "--translation/--no-translation", help="Learn a shift latent (turn off for atom-centred or FFT patches)."),
    epochs: int = typer.Option(100, "--epochs", "-e", help="Total epochs (a resumed run continues up to this number)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Patches per optimisation step."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate (paper: 5e-4 to 1e-3)."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights, split, shuffling and noise: fixed seed, same result on CPU."),
    likelihood: str = typer.Option("auto", "--likelihood", help="'bernoulli' (values in [0,1]), 'gaussian', or 'auto' (Bernoulli when the data lie in [0,1])."),
    decoder: str = typer.Option("mlp", "--decoder", help="'mlp' (paper's spatial generator, 3×256 tanh), 'resample' (canonical image rendered once per class and resampled at the rotated grid: same model family, ~100× faster) or 'conv' (spatial broadcast with latent skips)."),
    class_rotations: int = typer.Option(0, "--class-rotations", help="Pool the class posterior over this many rotated copies of each patch (its own network; 0: off)."),
    beta_z_start: Optional[float] = typer.Option(None, "--beta-z-start", help="Initial weight of the z KL, annealed to 1 like the others [default: constant 1, as the paper].", show_default=False),
    hidden: int = typer.Option(256, "--hidden", help="Width of the hidden layers (paper: 256; encoder 2 layers, MLP decoder 3 layers)."),
    shift_prior_sd: float = typer.Option(0.1, "--shift-prior", help="Prior sd of the shift, in units of the patch half-width."),
    beta_tau: float = typer.Option(10.0, "--beta-tau-start", help="Initial weight of the angle+shift KL (annealed to 1 over --anneal-fraction)."),
    beta_y: float = typer.Option(3.0, "--beta-y-start", help="Initial weight of the class KL (annealed to 1)."),
    anneal_fraction: float = typer.Option(0.2, "--anneal-fraction", help="Fraction of epochs over which the KL weights decrease."),
    pixel_fraction: float = typer.Option(1.0, "--pixel-fraction", help="Score a random fraction of the pixels per step (unbiased; makes the 'mlp' decoder proportionally cheaper)."),
    checkpoint_every: int = typer.Option(5, "--checkpoint-every", help="Epochs between checkpoints."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Fraction held out for the validation loss (no optimiser step on it)."),
    device: str = typer.Option("auto", "--device", help="'auto' (CUDA when present), 'cpu' or 'cuda'."),
    amp: bool = typer.Option(False, "--amp", help="bf16 mixed precision on CUDA."),
    force: bool = typer.Option(False, "--force", help="Replace a run folder made from other inputs or settings."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    json_summary: bool = typer.Option(False, "--json", help="Print a one-line JSON summary on stdout."),
) -> None:
    model_config = JTRVAEConfig(
        n_classes=classes,
        latent_dim=latent_dim,
        rotation=rotation,
        translation=translation,
        likelihood=likelihood if likelihood != "auto" else "auto",
        decoder=decoder,
        encoder_hidden=(hidden, hidden),
        decoder_hidden=(hidden, hidden, hidden),
        shift_prior_sd=shift_prior_sd,
        beta_tau_start=beta_tau,
        beta_y_start=beta_y,
        anneal_fraction=anneal_fraction,
        class_rotations=class_rotations,
        beta_z_start=beta_z_start,
    )
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, checkpoint_every=checkpoint_every, device=device, amp=amp, val_fraction=val_fraction, pixel_fraction=pixel_fraction)
    with training_progress(quiet or json_summary, epochs) as progress:
        result = run_train(patches, output, model_config, train_config, force=force, progress=progress)
    report(result, quiet, json_summary)
