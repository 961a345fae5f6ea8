"""Stage artifacts: one HDF5 file per stage, self-describing, written atomically.

Every artifact is an HDF5 file whose root attributes say what it is and where it came from:

=====================  ==========================================================================
``microvae_artifact``  the kind: ``"atoms"``, ``"patches"``, ``"encoded"``
``schema_version``     integer, :data:`SCHEMA_VERSION` when written by this microvae
``microvae_version``   the package version that wrote it
``created``            ISO 8601 time (UTC)
``command_line``       the command as typed (``sys.argv`` joined)
``parameters``         JSON object of every parameter of the stage, defaults included
``inputs``             JSON list of ``{"path", "sha256", "role"}`` for every file read
``upstream``           JSON list of the provenance of the artifacts this one was made from, each
                       with its own ``upstream`` (the full chain back to the raw scans)
``fingerprint``        SHA-256 over stage, parameters and input hashes: equal fingerprints mean
                       the artifact is up to date
=====================  ==========================================================================

Each dataset carries ``units`` and ``description`` attributes (see ``docs/schema.md``).

The rules every stage shares live here: :func:`plan_output` decides whether a stage runs (new
output), is skipped (up to date) or is refused (exists with other inputs or parameters and no
``force``); :func:`atomic_h5` writes to a temporary file beside the target and renames it into place
only when everything was written, so an interrupted stage never leaves a half-written artifact;
:func:`output_lock` stops two processes from writing the same path at once. The atomic writes and
the locks themselves live in :mod:`microvae.atomic` (re-exported here, where the stages find them).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import atomic_file, check_writable_location, clear_stale_lock, describe_os_error, output_lock, remove_stale_temps
from .errors import InputError, OutputError, ParameterError

__all__ = [
    "ARTIFACT_KINDS",
    "COMPRESSIONS",
    "GZIP",
    "SCHEMA_VERSION",
    "TRIAL_BYTES",
    "ArtifactHeader",
    "ImageRecord",
    "OutputPlan",
    "Provenance",
    "as_str",
    "atomic_file",
    "atomic_h5",
    "check_schema_version",
    "check_writable_location",
    "compute_fingerprint",
    "create_dataset",
    "describe_os_error",
    "gzip_options",
    "json_default",
    "output_lock",
    "plan_output",
    "read_header",
    "read_image_table",
    "remove_stale_temps",
    "require_datasets",
    "to_json",
    "write_dataset",
    "write_image_table",
]

SCHEMA_VERSION = 1
ARTIFACT_KINDS = ("atoms", "patches", "encoded", "maps")


@dataclass
class Provenance:
    """Where an artifact came from. Stored as root attributes of the artifact.

    Attributes
    ----------
    stage : str
        The stage that wrote it, e.g. ``"find-atoms"``.
    parameters : dict of str to Any
        The settings that determine the output.
    inputs : list of dict of str to str
        One ``{"path", "sha256", "role"}`` per input file.
    upstream : list of dict
        The provenance records of the input artifacts (:meth:`ArtifactHeader.provenance_record`).
    command_line : str
        ``sys.argv`` joined by spaces.
    microvae_version : str
        The version that wrote it.
    created : str
        UTC time, ISO 8601 to the second.
    schema_version : int
        :data:`SCHEMA_VERSION`.
    """

    stage: str
    parameters: dict[str, Any]
    inputs: list[dict[str, str]]
    upstream: list[dict[str, Any]] = field(default_factory=list)
    command_line: str = field(default_factory=lambda: " ".join(sys.argv))
    microvae_version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = SCHEMA_VERSION

    @property
    def fingerprint(self) -> str:
        return compute_fingerprint(self.stage, self.parameters, self.inputs)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, with the ``fingerprint`` added.

        Returns
        -------
        dict of str to Any
            Every attribute and ``fingerprint`` (:func:`compute_fingerprint`).
        """
        record = asdict(self)
        record["fingerprint"] = self.fingerprint
        return record


def compute_fingerprint(stage: str, parameters: dict[str, Any], inputs: list[dict[str, str]]) -> str:
    """Hash of what determines a stage's output: its name, its parameters and its inputs' contents.

    Input paths do not enter the hash (a moved file is still the same input); their hashes and roles do.

    Parameters
    ----------
    stage : str
        The stage's name.
    parameters : dict of str to Any
        Its settings (JSON-serialisable through :func:`json_default`).
    inputs : list of dict of str to str
        Entries with ``sha256`` and optionally ``role``.

    Returns
    -------
    str
        SHA-256 hex digest of the sorted JSON of stage, schema version, parameters and the
        inputs' (role, hash) pairs.
    """
    payload = {
        "stage": stage,
        "schema_version": SCHEMA_VERSION,
        "parameters": parameters,
        "inputs": sorted((entry.get("role", ""), entry["sha256"]) for entry in inputs),
    }
    text = json.dumps(payload, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def json_default(value: Any) -> Any:
    """The ``default`` of :func:`json.dumps` for numpy scalars and arrays and paths.

    Parameters
    ----------
    value : Any
        A value :mod:`json` cannot serialise itself.

    Returns
    -------
    int, float, list or str
        numpy integers and floats as Python numbers, arrays as lists, paths as strings.

    Raises
    ------
    TypeError
        Any other type.
    """
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: Any) -> str:
    """Compact JSON with sorted keys (numpy values and paths through :func:`json_default`).

    Parameters
    ----------
    value : Any
        Plain data.

    Returns
    -------
    str
        The JSON text.
    """
    return json.dumps(value, sort_keys=True, default=json_default)


# ----------------------------------------------------------------------------------------------
# Deciding whether a stage runs


@dataclass
class OutputPlan:
    """What to do about an output path: ``"write"`` it or ``"skip"`` it (already up to date).

    Attributes
    ----------
    action : str
        ``"write"`` or ``"skip"``.
    reason : str
        Why, for the user (e.g. "new output", "overwriting (--force)").
    """

    action: str
    reason: str


def plan_output(path: str | Path, fingerprint: str, force: bool = False) -> OutputPlan:
    """Decide whether a stage writes ``path``.

    Parameters
    ----------
    path : str or path
        The output artifact.
    fingerprint : str
        The fingerprint of the output the stage would write (:attr:`Provenance.fingerprint`).
    force : bool, default False
        Overwrite an output with other inputs or parameters, or a file that is not an artifact.

    Returns
    -------
    OutputPlan
        ``skip`` when ``path`` is an artifact with the same fingerprint (same stage, parameters
        and input contents) and schema version (a stale lock beside it is cleared), even with
        ``force``; ``write`` when it does not exist or ``force`` is set.

    Raises
    ------
    OutputError
        ``path`` exists but holds other inputs or parameters (or is not a microvae artifact, or was
        written with another schema version), and ``force`` is not set; or its folder cannot be
        written.
    """
    path = Path(path)
    check_writable_location(path)
    if not path.exists():
        return OutputPlan("write", "new output")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; expected a file path for the output artifact")
    existing, version = _read_fingerprint(path)
    if existing == fingerprint and version == SCHEMA_VERSION:
        clear_stale_lock(path)
        return OutputPlan("skip", "up to date (same inputs and parameters)")
    if force:
        return OutputPlan("write", "overwriting (--force)")
    if existing is not None and version != SCHEMA_VERSION:
        raise OutputError(
            f"{path}: exists with artifact schema version {version}, this microvae ({__version__}) writes version "
            f"{SCHEMA_VERSION}; pass --force to replace it, or choose another output"
        )
    if existing is None:
        raise OutputError(f"{path}: exists and is not a microvae artifact; choose another output or pass --force to overwrite it")
    raise OutputError(f"{path}: exists with other inputs or parameters; pass --force to overwrite it, or choose another output")


def _read_fingerprint(path: Path) -> tuple[str | None, int | None]:
    """(fingerprint, schema version) of an existing artifact; (None, None) for other files."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get("fingerprint")
            version = handle.attrs.get("schema_version")
    except Exception:
        return None, None
    if value is None:
        return None, None
    return as_str(value), int(version) if version is not None else 0


# ----------------------------------------------------------------------------------------------
# Writing


@contextlib.contextmanager
def atomic_h5(path: str | Path, provenance: Provenance, kind: str) -> Iterator[Any]:
    """Open a temporary HDF5 file beside ``path``; on success stamp it and rename it into place.

    On any exception the temporary file is removed and ``path`` is left as it was (an older
    artifact there survives intact).

    Parameters
    ----------
    path : str or Path
        The artifact to write (its folder is made if need be).
    provenance : Provenance
        Stamped as the root attributes.
    kind : str
        One of :data:`ARTIFACT_KINDS`.

    Yields
    ------
    h5py.File
        Open for writing.

    Raises
    ------
    OutputError
        The folder cannot be made or written, another process holds the output's lock, or the
        write failed; ``path`` is unchanged.
    """
    import h5py

    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{path}: cannot create its folder ({describe_os_error(error)})") from error
    with output_lock(path), atomic_file(path) as temp:
        with h5py.File(temp, "w") as handle:
            _write_provenance(handle, provenance, kind)
            yield handle


def _write_provenance(handle, provenance: Provenance, kind: str) -> None:
    record = provenance.to_dict()
    handle.attrs["microvae_artifact"] = kind
    handle.attrs["schema_version"] = int(record["schema_version"])
    handle.attrs["microvae_version"] = record["microvae_version"]
    handle.attrs["created"] = record["created"]
    handle.attrs["command_line"] = record["command_line"]
    handle.attrs["stage"] = record["stage"]
    handle.attrs["parameters"] = to_json(record["parameters"])
    handle.attrs["inputs"] = to_json(record["inputs"])
    handle.attrs["upstream"] = to_json(record["upstream"])
    handle.attrs["fingerprint"] = record["fingerprint"]


#: Compression of large datasets: gzip level 1, with HDF5's byte shuffle in front where it helps
#: (both filters are built into every HDF5 library: h5py, HyperSpy, Fiji and MATLAB read them).
GZIP = {"compression": "gzip", "compression_opts": 1}
#: ``compression`` choices of :func:`create_dataset`: 'none' reads fastest (for GPU streaming).
COMPRESSIONS = ("gzip", "none")
#: Bytes of a dataset's data that :func:`gzip_options` trial-compresses.
TRIAL_BYTES = 1 << 20


def gzip_options(sample: np.ndarray) -> dict[str, Any]:
    """h5py options for gzip level 1, with the byte shuffle when it compresses ``sample`` smaller
    than gzip alone.

    Neither wins everywhere: on noisy atom-centred float32 patches the shuffle made the file 11 %
    smaller and reading 2.3× faster, while overlapping grid patches, which repeat exact pixel
    values, were 35 % smaller and read 1.6× faster without it (benchmarks/README.md, "Encoding").

    Parameters
    ----------
    sample : ndarray
        The first chunk's worth of the data; its first :data:`TRIAL_BYTES` bytes are
        trial-compressed (byte-sized, non-numeric or empty data get gzip alone).

    Returns
    -------
    dict of str to Any
        ``compression``, ``compression_opts`` and, when it helps, ``shuffle=True``.
    """
    import zlib

    data = np.ascontiguousarray(sample).reshape(-1)
    if data.dtype.kind not in "biufc" or data.dtype.itemsize == 1 or data.size == 0:
        return dict(GZIP)
    raw = data[: max(1, TRIAL_BYTES // data.dtype.itemsize)].view(np.uint8)
    plain = len(zlib.compress(raw.tobytes(), 1))
    shuffled = len(zlib.compress(raw.reshape(-1, data.dtype.itemsize).T.tobytes(), 1))  # what HDF5's shuffle does
    return {**GZIP, "shuffle": True} if shuffled < plain else dict(GZIP)


def create_dataset(
    group,
    name: str,
    shape: tuple[int, ...],
    dtype,
    units: str,
    description: str,
    chunk_rows: int,
    compression: str = "gzip",
    sample: np.ndarray | None = None,
    **attrs: Any,
):
    """An empty dataset to fill block by block, with ``units`` and ``description`` attributes.

    Parameters
    ----------
    group : h5py.Group
        Where the dataset is made.
    name : str
        Its name.
    shape : tuple of int
        Its shape.
    dtype : dtype
        Its data type.
    units : str
        The ``units`` attribute (e.g. ``"px"``, ``"rad"``; ``""`` for none).
    description : str
        The ``description`` attribute.
    chunk_rows : int
        Chunks of this many rows along axis 0 (at most the rows there are, at least 1), whole
        along the other axes.
    compression : str, default "gzip"
        'gzip' (level 1, with the byte shuffle when :func:`gzip_options` finds that it shrinks
        ``sample``) or 'none' (reads fastest).
    sample : ndarray, optional
        The first rows of the data, for :func:`gzip_options`.
    **attrs
        Further attributes.

    Returns
    -------
    h5py.Dataset
        The empty dataset.

    Raises
    ------
    ParameterError
        ``compression`` is not one of :data:`COMPRESSIONS`.
    """
    if compression not in COMPRESSIONS:
        raise ParameterError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    chunks = (max(1, min(chunk_rows, shape[0])),) + tuple(shape[1:])
    options = {} if compression == "none" else (gzip_options(sample) if sample is not None else dict(GZIP))
    dataset = group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **options)
    return _describe(dataset, units, description, attrs)


def _describe(dataset, units: str, description: str, attrs: dict[str, Any]):
    dataset.attrs["units"] = units
    dataset.attrs["description"] = description
    for key, value in attrs.items():
        dataset.attrs[key] = value
    return dataset


def write_dataset(group, name: str, data: np.ndarray, units: str, description: str, chunks=None, **attrs: Any):
    """Create a dataset with ``units`` and ``description`` attributes (and any others given).

    Parameters
    ----------
    group : h5py.Group
        Where the dataset is made.
    name : str
        Its name.
    data : ndarray
        Its values; arrays of more than 4096 elements are chunked and gzip-compressed
        (:func:`gzip_options`).
    units : str
        The ``units`` attribute (e.g. ``"px"``, ``"rad"``, ``"nats"``; ``""`` for none).
    description : str
        The ``description`` attribute.
    chunks : tuple of int or True, optional
        The chunk shape of a compressed dataset (default: h5py's choice).
    **attrs
        Further attributes.

    Returns
    -------
    h5py.Dataset
        The dataset.
    """
    data = np.asarray(data)
    options: dict[str, Any] = {}
    if data.ndim >= 1 and data.size > 4096:
        options.update(gzip_options(data))
        options["chunks"] = chunks if chunks is not None else True
    return _describe(group.create_dataset(name, data=data, **options), units, description, attrs)


# ----------------------------------------------------------------------------------------------
# Reading


@dataclass
class ArtifactHeader:
    """The root attributes of an artifact, decoded.

    Attributes
    ----------
    path : Path
        The file.
    kind : str
        One of :data:`ARTIFACT_KINDS`.
    schema_version : int
        The artifact's schema version.
    microvae_version : str
        The version that wrote it.
    parameters : dict of str to Any
        The stage's settings.
    inputs : list of dict of str to str
        ``{"path", "sha256", "role"}`` per input file.
    upstream : list of dict
        The provenance records of its input artifacts.
    fingerprint : str
        :func:`compute_fingerprint` of stage, parameters and inputs.
    stage : str
        The stage that wrote it.
    created : str
        UTC time, ISO 8601.
    command_line : str
        The command that wrote it.
    """

    path: Path
    kind: str
    schema_version: int
    microvae_version: str
    parameters: dict[str, Any]
    inputs: list[dict[str, str]]
    upstream: list[dict[str, Any]]
    fingerprint: str
    stage: str
    created: str
    command_line: str

    def provenance_record(self) -> dict[str, Any]:
        """This artifact's provenance as an entry for a downstream artifact's ``upstream`` list.

        Returns
        -------
        dict of str to Any
            ``path``, ``kind``, ``stage``, ``fingerprint``, ``parameters``, ``inputs``,
            ``upstream``, ``created`` and ``microvae_version``.
        """
        return {
            "path": str(self.path),
            "kind": self.kind,
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "parameters": self.parameters,
            "inputs": self.inputs,
            "upstream": self.upstream,
            "created": self.created,
            "microvae_version": self.microvae_version,
        }


def read_header(path: str | Path, expected_kind: str | None = None) -> ArtifactHeader:
    """Open ``path`` and check that it is a microvae artifact of ``expected_kind``.

    Parameters
    ----------
    path : str or path
        The artifact.
    expected_kind : str, optional
        One of :data:`ARTIFACT_KINDS`; None accepts any kind.

    Returns
    -------
    ArtifactHeader
        Its root attributes, decoded.

    Raises
    ------
    InputError
        Missing, not HDF5, not a microvae artifact, of another kind, or of a schema version this
        microvae cannot read.
    """
    import h5py

    path = Path(path)
    wanted = f"a microvae '{expected_kind}' artifact" if expected_kind else "a microvae artifact"
    if not path.exists():
        raise InputError(f"{path}: no such file (expected {wanted})")
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
    except Exception as error:
        raise InputError(f"{path}: not a readable HDF5 file (expected {wanted}); is it truncated or of another format?") from error
    if "microvae_artifact" not in attrs:
        raise InputError(f"{path}: HDF5 file without microvae provenance (expected {wanted})")
    kind = as_str(attrs["microvae_artifact"])
    if expected_kind and kind != expected_kind:
        raise InputError(f"{path}: is a microvae '{kind}' artifact, expected {wanted}")
    version = int(attrs.get("schema_version", 0))
    check_schema_version(path, version)
    return ArtifactHeader(
        path=path,
        kind=kind,
        schema_version=version,
        microvae_version=as_str(attrs.get("microvae_version", "")),
        parameters=json.loads(as_str(attrs.get("parameters", "{}"))),
        inputs=json.loads(as_str(attrs.get("inputs", "[]"))),
        upstream=json.loads(as_str(attrs.get("upstream", "[]"))),
        fingerprint=as_str(attrs.get("fingerprint", "")),
        stage=as_str(attrs.get("stage", "")),
        created=as_str(attrs.get("created", "")),
        command_line=as_str(attrs.get("command_line", "")),
    )


def check_schema_version(
    path: str | Path,
    version: int,
    what: str = "artifact schema",
    supported: int = SCHEMA_VERSION,
    remedy: str = "rerun the stage that made it with this microvae",
) -> None:
    """Raise InputError unless ``version`` (read from ``path``) is the ``supported`` one.

    The message names both versions and says whether the file is older or newer than this microvae.

    Parameters
    ----------
    path : str or path
        The file, named in the message.
    version : int
        The version read from it.
    what : str, default "artifact schema"
        What is versioned, named in the message.
    supported : int, default SCHEMA_VERSION
        The version this microvae reads.
    remedy : str
        What the user can do, ending the message.

    Raises
    ------
    InputError
        ``version`` is not ``supported``.
    """
    if version == supported:
        return
    relation = "newer" if version > supported else "older"
    raise InputError(f"{path}: {what} version {version} is {relation} than this microvae ({__version__}) reads (version {supported}); {remedy}")


def require_datasets(handle, path: str | Path, names: list[str], kind: str) -> None:
    """Raise InputError naming the first dataset that a ``kind`` artifact lacks.

    Parameters
    ----------
    handle : h5py.File
        The open artifact.
    path : str or path
        Its path, named in the message.
    names : list of str
        The datasets it must hold.
    kind : str
        Its kind, named in the message.

    Raises
    ------
    InputError
        A dataset is missing.
    """
    for name in names:
        if name not in handle:
            raise InputError(f"{path}: '{kind}' artifact lacks dataset '{name}'; the file is incomplete or damaged")


def as_str(value: Any) -> str:
    """An HDF5 attribute or string value as ``str`` (bytes decoded as UTF-8, errors replaced).

    Parameters
    ----------
    value : Any
        bytes, str or anything with a ``str``.

    Returns
    -------
    str
        The text.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ----------------------------------------------------------------------------------------------
# The table of source images, shared by every artifact


@dataclass
class ImageRecord:
    """One source scan as artifacts remember it (everything except its pixels).

    Attributes
    ----------
    source : str
        The path as given by the user (with ``:/dataset`` for HDF5).
    frame : int
        Frame index within a multi-frame file.
    sha256 : str
        SHA-256 of the source file.
    height, width : int
        The scan's shape in px.
    n_channels : int
        Co-registered channels.
    pixel_size : float
        Calibrated size of one pixel, in ``unit`` (1.0 with unit 'px' when the file had none).
    unit : str
        The unit of ``pixel_size``.
    """

    source: str
    frame: int
    sha256: str
    height: int
    width: int
    n_channels: int
    pixel_size: float
    unit: str

    @property
    def name(self) -> str:
        base = Path(self.source.split(":/")[0]).name
        return f"{base}[{self.frame}]" if self.frame else base


def write_image_table(handle, records: list[ImageRecord]) -> None:
    """Write ``/images``: one row per source scan, indexed by the artifacts' ``image_index``.

    Parameters
    ----------
    handle : h5py.File
        The artifact open for writing.
    records : list of ImageRecord
        The source scans, in ``image_index`` order: written as ``source``, ``frame``,
        ``sha256``, ``shape`` (height, width) px, ``n_channels``, ``pixel_size`` and
        ``pixel_unit``.
    """
    import h5py

    group = handle.create_group("images")
    group.attrs["description"] = "source scans; row i is image_index i of the per-patch/per-atom datasets"
    string_type = h5py.string_dtype()
    write_dataset(
        group, "source", np.array([r.source for r in records], dtype=object).astype(string_type), "", "path as given by the user (with :/dataset for HDF5)"
    )
    write_dataset(group, "frame", np.array([r.frame for r in records], dtype=np.int32), "", "frame index within a multi-frame file")
    write_dataset(group, "sha256", np.array([r.sha256 for r in records], dtype=object).astype(string_type), "", "SHA-256 of the source file")
    write_dataset(group, "shape", np.array([[r.height, r.width] for r in records], dtype=np.int64).reshape(-1, 2), "px", "(height, width) of the scan")
    write_dataset(group, "n_channels", np.array([r.n_channels for r in records], dtype=np.int32), "", "co-registered channels")
    write_dataset(
        group,
        "pixel_size",
        np.array([r.pixel_size for r in records], dtype=np.float64),
        "see pixel_unit",
        "calibrated size of one pixel (1.0 with unit 'px' when the file had none)",
    )
    write_dataset(group, "pixel_unit", np.array([r.unit for r in records], dtype=object).astype(string_type), "", "unit of pixel_size")


def read_image_table(handle) -> list[ImageRecord]:
    """Read ``/images`` (written by :func:`write_image_table`).

    Parameters
    ----------
    handle : h5py.File
        The open artifact.

    Returns
    -------
    list of ImageRecord
        One per source scan, in ``image_index`` order.
    """
    group = handle["images"]
    count = len(group["source"])
    return [
        ImageRecord(
            source=as_str(group["source"][index]),
            frame=int(group["frame"][index]),
            sha256=as_str(group["sha256"][index]),
            height=int(group["shape"][index][0]),
            width=int(group["shape"][index][1]),
            n_channels=int(group["n_channels"][index]),
            pixel_size=float(group["pixel_size"][index]),
            unit=as_str(group["pixel_unit"][index]),
        )
        for index in range(count)
    ]
