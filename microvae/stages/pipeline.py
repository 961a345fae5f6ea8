"""One command for a whole study: find-atoms → extract → train → encode → export from a TOML file.

Every stage keeps its own rules (an up-to-date artifact is reused, an interrupted training run
resumes), so rerunning the same command after a crash finishes the work. The pipeline owns its
output folder: a stage whose settings or inputs changed is redone and replaces its artifact (and
so are the stages after it, whose inputs then changed), without asking for ``--force``.

Config sections and their keys (all optional; defaults are the subcommands' defaults)::

    [find_atoms]   method, refine, sigma_px, spacing_px, threshold, threshold_rel, invert, channel, device,
                   sublattices, joint, displacements
    [extract]      mode ("atoms" or "grid"), window, grid_step, fft, normalize, edge, subpixel, sublattices,
                   compression ("gzip" or "none")
    [train]        classes (a number, or "auto" with max_classes), hidden, and any field of
                   JTRVAEConfig (latent_dim, rotation, translation, likelihood, decoder,
                   class_balance, beta_*_start, ...) or TrainConfig (epochs, batch_size, lr, seed,
                   pixel_fraction, device, amp, class_init, init_fraction, ...); absent keys take
                   the library defaults
    [encode]       the fields of EncodeConfig: batch_size, device, scores (false: the encoder alone,
                   no recon_error/neg_elbo), amp, memory_limit_bytes
    [export]       formats (list of "h5", "tiff", "png"), radius

Outputs in the output folder: ``atoms.h5``, ``patches.h5``, ``run/``, ``encoded.h5``, ``maps/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from .atoms import FindAtomsParams
from .config import EncodeConfig, configs_from_settings, setting_names
from .errors import InputError, OutputError, ParameterError
from .patches import PatchParams

SECTIONS = {
    "find_atoms": {
        "method",
        "refine",
        "sigma_px",
        "spacing_px",
        "threshold",
        "threshold_rel",
        "invert",
        "channel",
        "stack_as",
        "device",
        "sublattices",
        "joint",
        "displacements",
    },
    "extract": {"mode", "window", "grid_step", "fft", "normalize", "edge", "subpixel", "compression", "sublattices"},
    "train": setting_names(),
    "encode": {f.name for f in dataclasses.fields(EncodeConfig) if f.name != "refine"},  # the TOML keys are EncodeConfig's
    "export": {"formats", "radius"},
}


@dataclass
class PipelineConfig:
    """The parsed TOML: one dict of settings per section."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name, {}))


def read_config(path: str | Path) -> PipelineConfig:
    """Parse and check a pipeline TOML file.

    Raises:
        InputError: missing or not valid TOML.
        ParameterError: unknown sections or keys (named, with the allowed ones).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid TOML ({error})") from error
    for name, values in raw.items():
        if name not in SECTIONS:
            raise ParameterError(f"{path}: unknown section [{name}]; expected {', '.join(f'[{s}]' for s in SECTIONS)}")
        if not isinstance(values, dict):
            raise ParameterError(f"{path}: '{name}' must be a section [{name}]")
        unknown = set(values) - SECTIONS[name]
        if unknown:
            raise ParameterError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} in [{name}]; allowed: {', '.join(sorted(SECTIONS[name]))}")
    return PipelineConfig(raw)


def find_atoms_params(config: PipelineConfig) -> tuple[FindAtomsParams, int, str]:
    values = config.section("find_atoms")
    channel = int(values.pop("channel", 0))
    stack_as = str(values.pop("stack_as", "frames"))
    return FindAtomsParams(**values), channel, stack_as


def extract_params(config: PipelineConfig) -> tuple[PatchParams, str, str]:
    """(patch parameters, mode, compression) from the [extract] section."""
    values = config.section("extract")
    mode = values.pop("mode", "atoms")
    compression = str(values.pop("compression", "gzip"))
    if mode not in ("atoms", "grid"):
        raise ParameterError(f"[extract] mode must be 'atoms' or 'grid', got {mode!r}")
    if values.get("sublattices") is not None:
        values["sublattices"] = tuple(int(k) for k in values["sublattices"])
    params = PatchParams(**values)
    if mode == "grid" and params.grid_step is None:
        params.grid_step = max(1, params.window // 2)
    if mode == "atoms":
        params.grid_step = None
    return params, mode, compression


def train_configs(config: PipelineConfig):
    """(JTRVAEConfig, TrainConfig) from the [train] section; absent keys take the library defaults."""
    return configs_from_settings(config.section("train"))


StageCallback = Callable[[str, Any], None]


def run_pipeline(
    config_path: str | Path, scans: list[str], outdir: str | Path, on_stage: StageCallback | None = None, progress=None, train_progress=None
) -> list:
    """Run every stage in order; returns the list of :class:`~microvae.stages.StageResult`.

    ``on_stage(name, result)`` is called after each stage (for the CLI's report).
    """
    from . import stages

    config = read_config(config_path)
    force = True  # the pipeline owns its folder: changed stages replace their artifacts; unchanged ones are reused
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: exists and is not a folder; the pipeline writes a folder of artifacts")
    # the folder is made by the first stage that writes into it: bad inputs leave nothing behind
    on_stage = on_stage or (lambda name, result: None)
    results = []
    patch_params, mode, compression = extract_params(config)
    atoms_path = None
    if mode == "atoms":
        params, channel, stack_as = find_atoms_params(config)
        atoms_path = outdir / "atoms.h5"
        result = stages.run_find_atoms(
            scans, atoms_path, params, channel=channel, stack_as=stack_as, preview=outdir / "atoms.png", force=force, progress=progress
        )
        on_stage("find-atoms", result)
        results.append(result)
    result = stages.run_extract(
        scans, outdir / "patches.h5", patch_params, atoms=atoms_path, preview=outdir / "patches.png", force=force, progress=progress, compression=compression
    )
    on_stage("extract", result)
    results.append(result)
    model_config, train_config = train_configs(config)
    result = stages.run_train(outdir / "patches.h5", outdir / "run", model_config, train_config, force=force, progress=train_progress)
    on_stage("train", result)
    results.append(result)
    encode = config.section("encode")
    encode_config = EncodeConfig(**{"device": train_config.device, **encode})  # encode on the training device unless told
    result = stages.run_encode(outdir / "run", outdir / "patches.h5", outdir / "encoded.h5", encode_config, force=force, progress=progress)
    on_stage("encode", result)
    results.append(result)
    export = config.section("export")
    result = stages.run_export(
        outdir / "encoded.h5", outdir / "maps", tuple(export.get("formats", ("h5", "tiff", "png"))), radius=export.get("radius"), force=force, progress=progress
    )
    on_stage("export", result)
    results.append(result)
    return results
