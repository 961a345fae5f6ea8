"""Maps and atoms opened where microscopists look: HyperSpy (.hspy) and Fiji (ImageJ hyperstacks).

Each file is reopened as a user would (``hyperspy.api.load``, ``tifffile``) and compared value by
value with ``maps.h5`` (or the atoms artifact); each comparison has a control showing that it would
see a wrong pixel size or swapped axes. The scans are 40 × 64 so that a transposition changes shapes
and calibrations are not 1 so that a dropped one shows.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from microvae import artifacts, interop
from microvae.artifacts import ImageRecord, Provenance
from microvae.config import DEFAULT_EXPORT_FORMATS, EXPORT_FORMATS, ExportConfig
from microvae.errors import ParameterError
from microvae.stages import run_export

SHAPE = (40, 64)
PIXEL = 0.05  # nm


def make_encoded(tmp_path, pixel_size=PIXEL, unit="nm", n_classes=3, latent_dim=2):
    """A scan and an encoded artifact of patches on an 8 px grid over it (classes, latents, scores)."""
    from microvae.images import file_sha256

    scan = tmp_path / "scan.tif"
    tifffile.imwrite(scan, np.random.default_rng(1).random(SHAPE).astype(np.float32))
    rows, cols = np.meshgrid(np.arange(4, SHAPE[0], 8), np.arange(4, SHAPE[1], 8), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
    count = len(coords)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(n_classes), count)
    path = tmp_path / "encoded.h5"
    provenance = Provenance(stage="encode", parameters={}, inputs=[{"path": "p.h5", "sha256": "0" * 64, "role": "patches"}])
    with artifacts.atomic_h5(path, provenance, "encoded") as handle:
        handle["coords"] = coords
        handle["image_index"] = np.zeros(count, np.int32)
        handle["class"] = probs.argmax(1)
        handle["class_probs"] = probs
        handle["z_mean"] = rng.normal(size=(count, latent_dim))
        handle["z_sd"] = np.ones((count, latent_dim))
        handle["angle_rad"] = rng.uniform(-np.pi, np.pi, count)
        handle["shift_px"] = rng.normal(size=(count, 2))
        handle["recon_error"] = rng.random(count)
        handle["neg_elbo"] = rng.random(count) * 100
        handle.attrs["window"] = 8
        handle.attrs["run_dir"] = "study/run"
        record = ImageRecord(str(scan), 0, file_sha256(scan), SHAPE[0], SHAPE[1], 1, pixel_size, unit)
        artifacts.write_image_table(handle, [record])
    return path, record


def read_maps(folder):
    with h5py.File(folder / "maps.h5", "r") as handle:
        return {name: handle["image_00"][name][()] for name in handle["image_00"]}


# --- HyperSpy ---------------------------------------------------------------------------------


def check_signal(signal, expected, nav_names, scale, units):
    """Assert that a loaded signal holds ``expected`` (array order: navigation…, row, col) with
    signal axes y (rows) and x (columns) of the given scale and units, offset 0."""
    assert signal.data.shape == expected.shape, (signal.data.shape, expected.shape)
    np.testing.assert_array_equal(signal.data, expected)
    nav = signal.axes_manager.navigation_axes[::-1]  # HyperSpy lists axes fastest first: back to array order
    assert [axis.name for axis in nav] == list(nav_names)
    assert [axis.size for axis in nav] == list(expected.shape[: len(nav_names)])
    x, y = signal.axes_manager.signal_axes  # HyperSpy's order: x (columns) then y (rows)
    assert (y.name, y.size, x.name, x.size) == ("y", expected.shape[-2], "x", expected.shape[-1])
    for axis in (x, y):
        assert axis.units == units
        assert axis.scale == pytest.approx(scale, rel=1e-12)
        assert axis.offset == 0


def test_hspy_maps_open_in_hyperspy_like_maps_h5(tmp_path):
    """Every map of maps.h5 is in exactly one .hspy signal: the class probabilities as a (K, H, W)
    stack over a "class" axis, the latents over "latent", z{d}_class{k} over (class, latent), every
    other map a 2-D signal; calibrated axes, NaN (class: −1) where maps.h5 has it, and metadata
    naming the scan, the run and microvae."""
    hs = pytest.importorskip("hyperspy.api")
    import microvae

    encoded, record = make_encoded(tmp_path)
    result = run_export(encoded, tmp_path / "maps", ExportConfig(formats=("hspy",)))
    assert result.status == "written"
    folder = tmp_path / "maps"
    maps = read_maps(folder)
    assert not list(folder.glob("*.tif")) and not list(folder.glob("*.png"))
    seen = set()

    probs = hs.load(folder / "00_scan_class_probs.hspy")
    expected = np.stack([maps[f"class_prob_{k}"] for k in range(3)])
    check_signal(probs, expected, ["class"], PIXEL, "nm")
    seen |= {f"class_prob_{k}" for k in range(3)}
    assert np.isnan(probs.data).any() and np.nanmax(probs.data) <= 1
    assert probs.metadata.Signal.quantity == "Probability"

    latents = hs.load(folder / "00_scan_latents.hspy")
    check_signal(latents, np.stack([maps["z0"], maps["z1"]]), ["latent"], PIXEL, "nm")
    seen |= {"z0", "z1"}

    by_class = hs.load(folder / "00_scan_latents_by_class.hspy")
    expected = np.stack([np.stack([maps[f"z{d}_class{k}"] for d in range(2)]) for k in range(3)])
    check_signal(by_class, expected, ["class", "latent"], PIXEL, "nm")
    np.testing.assert_array_equal(by_class.inav[1, 2].data, maps["z1_class2"])  # inav[latent, class]
    seen |= {f"z{d}_class{k}" for d in range(2) for k in range(3)}
    seen_in_families = set(seen)

    for name in sorted(set(maps) - seen):
        signal = hs.load(folder / f"00_scan_{name}.hspy")
        check_signal(signal, maps[name], [], PIXEL, "nm")
        assert signal.data.dtype == maps[name].dtype
        with h5py.File(folder / "maps.h5") as handle:
            units = handle[f"image_00/{name}"].attrs["units"]
        assert signal.metadata.Signal.quantity == (f"{name} ({units})" if units else name)
        assert signal.metadata.General.title == f"scan.tif: {name}"
        assert signal.metadata.microvae.maps[name].units == units
        seen.add(name)
    assert seen == set(maps)
    assert {"class", "angle_rad", "shift_row_px", "shift_col_px", "recon_error", "neg_elbo"} <= seen
    assert (hs.load(folder / "00_scan_class.hspy").data == -1).any()
    files = sorted(path.name for path in folder.glob("*.hspy"))
    assert len(files) == 3 + len(set(maps) - seen_in_families), files

    meta = probs.metadata.microvae
    assert meta.scan.sha256 == record.sha256 and meta.scan.name == "scan.tif" and meta.scan.pixel_unit == "nm"
    assert meta.version == microvae.__version__ and meta.run == "study/run"
    assert meta.maps.class_prob_1.description == "q(y = 1 | x)"
    assert probs.metadata.General.title == "scan.tif: class probabilities q(y|x)"


def test_the_hspy_comparison_sees_a_wrong_pixel_size_or_swapped_axes(tmp_path):
    """Control for the comparison above: the same maps with the pixel size off by 0.1 %, with the
    rows and columns swapped (data transposed, axes renamed to match), or with the class and latent
    axes exchanged, each fail it."""
    hs = pytest.importorskip("hyperspy.api")

    encoded, record = make_encoded(tmp_path)
    run_export(encoded, tmp_path / "maps", ExportConfig(formats=("hspy",)))
    maps = read_maps(tmp_path / "maps")
    check_signal(hs.load(tmp_path / "maps/00_scan_angle_rad.hspy"), maps["angle_rad"], [], PIXEL, "nm")
    with pytest.raises(AssertionError):
        check_signal(hs.load(tmp_path / "maps/00_scan_angle_rad.hspy"), maps["angle_rad"], [], PIXEL * 1.001, "nm")

    axes = [{"name": name, "size": size, "scale": PIXEL, "offset": 0.0, "units": "nm", "navigate": False} for name, size in (("y", SHAPE[1]), ("x", SHAPE[0]))]
    transposed = interop.signal_dict(maps["angle_rad"].T.copy(), axes, "swapped", "", {})
    interop.write_hspy(tmp_path / "swapped.hspy", transposed)
    with pytest.raises(AssertionError):
        check_signal(hs.load(tmp_path / "swapped.hspy"), maps["angle_rad"], [], PIXEL, "nm")

    by_class = hs.load(tmp_path / "maps/00_scan_latents_by_class.hspy")
    swapped = np.stack([np.stack([maps[f"z{d}_class{k}"] for k in range(3)]) for d in range(2)])  # (latent, class, H, W)
    with pytest.raises(AssertionError):
        check_signal(by_class, swapped, ["latent", "class"], PIXEL, "nm")


@pytest.mark.parametrize("pixel_size, unit, scale, units", [(1.0, "px", 1.0, "px"), (0.37, "unknown", 1.0, "px"), (0.5, "Å", 0.5, "Å")])
def test_hspy_axes_of_uncalibrated_and_angstrom_scans(tmp_path, pixel_size, unit, scale, units):
    """An uncalibrated scan gets scale 1 and units px; Å stays Å (HyperSpy's units are free text)."""
    hs = pytest.importorskip("hyperspy.api")

    encoded, _ = make_encoded(tmp_path, pixel_size=pixel_size, unit=unit)
    run_export(encoded, tmp_path / "maps", ExportConfig(formats=("hspy",)))
    check_signal(hs.load(tmp_path / "maps/00_scan_recon_error.hspy"), read_maps(tmp_path / "maps")["recon_error"], [], scale, units)


def test_hspy_is_written_without_hyperspy(tmp_path, monkeypatch):
    """The writer needs RosettaSciIO only: with hyperspy made unimportable the export still writes
    the files (read back here with h5py: HyperSpy's layout, the data and the calibration)."""
    import sys

    monkeypatch.setitem(sys.modules, "hyperspy", None)
    monkeypatch.setitem(sys.modules, "hyperspy.api", None)
    encoded, _ = make_encoded(tmp_path)
    run_export(encoded, tmp_path / "maps", ExportConfig(formats=("hspy",)))
    with h5py.File(tmp_path / "maps/00_scan_angle_rad.hspy", "r") as handle:
        assert handle.attrs["file_format"] == "HyperSpy"
        (group,) = handle["Experiments"].values()
        np.testing.assert_array_equal(group["data"][()], read_maps(tmp_path / "maps")["angle_rad"])
        assert group["axis-0"].attrs["name"] == "y" and group["axis-0"].attrs["scale"] == PIXEL
        assert group["axis-1"].attrs["name"] == "x" and group["axis-1"].attrs["size"] == SHAPE[1]


# --- Fiji: one ImageJ hyperstack per scan ------------------------------------------------------


def check_stack(path, maps, pixel_size, unit):
    """Assert that an ImageJ stack holds every map of ``maps`` as a labelled float32 slice, with
    the given calibration (XResolution = YResolution = 1 / pixel size, ``unit=`` in ImageJ's
    description)."""
    with tifffile.TiffFile(path) as tif:
        stack = tif.asarray()
        meta = tif.imagej_metadata
        tags = tif.pages[0].tags
        assert tif.series[0].axes == "ZYX"
        x_res, y_res = tags["XResolution"].value, tags["YResolution"].value
    labels = list(meta["Labels"])
    assert labels == list(maps), labels
    assert stack.dtype == np.float32 and stack.shape == (len(maps), *next(iter(maps.values())).shape)
    for index, name in enumerate(labels):
        np.testing.assert_array_equal(stack[index], maps[name].astype(np.float32))
    assert meta["unit"] == unit and meta["images"] == len(maps)
    assert x_res[1] / x_res[0] == pytest.approx(pixel_size, rel=1e-6)
    assert y_res[1] / y_res[0] == pytest.approx(pixel_size, rel=1e-6)
    return meta


def test_tiff_stack_has_every_map_as_a_labelled_calibrated_slice(tmp_path):
    """``--format tiff-stack``: NN_<scan>_maps.tif with one float32 slice per map of maps.h5 in its
    order, the map names as ImageJ slice labels, the scan's calibration, and the maps' units and
    descriptions in ImageJ's Info; control: a wrong pixel size or two slices swapped fail."""
    encoded, record = make_encoded(tmp_path)
    run_export(encoded, tmp_path / "maps", ExportConfig(formats=("tiff-stack",)))
    path = tmp_path / "maps/00_scan_maps.tif"
    assert [p.name for p in (tmp_path / "maps").glob("*.tif")] == [path.name]
    maps = read_maps(tmp_path / "maps")
    with h5py.File(tmp_path / "maps/maps.h5") as handle:
        maps = {name: maps[name] for name in handle["image_00"]}  # h5py lists names sorted; the stack follows export's order
    with tifffile.TiffFile(path) as tif:
        order = list(tif.imagej_metadata["Labels"])
    assert sorted(order) == sorted(maps) and order[0] == "class"
    ordered = {name: maps[name] for name in order}
    meta = check_stack(path, ordered, PIXEL, "nm")
    assert record.sha256 in meta["Info"] and "angle_rad [rad]: posterior rotation angle" in meta["Info"]
    assert (tifffile.imread(path)[0] == -1).any()  # class: −1 where missing, as in maps.h5
    with pytest.raises(AssertionError):
        check_stack(path, ordered, PIXEL * 1.001, "nm")
    swapped = dict(ordered)
    swapped["z0"], swapped["z1"] = ordered["z1"], ordered["z0"]
    with pytest.raises(AssertionError):
        check_stack(path, swapped, PIXEL, "nm")


@pytest.mark.parametrize("pixel_size, unit, size, written", [(0.5, "Å", 0.05, "nm"), (0.02, "µm", 0.02, "um"), (0.3, "pm", 0.3, "pm")])
def test_imagej_units_fiji_reads(tmp_path, pixel_size, unit, size, written):
    """ImageJ's description is ASCII: Å becomes nm (size / 10), µm becomes um (ImageJ shows µm);
    the per-map TIFFs, which raised on Å before, get the same calibration."""
    encoded, _ = make_encoded(tmp_path, pixel_size=pixel_size, unit=unit)
    run_export(encoded, tmp_path / "maps", ExportConfig(formats=("tiff", "tiff-stack")))
    with tifffile.TiffFile(tmp_path / "maps/00_scan_maps.tif") as tif:
        order = list(tif.imagej_metadata["Labels"])
    maps = read_maps(tmp_path / "maps")
    check_stack(tmp_path / "maps/00_scan_maps.tif", {name: maps[name] for name in order}, size, written)
    with tifffile.TiffFile(tmp_path / "maps/00_scan_angle_rad.tif") as tif:
        assert tif.imagej_metadata["unit"] == written
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[1] / x_res[0] == pytest.approx(size, rel=1e-6)


def test_uncalibrated_tiff_stack_has_no_unit(tmp_path):
    encoded, _ = make_encoded(tmp_path, pixel_size=1.0, unit="px")
    run_export(encoded, tmp_path / "maps", ExportConfig(formats=("tiff-stack",)))
    with tifffile.TiffFile(tmp_path / "maps/00_scan_maps.tif") as tif:
        assert "unit" not in tif.imagej_metadata and len(tif.imagej_metadata["Labels"]) == len(tif.asarray())
        assert "XResolution" not in tif.pages[0].tags or tif.pages[0].tags["XResolution"].value == (1, 1)


# --- find-atoms --hspy -------------------------------------------------------------------------


def _lattice_scan(tmp_path, pixel_size=0.02):
    from microvae.synthetic import make_lattice

    image = make_lattice(shape=(96, 128), seed=2).image.astype(np.float32)
    scan = tmp_path / "lattice.tif"
    tifffile.imwrite(scan, image, imagej=True, resolution=(1 / pixel_size, 1 / pixel_size), metadata={"unit": "nm"})
    return scan, image


def check_atoms(signal, coords, sublattice, pixel_size, units):
    """Assert that the markers sit at (x, y) = (col, row) · pixel size, sublattice by sublattice, and
    that the axes carry the calibration."""
    x, y = signal.axes_manager.signal_axes
    assert (x.name, y.name, x.units, y.units) == ("x", "y", units, units)
    assert x.scale == pytest.approx(pixel_size, rel=1e-12) and y.scale == pytest.approx(pixel_size, rel=1e-12)
    markers = signal.metadata.Markers
    assert sorted(marker.name for _, marker in markers) == [f"sublattice {k}" for k in np.unique(sublattice)]
    for k in np.unique(sublattice):
        offsets = markers[f"sublattice {k}"].kwargs["offsets"]
        np.testing.assert_allclose(offsets, coords[sublattice == k][:, ::-1] * pixel_size, rtol=0, atol=1e-12)


def test_find_atoms_hspy_is_the_scan_with_its_atoms(tmp_path):
    """``find-atoms --hspy``: the scan as a calibrated Signal2D, the atoms as Points markers per
    sublattice at (col, row) × pixel size, the per-atom table in metadata.microvae.atoms equal to
    the atoms artifact; rewritten when the artifact is up to date. Control: swapped (row, col) or
    a wrong pixel size fail the comparison."""
    hs = pytest.importorskip("hyperspy.api")
    from microvae.stages import run_find_atoms

    scan, image = _lattice_scan(tmp_path)
    result = run_find_atoms([str(scan)], tmp_path / "atoms.h5", hspy=tmp_path / "atoms.hspy")
    assert result.status == "written" and any("atoms.hspy" in note for note in result.notes)
    with h5py.File(tmp_path / "atoms.h5") as handle:
        atoms = {name: handle[name][()] for name in ("coords", "intensity", "sigma_px", "sublattice", "displacement_px", "fit_ok")}
        sha = artifacts.as_str(handle["images/sha256"][0])
    signal = hs.load(tmp_path / "atoms.hspy")
    assert signal.data.shape == image.shape
    np.testing.assert_array_equal(signal.data, image)
    coords, sublattice = atoms["coords"], atoms["sublattice"]
    assert len(np.unique(sublattice)) >= 1 and len(coords) > 20
    check_atoms(signal, coords, sublattice, 0.02, "nm")
    table = signal.metadata.microvae.atoms
    np.testing.assert_allclose(table.x, coords[:, 1] * 0.02, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.y, coords[:, 0] * 0.02, rtol=0, atol=1e-12)
    for name in ("intensity", "sigma_px", "sublattice", "fit_ok"):
        np.testing.assert_array_equal(table[name], atoms[name])
    np.testing.assert_array_equal(table.displacement_row_px, atoms["displacement_px"][:, 0])
    assert signal.metadata.microvae.scan.sha256 == sha
    points = hs.plot.markers.Points(offsets=np.column_stack([table.x, table.y]))  # the conversion the README shows
    assert len(points) == len(coords)
    signal.add_marker(points, plot_marker=False, permanent=True)

    with pytest.raises(AssertionError):
        check_atoms(signal, coords[:, ::-1], sublattice, 0.02, "nm")
    with pytest.raises(AssertionError):
        check_atoms(signal, coords, sublattice, 0.0201, "nm")

    (tmp_path / "atoms.hspy").unlink()
    again = run_find_atoms([str(scan)], tmp_path / "atoms.h5", hspy=tmp_path / "atoms.hspy")
    assert again.status == "up-to-date" and (tmp_path / "atoms.hspy").exists()


def test_find_atoms_hspy_name_is_checked_first(tmp_path):
    from microvae.stages import run_find_atoms

    scan, _ = _lattice_scan(tmp_path)
    with pytest.raises(ParameterError, match="--hspy .*atoms.h5: expected a file name ending in .hspy"):
        run_find_atoms([str(scan)], tmp_path / "out.h5", hspy=tmp_path / "atoms.h5")
    with pytest.raises(ParameterError, match="is the atoms artifact itself"):
        run_find_atoms([str(scan)], tmp_path / "a.hspy", hspy=tmp_path / "a.hspy")
    assert not (tmp_path / "out.h5").exists()


# --- formats: config, CLI, pipeline ------------------------------------------------------------


def test_formats_are_known_to_config_cli_and_pipeline(tmp_path, capsys):
    """hspy and tiff-stack are export formats; the default stays h5,tiff,png; the CLI accepts them
    (and still refuses unknown ones, exit 2); a pipeline's [export] formats take them."""
    from microvae.cli.main import main

    assert {"hspy", "tiff-stack"} <= set(EXPORT_FORMATS)
    assert ExportConfig().formats == DEFAULT_EXPORT_FORMATS == ("h5", "tiff", "png")
    assert ExportConfig.from_settings({"formats": ["hspy", "tiff-stack"]}).normalised().formats == ("hspy", "tiff-stack")
    assert ExportConfig.from_settings({"formats": "png,HSPY"}).normalised().formats == ("png", "hspy")
    with pytest.raises(ParameterError):
        ExportConfig(formats=("hyperspy",)).normalised()

    encoded, _ = make_encoded(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["export", str(encoded), "-o", str(tmp_path / "maps"), "--format", "hspy,tiff-stack", "-q"])
    assert exited.value.code == 0
    assert (tmp_path / "maps/00_scan_maps.tif").exists() and (tmp_path / "maps/00_scan_class_probs.hspy").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["export", str(encoded), "-o", str(tmp_path / "maps2"), "--format", "hspy,fiji"])
    assert exited.value.code == 2 and "fiji" in capsys.readouterr().err
