"""``microvae train``: fit a j-trVAE to patches, in a run folder that resumes after interruption."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from microvae.config import CLASS_INITS, DECODERS, ENCODERS, GEOMETRIES, LIKELIHOODS, configs_from_settings
from microvae.config import JTRVAEConfig as M
from microvae.config import TrainConfig as T

from . import options
from .console import duration_words, report, stderr
from .main import app


def _check_classes(value: str) -> str:
    if value != "auto" and not (value.isdigit()):
        raise typer.BadParameter(f"'{value}' is not a number of classes: give K ≥ 0 or 'auto'")
    return value


def _positive_fraction(value: float) -> float:
    if not 0 < value <= 1:
        raise typer.BadParameter(f"{value} is not a fraction in (0, 1]")
    return value


def _widths(widths: tuple[int, ...]) -> str:
    return "×".join(str(w) for w in widths) if len(set(widths)) > 1 else f"{len(widths)}×{widths[0]}"


def estimate_line(event: dict) -> str:
    """'12,000 patches × 50 epochs (+ 10 for the pose) ≈ 4.2 min on cpu at 2,380 patches/s'."""
    pose = f" (+ {event['pose_epochs']} for the pose)" if event["pose_epochs"] else ""
    left = f" left of {event['epochs'] + event['done']}" if event["done"] else ""
    when = duration_words(event["seconds"])
    return (
        f"{event['patches']:,} patches × {event['epochs']} epochs{left}{pose} {when} on {event['device']} "
        f"at {event['samples_per_s']:,.0f} patches/s (timed on a few steps of this model)"
    )


@contextlib.contextmanager
def training_progress(quiet: bool, epochs: int | None = None) -> Iterator:
    """A rich bar over all epochs, with the current loss terms and samples/s; epoch lines stay on
    screen. ``epochs`` None: the bar's length comes from the run's estimate (epochs left + done)."""
    if quiet:
        yield None
        return
    columns = (
        TextColumn("[bold]epoch {task.fields[epoch]}/{task.total}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[terms]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("train", total=epochs, epoch=0, terms="")

        def update(event: dict) -> None:
            if event.get("event") == "estimate":
                if progress.tasks[0].total is None:
                    progress.update(task, total=event["epochs"] + event["done"])
                progress.console.print(estimate_line(event), highlight=False)
            elif event.get("event") == "batch":
                terms = f"loss {event['loss']:.4g} · recon {event['recon']:.4g} · KL z {event['kl_z']:.3g} τ {event['kl_tau']:.3g} y {event['kl_y']:.3g} · {event.get('samples_per_s', 0):.0f}/s"
                progress.update(task, epoch=event["epoch"], terms=terms)
            elif event.get("event") == "candidate":
                elbo = "" if event["heldout_neg_elbo"] is None else f", held-out −ELBO {event['heldout_neg_elbo']:.2f} nats"
                strength = "" if event.get("strength") is None else f", prediction strength {event['strength']:.2f}"
                progress.console.print(
                    f"candidate classes {event['name']}: separation {event['separation']:.3f}{strength}{elbo}, "
                    f"patches per class {event['sizes']} ({event['seconds']:.1f} s)",
                    highlight=False,
                )
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
    short_help="Train a j-trVAE on patches (resumable).",
    help=(
        "Train a rotation- and translation-invariant joint VAE (j-trVAE) on patches; rerun the same "
        "command after an interruption to resume.\n\n"
        "Examples:\n"
        "  microvae train patches.h5 -o run/ --classes 3 --epochs 200\n"
        "  microvae train patches.h5 -o run/ --classes auto --no-rotation\n"
        "  microvae train patches.h5 -o run/ --classes 2 --no-translation  # on atoms\n"
        "  microvae train patches.h5 -o run/ --classes 4 --device cuda --amp\n"
        "  microvae train patches.h5 -o run/ --no-template-pose --angle-prior 0\n"
        "  microvae train patches.h5 -o ens/ --classes 3 --ensemble 5\n"
        "  microvae train patches.h5 -o semi/ --classes 4 --labels known.csv\n\n"
        "The model: a class y (K = --classes, marginalised exactly), continuous latents z, an angle "
        "and a shift. Classes start from the best-separated classical clustering; the run ends with "
        "a verdict in RUN_DIR/summary.json. Say what you know (K, whether objects turn or sit "
        "off-centre); leave the rest at its defaults."
    ),
    epilog="Details and the paper's settings: README.md, 'microvae train'.",
)
def train_command(
    patches: str = typer.Argument(
        ..., metavar="PATCHES", help="Patches artifact (.h5) or stack (N,H,W)/(N,C,H,W) in .npy, .tif or .h5[:/dataset].", show_default=False
    ),
    output: Path = options.output("Run folder (created; reused to resume)."),
    classes: str = typer.Option(
        str(M.n_classes),
        "--classes",
        "-k",
        metavar="K|auto",
        callback=_check_classes,
        rich_help_panel="Model",
        help="Discrete classes K (0: none), or 'auto': chosen in 2…--max-classes (table printed).",
    ),
    max_classes: int = typer.Option(6, "--max-classes", min=2, rich_help_panel="Model", help="Largest K that --classes auto tries."),
    latent_dim: int = typer.Option(M.latent_dim, "--latent-dim", "-d", min=0, rich_help_panel="Model", help="Continuous latents D besides angle and shift."),
    latent_geometry: Literal[GEOMETRIES] = typer.Option(
        M.latent_geometry, "--latent-geometry", rich_help_panel="Model", help="circle (-d 1) or torus (-d 2): periodic latents; use with --beta-z-start 0."
    ),
    rotation: bool = typer.Option(True, "--rotation/--no-rotation", rich_help_panel="Model", help="Learn a rotation latent."),
    translation: bool = typer.Option(
        True, "--translation/--no-translation", rich_help_panel="Model", help="Learn a shift latent (off for atom-centred or FFT patches)."
    ),
    likelihood: Literal[("auto",) + LIKELIHOODS] = typer.Option(
        "auto", "--likelihood", rich_help_panel="Model", help="auto: Bernoulli when the data lie in [0, 1], else Gaussian."
    ),
    decoder: Literal[DECODERS] = typer.Option(
        M.decoder, "--decoder", rich_help_panel="Model", help="mlp: the paper's spatial generator; conv: spatial broadcast."
    ),
    encoder: Literal[ENCODERS] = typer.Option(
        M.encoder, "--encoder", rich_help_panel="Model", help="mlp: the paper's (learns invariance roughly); equivariant: invariant by construction."
    ),
    encoder_rotations: int = typer.Option(
        M.encoder_rotations,
        "--encoder-rotations",
        min=1,
        rich_help_panel="Model",
        help="Turned frames the equivariant encoder compares (a multiple of 4 keeps quarter turns exact).",
    ),
    hidden: int | None = typer.Option(
        None,
        "--hidden",
        min=1,
        rich_help_panel="Model",
        help=f"One width for every hidden layer (paper: 256) [default: encoder {_widths(M.encoder_hidden)}, decoder {_widths(M.decoder_hidden)}].",
        show_default=False,
    ),
    angle_prior: float = typer.Option(
        M.angle_prior_concentration, "--angle-prior", min=0, rich_help_panel="Model", help="Concentration of the angle prior around 0 (0: any orientation)."
    ),
    template_pose: bool | None = typer.Option(
        None,
        "--template-pose/--no-template-pose",
        rich_help_panel="Model",
        help="Start each class's angle at its template's searched turn [default: on with rotation].",
        show_default=False,
    ),
    shift_prior_sd: float = typer.Option(
        M.shift_prior_sd, "--shift-prior", min=0, rich_help_panel="Model", help="Prior sd of the shift, in patch half-widths."
    ),
    mean_offset: bool | None = typer.Option(
        None,
        "--mean-offset/--no-mean-offset",
        rich_help_panel="Model",
        help="Learned per-pixel offset from the mean patch [default: on without rotation and translation].",
        show_default=False,
    ),
    class_balance: float = typer.Option(
        M.class_balance, "--class-balance", min=0, rich_help_panel="Classes", help="Weight of the penalty on unequal class usage (0: the paper's objective)."
    ),
    balance_unbiased: bool = typer.Option(
        M.class_balance_unbiased,
        "--unbiased-balance/--batch-balance",
        rich_help_panel="Classes",
        help="Class-balance term without a batch's sampling noise (for phases, with --z-delay).",
    ),
    canonical_class_head: bool = typer.Option(
        M.canonical_class_head,
        "--canonical-class-head/--shared-class-head",
        rich_help_panel="Classes",
        help="q(y|x) reads the patch in its canonical frame, or the shared head (the paper).",
    ),
    class_rotations: int = typer.Option(
        M.class_rotations, "--class-rotations", min=0, rich_help_panel="Classes", help="Pool q(y|x) over this many turned copies instead (0: off)."
    ),
    class_init: Literal[CLASS_INITS] = typer.Option(
        T.class_init,
        "--class-init",
        rich_help_panel="Classes",
        help="cluster: best-separated classical clustering; restarts: best held-out −ELBO; none: the paper's.",
    ),
    init_fraction: float = typer.Option(
        T.init_fraction, "--init-fraction", min=0, max=1, rich_help_panel="Classes", help="Fraction of the epochs the initial classes act as observed."
    ),
    restart_fraction: float = typer.Option(
        T.restart_fraction,
        "--restart-fraction",
        min=0,
        max=1,
        rich_help_panel="Classes",
        help="Length of the short class-free pose run, as a fraction of --epochs.",
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        rich_help_panel="Classes",
        help="Known classes of some patches: CSV of patch_index,class rows, or .npy with −1 unknown.",
        show_default=False,
    ),
    label_weight: float = typer.Option(
        M.label_weight, "--label-weight", min=0, rich_help_panel="Classes", help="Weight of −log q(label|x) per labelled patch."
    ),
    ensemble: int = typer.Option(
        0,
        "--ensemble",
        min=0,
        metavar="M",
        rich_help_panel="Classes",
        help="Train M seeds in OUTPUT/member_i and measure their agreement (0: one run).",
        show_default=False,
    ),
    epochs: int = typer.Option(T.epochs, "--epochs", "-e", min=1, rich_help_panel="Schedule", help="Total epochs (a resumed run continues up to this number)."),
    batch_size: int = typer.Option(T.batch_size, "--batch-size", "-b", min=1, rich_help_panel="Schedule", help="Patches per optimisation step."),
    lr: float = typer.Option(T.lr, "--lr", min=0, rich_help_panel="Schedule", help="Adam learning rate (paper: 5e-4 to 1e-3)."),
    seed: int = typer.Option(0, "--seed", rich_help_panel="Schedule", help="Seed of weights, split, shuffling and noise."),
    beta_z_start: float | None = typer.Option(
        M.beta_z_start, "--beta-z-start", min=0, rich_help_panel="Schedule", help="Initial weight of the z KL (annealed to 1)."
    ),
    beta_tau: float = typer.Option(
        M.beta_tau_start, "--beta-tau-start", min=0, rich_help_panel="Schedule", help="Initial weight of the angle+shift KL (paper: 10)."
    ),
    beta_y: float = typer.Option(
        M.beta_y_start, "--beta-y-start", min=0, rich_help_panel="Schedule", help="Initial weight of the class KL (annealed to 1 over a tenth of the epochs)."
    ),
    z_delay: float = typer.Option(
        M.z_delay, "--z-delay", min=0, max=1, rich_help_panel="Schedule", help="Fraction of the epochs with z off, so that classes form first."
    ),
    pixel_fraction: float = typer.Option(
        T.pixel_fraction,
        "--pixel-fraction",
        callback=_positive_fraction,
        rich_help_panel="Schedule",
        help="Random fraction of the pixels scored per step (1: all).",
    ),
    min_pixels: int = typer.Option(T.min_pixels, "--min-pixels", min=1, rich_help_panel="Schedule", help="But at least this many pixels per patch and step."),
    val_fraction: float = typer.Option(
        T.val_fraction, "--val-fraction", min=0, max=0.9, rich_help_panel="Schedule", help="Fraction held out for the validation loss."
    ),
    checkpoint_every: int = typer.Option(T.checkpoint_every, "--checkpoint-every", min=1, rich_help_panel="Output", help="Epochs between checkpoints."),
    memory_limit_gb: float = typer.Option(
        1.0, "--memory-limit-gb", min=0, rich_help_panel="Data", help="Stream patches larger than this (GB of float32) from disk."
    ),
    device: str = options.device(),
    amp: bool = typer.Option(False, "--amp", rich_help_panel="Device", help="bf16 mixed precision on CUDA."),
    compile_step: bool = typer.Option(False, "--compile", rich_help_panel="Device", help="torch.compile the training step (pays on long runs)."),
    force: bool = options.force("a run folder"),
    quiet: bool = options.quiet(),
    json_summary: bool = options.json_summary(),
) -> None:
    settings = dict(
        classes=classes,
        max_classes=max_classes if classes == "auto" else 0,
        latent_dim=latent_dim,
        latent_geometry=latent_geometry,
        rotation=rotation,
        translation=translation,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        likelihood=likelihood,
        decoder=decoder,
        encoder=encoder,
        encoder_rotations=encoder_rotations,
        pixel_fraction=pixel_fraction,
        min_pixels=min_pixels,
        class_balance=class_balance,
        label_weight=label_weight,
        canonical_class_head=canonical_class_head,
        class_rotations=class_rotations,
        angle_prior_concentration=angle_prior,
        shift_prior_sd=shift_prior_sd,
        beta_z_start=beta_z_start,
        beta_tau_start=beta_tau,
        beta_y_start=beta_y,
        z_delay=z_delay,
        class_balance_unbiased=balance_unbiased,
        class_init=class_init,
        init_fraction=init_fraction,
        restart_fraction=restart_fraction,
        checkpoint_every=checkpoint_every,
        val_fraction=val_fraction,
        device=device,
        amp=amp,
        compile=compile_step,
    )
    if hidden is not None:
        settings["hidden"] = hidden
    if mean_offset is not None:
        settings["mean_offset"] = mean_offset
    if template_pose is not None:
        settings["template_pose"] = template_pose
    model_config, train_config = configs_from_settings(settings)
    from microvae.stages.train import run_train

    quiet = quiet or int(os.environ.get("RANK", "0")) != 0  # under torchrun only rank 0 reports

    def member_done(index: int, result) -> None:
        if not (quiet or json_summary):
            stderr.print(f"  member {index} (seed {seed + index}): {result.status}")

    with training_progress(quiet or json_summary, epochs * max(ensemble, 1)) as progress:
        result = run_train(
            patches,
            output,
            model_config,
            train_config,
            force=force,
            progress=progress,
            labels=labels,
            memory_limit=int(memory_limit_gb * 1e9),
            members=ensemble or None,
            on_member=member_done,
        )
    report(result, quiet, json_summary)
