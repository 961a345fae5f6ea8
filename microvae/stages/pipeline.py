"""One command for a whole study: find-atoms → extract → train → encode → export from a TOML file.

Every stage keeps its own rules (an up-to-date artifact is reused, an interrupted training run
resumes), so rerunning the same command after a crash finishes the work. The pipeline owns its
output folder: a stage whose settings or inputs changed is redone and replaces its artifact (and
so are the stages after it, whose inputs then changed), without asking for ``--force``.

Config sections and their keys (all optional; absent keys take the stage's defaults). The keys
are the flat settings of each stage's config in :mod:`microvae.config` (:data:`SECTIONS`)::

    [find_atoms]   FindAtomsConfig: the fields of FindAtomsParams (method, refine, sigma_px,
                   spacing_px, threshold, threshold_rel, invert, device, sublattices, joint,
                   displacements), channel, stack_as
    [extract]      mode ("atoms" or "grid"; the pipeline's own key) and ExtractConfig: the fields of
                   PatchParams (window, grid_step, fft, normalize, edge, subpixel, percentiles,
                   sublattices), stack_as (default: [find_atoms]'s), compression ("gzip" or "none")
    [train]        classes (a number, or "auto" with max_classes), hidden, and any field of
                   JTRVAEConfig (latent_dim, rotation, translation, likelihood, decoder,
                   class_balance, beta_*_start, ...) or TrainConfig (epochs, batch_size, lr, seed,
                   pixel_fraction, device, amp, class_init, init_fraction, ...)
    [encode]       the fields of EncodeConfig: batch_size, device (default: [train]'s), scores
                   (false: the encoder alone, no recon_error/neg_elbo), amp, memory_limit_bytes
    [export]       ExportConfig: formats (a list of "h5", "tiff", "png", "hspy", "tiff-stack";
                   default the first three), radius

Outputs in the output folder: ``atoms.h5``, ``patches.h5``, ``run/``, ``encoded.h5``, ``maps/``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import EncodeConfig, ExportConfig, ExtractConfig, FindAtomsConfig, configs_from_settings, setting_names
from ..errors import InputError, OutputError, ParameterError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

__all__ = ["SECTIONS", "PipelineConfig", "extract_config", "find_atoms_config", "read_config", "run_pipeline", "train_configs"]

#: The keys of each TOML section, derived from the stages' configs.
SECTIONS = {
    "find_atoms": FindAtomsConfig.setting_names(),
    "extract": ExtractConfig.setting_names() | {"mode"},
    "train": setting_names(),
    "encode": {f.name for f in dataclasses.fields(EncodeConfig) if f.name != "refine"},
    "export": ExportConfig.setting_names(),
}
EXTRACT_MODES = ("atoms", "grid")


@dataclass
class PipelineConfig:
    """The parsed TOML: one dict of settings per section."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name, {}))


def read_config(path: str | Path) -> PipelineConfig:
    """Parse and check a pipeline TOML file.

    Raises
    ------
    InputError
        Missing, or not valid TOML.
    ParameterError
        Unknown sections or keys (named, with the allowed ones), or settings a stage refuses.
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


def find_atoms_config(config: PipelineConfig) -> FindAtomsConfig:
    """The [find_atoms] section as a :class:`~microvae.config.FindAtomsConfig`."""
    return FindAtomsConfig.from_settings(config.section("find_atoms"))


def extract_config(config: PipelineConfig) -> tuple[ExtractConfig, str]:
    """(extract config, mode) from the [extract] section. ``mode`` 'atoms' cuts one patch per atom
    of the find-atoms stage; 'grid' cuts on a grid of ``grid_step`` (default: half the window).
    Scans are read as [find_atoms] reads them unless [extract] says otherwise."""
    values = config.section("extract")
    mode = values.pop("mode", "atoms")
    if mode not in EXTRACT_MODES:
        raise ParameterError(f"[extract] mode must be 'atoms' or 'grid', got {mode!r}")
    values.setdefault("stack_as", config.section("find_atoms").get("stack_as", FindAtomsConfig.stack_as))
    extract = ExtractConfig.from_settings(values)
    if mode == "grid" and extract.patches.grid_step is None:
        extract = dataclasses.replace(extract, patches=dataclasses.replace(extract.patches, grid_step=max(1, extract.patches.window // 2)))
    if mode == "atoms":
        extract = dataclasses.replace(extract, patches=dataclasses.replace(extract.patches, grid_step=None))
    return extract, mode


def train_configs(config: PipelineConfig):
    """(JTRVAEConfig, TrainConfig) from the [train] section; absent keys take the library defaults."""
    return configs_from_settings(config.section("train"))


StageCallback = Callable[[str, Any], None]


def run_pipeline(
    config_path: str | Path,
    scans: list[str],
    outdir: str | Path,
    on_stage: StageCallback | None = None,
    progress=None,
    train_progress=None,
    encode_estimate=None,
) -> list:
    """Run every stage in order into ``outdir``; returns the list of :class:`~microvae.stages.StageResult`.

    ``on_stage(name, result)`` is called after each stage (for the CLI's report); ``progress``
    reports the stages' progress, ``train_progress`` training's events and ``encode_estimate``
    encoding's estimate (see :func:`~microvae.stages.encode.run_encode`).
    """
    from .. import stages  # each stage through the package's public names (so a test can wrap them)

    config = read_config(config_path)
    force = True  # the pipeline owns its folder: changed stages replace their artifacts; unchanged ones are reused
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: exists and is not a folder; the pipeline writes a folder of artifacts")
    # every section is read before the first stage runs: a bad setting leaves nothing behind
    extract, mode = extract_config(config)
    find_atoms = find_atoms_config(config)
    model_config, train_config = train_configs(config)
    encode_config = EncodeConfig(**{"device": train_config.device, **config.section("encode")})  # encode on the training device unless told
    export_config = ExportConfig.from_settings(config.section("export"))
    # the folder is made by the first stage that writes into it: bad inputs leave nothing behind
    on_stage = on_stage or (lambda name, result: None)
    results = []

    def record(name: str, result) -> None:
        on_stage(name, result)
        results.append(result)

    atoms_path = None
    if mode == "atoms":
        atoms_path = outdir / "atoms.h5"
        record("find-atoms", stages.run_find_atoms(scans, atoms_path, find_atoms, preview=outdir / "atoms.png", force=force, progress=progress))
    record(
        "extract", stages.run_extract(scans, outdir / "patches.h5", extract, atoms=atoms_path, preview=outdir / "patches.png", force=force, progress=progress)
    )
    record("train", stages.run_train(outdir / "patches.h5", outdir / "run", model_config, train_config, force=force, progress=train_progress))
    encoded = outdir / "encoded.h5"
    record("encode", stages.run_encode(outdir / "run", outdir / "patches.h5", encoded, encode_config, force=force, progress=progress, estimate=encode_estimate))
    record("export", stages.run_export(encoded, outdir / "maps", export_config, force=force, progress=progress))
    return results
