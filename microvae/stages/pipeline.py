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
    """The parsed TOML: one dict of settings per section.

    Attributes
    ----------
    sections : dict of str to dict
        Each section's name (a key of :data:`SECTIONS`) to its settings.
    """

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """A copy of one section's settings.

        Parameters
        ----------
        name : str
            The section's name, e.g. ``"train"``.

        Returns
        -------
        dict of str to Any
            Its settings (empty when the file has no such section); changing it leaves the config
            as it was.
        """
        return dict(self.sections.get(name, {}))


def read_config(path: str | Path) -> PipelineConfig:
    """Parse and check a pipeline TOML file.

    Parameters
    ----------
    path : str or path
        The TOML file (UTF-8), with the sections of :data:`SECTIONS`.

    Returns
    -------
    PipelineConfig
        The parsed sections.

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
    """The [find_atoms] section as a :class:`~microvae.config.FindAtomsConfig`.

    Parameters
    ----------
    config : PipelineConfig
        The parsed pipeline file.

    Returns
    -------
    FindAtomsConfig
        Absent keys take the defaults.

    Raises
    ------
    ParameterError
        Unknown keys.
    """
    return FindAtomsConfig.from_settings(config.section("find_atoms"))


def extract_config(config: PipelineConfig) -> tuple[ExtractConfig, str]:
    """The extraction settings and mode from the [extract] section.

    Scans are read as [find_atoms] reads them unless [extract] says otherwise.

    Parameters
    ----------
    config : PipelineConfig
        The parsed pipeline file.

    Returns
    -------
    extract : ExtractConfig
        The extraction settings (``grid_step`` None in mode 'atoms'; half the window, at least 1,
        in mode 'grid' unless given).
    mode : str
        'atoms' (the default) cuts one patch per atom of the find-atoms stage; 'grid' cuts on a
        grid of ``grid_step`` px.

    Raises
    ------
    ParameterError
        A mode other than 'atoms' or 'grid', or unknown keys.
    """
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
    """The model's and training's settings from the [train] section.

    Parameters
    ----------
    config : PipelineConfig
        The parsed pipeline file.

    Returns
    -------
    tuple of (JTRVAEConfig, TrainConfig)
        Absent keys take the library defaults (:func:`microvae.config.configs_from_settings`).

    Raises
    ------
    ParameterError
        Unknown training settings.
    """
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
    """Run every stage in order into ``outdir``.

    Every section is read and checked before the first stage runs, and the folder is made by the
    first stage that writes into it: a bad setting or bad inputs leave nothing behind. Stages run
    with ``force``: changed stages replace their artifacts, unchanged ones are reused.

    Parameters
    ----------
    config_path : str or path
        The pipeline's TOML file (:func:`read_config`).
    scans : list of str
        The scans, as for ``find-atoms`` and ``extract``.
    outdir : str or path
        The output folder: ``atoms.h5`` (mode 'atoms'), ``patches.h5``, ``run/``, ``encoded.h5``,
        ``maps/`` (and the previews ``atoms.png``, ``patches.png``).
    on_stage : callable, optional
        ``on_stage(name, result)`` after each stage (for the CLI's report).
    progress : callable, optional
        The stages' progress, ``progress(description, completed, total)``.
    train_progress : callable, optional
        Training's events (see :func:`~microvae.stages.train.run_train`).
    encode_estimate : callable, optional
        Encoding's estimate (see :func:`~microvae.stages.encode.run_encode`).

    Returns
    -------
    list of StageResult
        One :class:`~microvae.stages.StageResult` per stage run, in order.

    Raises
    ------
    InputError
        The config file is missing or not valid TOML (and what the stages raise).
    ParameterError
        Unknown sections or keys, or settings a stage refuses.
    OutputError
        ``outdir`` exists and is not a folder.
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
