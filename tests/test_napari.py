"""The napari reader (microvae/napari_reader.py, npe2 plugin ``microvae``), on small synthetic studies.

Skipped where napari is not installed (``pip install -e ".[napari]"``). Layers are checked in a
Qt-free ``ViewerModel``; the screenshot runs a real ``napari.Viewer(show=False)`` in a child process
on Qt's offscreen platform, which needs an X display for OpenGL: the one in ``DISPLAY``, else a
virtual one from ``xvfb-run`` (Debian package ``xvfb``); without either that one test skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import h5py
import numpy as np
import pytest

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from microvae import artifacts  # noqa: E402
from microvae.artifacts import ImageRecord, Provenance  # noqa: E402
from microvae.images import file_sha256  # noqa: E402
from microvae.napari_reader import CLASS_COLOURS, SUBLATTICE_COLOURS, napari_get_reader  # noqa: E402

PIXEL_SIZES = (0.02, 0.05)  # nm per pixel of scan 0 and scan 1


def write_scan(path, seed, pixel_size):
    import tifffile

    from microvae.synthetic import make_lattice

    image = make_lattice(shape=(128, 128), seed=seed).image.astype(np.float32)
    tifffile.imwrite(path, image, imagej=True, resolution=(1 / pixel_size, 1 / pixel_size), metadata={"unit": "nm"})
    return image


def write_encoded(path, scans, coords_per_scan):
    """An encoded artifact over two scans: class 0 left half, class 1 right half, random latents."""
    rng = np.random.default_rng(0)
    coords = np.concatenate(coords_per_scan)
    image_index = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(coords_per_scan)])
    classes = (coords[:, 1] > 64).astype(np.int64)
    probs = np.stack([1.0 - classes, classes], axis=1).astype(np.float32) * 0.8 + 0.1
    provenance = Provenance(stage="encode", parameters={}, inputs=[{"path": "p.h5", "sha256": "0" * 64, "role": "patches"}])
    with artifacts.atomic_h5(path, provenance, "encoded") as handle:
        handle["coords"] = coords
        handle["image_index"] = image_index
        handle["class"] = classes
        handle["class_probs"] = probs
        handle["z_mean"] = rng.normal(size=(len(coords), 2)).astype(np.float32)
        handle["z_sd"] = rng.random((len(coords), 2)).astype(np.float32)
        handle["angle_rad"] = rng.uniform(-np.pi, np.pi, len(coords)).astype(np.float32)
        handle["shift_px"] = rng.normal(size=(len(coords), 2)).astype(np.float32)
        handle["recon_error"] = rng.random(len(coords)).astype(np.float32)
        handle["atom_sublattice"] = rng.integers(0, 2, len(coords)).astype(np.int16)
        handle.attrs["window"] = 12
        handle.attrs["n_classes"] = 2
        records = [ImageRecord(str(scan), 0, file_sha256(scan), 128, 128, 1, size, "nm") for scan, size in zip(scans, PIXEL_SIZES)]
        artifacts.write_image_table(handle, records)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two calibrated scans; a real atoms artifact (find-atoms) of scan 0 and its patches (extract);
    an encoded artifact of both scans; its real maps (export); and a control (a plain HDF5 file)."""
    from microvae.config import ExtractConfig
    from microvae.patches import PatchParams
    from microvae.stages import run_export, run_extract, run_find_atoms

    folder = tmp_path_factory.mktemp("napari")
    scans = [folder / "scan_a.tif", folder / "scan_b.tif"]
    images = [write_scan(path, seed, size) for path, seed, size in zip(scans, (5, 6), PIXEL_SIZES)]
    assert run_find_atoms([str(scans[0])], folder / "atoms.h5").status == "written"
    rows, cols = np.meshgrid(np.arange(8, 120, 10), np.arange(8, 120, 10), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(float)
    write_encoded(folder / "encoded.h5", scans, [grid, grid[::2] + 0.5])
    assert run_export(folder / "encoded.h5", folder / "maps").status == "written"
    with h5py.File(folder / "plain.h5", "w") as handle:
        handle["data"] = np.ones((8, 8))
    assert run_extract([str(scans[0])], folder / "patches.h5", ExtractConfig(PatchParams(window=12)), atoms=folder / "atoms.h5").status == "written"
    return {"folder": folder, "scans": scans, "images": images}


@pytest.fixture
def viewer():
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    return ViewerModel()


def layers_by_kind(layers, kind):
    return [layer for layer in layers if layer._type_string == kind]


def test_other_files_are_declined(study, viewer):
    folder = study["folder"]
    for path in (folder / "plain.h5", study["scans"][0], folder / "missing.h5", folder / "maps" / "00_scan_a_class.tif"):
        assert napari_get_reader(str(path)) is None, path
    assert napari_get_reader([str(folder / "atoms.h5"), str(folder / "plain.h5")]) is None
    with pytest.raises(ValueError):
        viewer.open(str(folder / "plain.h5"), plugin="microvae")
    assert len(viewer.layers) == 0
    # control: the same reader takes the microvae artifacts
    assert napari_get_reader(str(folder / "atoms.h5")) is not None


def test_atoms_artifact_opens_as_scan_and_points(study, viewer):
    path = study["folder"] / "atoms.h5"
    layers = viewer.open(str(path), plugin="microvae")
    assert [layer._type_string for layer in layers] == ["image", "points"]
    scan, points = layers
    np.testing.assert_array_equal(scan.data, study["images"][0])
    for layer in layers:
        np.testing.assert_allclose(layer.scale, [0.02, 0.02])
        assert str(layer.units[0]) == "nanometer"
    with h5py.File(path) as handle:
        np.testing.assert_array_equal(points.data, handle["coords"][()])
        sublattice = handle["sublattice"][()]
        np.testing.assert_array_equal(points.features["sublattice"], sublattice)
        np.testing.assert_array_equal(points.features["intensity"], handle["intensity"][()])
        np.testing.assert_array_equal(points.features["displacement_col_px"], handle["displacement_px"][:, 1])
    assert len(np.unique(sublattice)) >= 2
    expected = np.array([napari.utils.colormaps.standardize_color.transform_color(SUBLATTICE_COLOURS[s])[0] for s in sublattice])
    np.testing.assert_allclose(points.face_color, expected, atol=1e-6)
    # the data-to-world transform maps pixel (row, col) to calibrated nm, as the image's does
    np.testing.assert_allclose(points.data_to_world(points.data[0]), points.data[0] * 0.02)


def test_patches_artifact_opens_as_scan_centres_and_stack(study, viewer):
    """A patches artifact: the scan, the patch centres coloured by their atom's sublattice with the
    per-patch values as features, and the patches themselves as a hidden stack in the points' order."""
    path = study["folder"] / "patches.h5"
    layers = viewer.open(str(path), plugin="microvae")
    assert [layer._type_string for layer in layers] == ["image", "points", "image"]
    scan, points, stack = layers
    np.testing.assert_array_equal(scan.data, study["images"][0])
    with h5py.File(path) as handle:
        np.testing.assert_array_equal(points.data, handle["coords"][()])
        np.testing.assert_array_equal(points.features["sublattice"], handle["atom_sublattice"][()])
        np.testing.assert_array_equal(points.features["norm_scale"], handle["norm_scale"][()])
        np.testing.assert_array_equal(points.features["atom_index"], handle["atom_index"][()])
        np.testing.assert_array_equal(stack.data, handle["patches"][:, 0])
    assert stack.data.shape[1:] == (12, 12) and not stack.visible and scan.visible
    np.testing.assert_allclose(stack.scale, [1.0, 0.02, 0.02])
    expected = np.array([napari.utils.colormaps.standardize_color.transform_color(SUBLATTICE_COLOURS[s])[0] for s in points.features["sublattice"]])
    np.testing.assert_allclose(points.face_color, expected, atol=1e-6)


def test_encoded_artifact_one_set_of_layers_per_scan(study, viewer):
    path = study["folder"] / "encoded.h5"
    layers = viewer.open(str(path), plugin="microvae")
    assert [layer._type_string for layer in layers] == ["image", "points", "image", "points"]
    assert [layer.visible for layer in layers] == [True, True, False, False]
    assert layers[0].name.startswith("scan_a.tif") and layers[2].name.startswith("scan_b.tif")
    with h5py.File(path) as handle:
        image_index = handle["image_index"][()]
        for index, (scan, points) in enumerate((layers[:2], layers[2:])):
            rows = image_index == index
            np.testing.assert_array_equal(scan.data, study["images"][index])
            np.testing.assert_allclose(scan.scale, [PIXEL_SIZES[index]] * 2)
            np.testing.assert_allclose(points.scale, [PIXEL_SIZES[index]] * 2)
            np.testing.assert_array_equal(points.data, handle["coords"][()][rows])
            features = points.features
            for k in range(2):
                np.testing.assert_array_equal(features[f"class_prob_{k}"], handle["class_probs"][()][rows, k])
                np.testing.assert_array_equal(features[f"z{k}"], handle["z_mean"][()][rows, k])
                np.testing.assert_array_equal(features[f"z{k}_sd"], handle["z_sd"][()][rows, k])
            np.testing.assert_array_equal(features["class"], handle["class"][()][rows])
            np.testing.assert_array_equal(features["angle_rad"], handle["angle_rad"][()][rows])
            np.testing.assert_array_equal(features["recon_error"], handle["recon_error"][()][rows])
            np.testing.assert_array_equal(features["sublattice"], handle["atom_sublattice"][()][rows])
            np.testing.assert_array_equal(features["shift_row_px"], handle["shift_px"][()][rows, 0])
            classes = handle["class"][()][rows]
            expected = np.array([napari.utils.colormaps.standardize_color.transform_color(CLASS_COLOURS[k])[0] for k in classes])
            np.testing.assert_allclose(points.face_color, expected, atol=1e-6)
    # the layer controls can recolour by any feature, for example a latent on a colormap
    points = layers[1]
    points.face_color = "z0"
    assert points.face_color.shape == (len(points.data), 4) and len(np.unique(points.face_color, axis=0)) > 10


def test_maps_folder_and_file_open_as_map_layers(study, viewer):
    folder = study["folder"] / "maps"
    layers = viewer.open(str(folder), plugin="microvae")
    again = viewer.open(str(folder / "maps.h5"), plugin="microvae")
    assert len(again) == len(layers)
    with h5py.File(folder / "maps.h5") as handle:
        for index in range(2):
            group = handle[f"image_{index:02d}"]
            mine = [layer for layer in layers if layer.metadata["microvae"]["image_index"] == index]
            scan, maps = mine[0], mine[1:]
            np.testing.assert_array_equal(scan.data, study["images"][index])
            assert sorted(layer.name.split(": ")[1] for layer in maps) == sorted(group)
            for layer in maps:
                name = layer.name.split(": ")[1]
                np.testing.assert_array_equal(layer.data, group[name][()])
                np.testing.assert_allclose(layer.scale, [PIXEL_SIZES[index]] * 2)
                assert layer.visible == (index == 0 and name == "class")
            assert maps[0].name.endswith(": class")
    assert all(layer._type_string == "image" for layer in layers)


def test_missing_scan_leaves_out_only_its_image(study, viewer, tmp_path):
    """The scan moved away (and a different file put in its place): points without the image."""
    atoms = tmp_path / "atoms.h5"
    shutil.copy(study["folder"] / "atoms.h5", atoms)
    with h5py.File(atoms, "a") as handle:
        del handle["images"]
        record = ImageRecord(str(tmp_path / "gone.tif"), 0, "0" * 64, 128, 128, 1, 0.02, "nm")
        artifacts.write_image_table(handle, [record])
    shutil.copy(study["scans"][1], tmp_path / "gone.tif")  # same name, other contents: not used
    layers = viewer.open(str(atoms), plugin="microvae")
    assert [layer._type_string for layer in layers] == ["points"]
    np.testing.assert_allclose(layers[0].scale, [0.02, 0.02])


def test_reader_module_does_not_import_napari():
    code = "import sys, microvae.napari_reader, microvae.cli.main; assert not any(m.split('.')[0] in ('napari', 'qtpy', 'PyQt5') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


SCREENSHOT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import napari

    def grab(viewer):
        shot = viewer.screenshot(canvas_only=True, flash=False)
        if shot[..., :3].std() > 0:
            return shot, "screenshot"
        # Qt's grabFramebuffer of a hidden canvas comes back black under Xvfb with Mesa's llvmpipe;
        # vispy's own offscreen render of the same scene works there
        return viewer.window._qt_viewer.canvas._scene_canvas.render(), "vispy render"

    viewer = napari.Viewer(show=False)
    layers = viewer.open(sys.argv[1], plugin="microvae")
    viewer.reset_view()
    shots = {}
    shots["with"], how = grab(viewer)
    for layer in layers:
        layer.visible = layer._type_string == "image" and layer.metadata["microvae"]["image_index"] == 0
    shots["without"], _ = grab(viewer)
    stats = {"how": how}
    for key, shot in shots.items():
        rgb = shot[..., :3].astype(float)
        stats[key] = {"std": float(rgb.std()), "coloured": float(((rgb.max(-1) - rgb.min(-1)) > 60).mean())}
    np.save(sys.argv[2], shots["with"])
    print(json.dumps(stats))
    viewer.close()
    """
)


def display_command() -> list[str] | None:
    if os.environ.get("DISPLAY"):
        return []
    if shutil.which("xvfb-run"):
        return ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24"]
    return None


def test_screenshot_shows_scan_and_coloured_points(study, tmp_path):
    prefix = display_command()
    if prefix is None:
        pytest.skip("no X display for OpenGL: set DISPLAY or install xvfb (apt-get install xvfb)")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    shot = tmp_path / "shot.npy"
    done = subprocess.run(
        [*prefix, sys.executable, "-c", SCREENSHOT, str(study["folder"] / "encoded.h5"), str(shot)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    stats = json.loads(done.stdout.strip().splitlines()[-1])
    image = np.load(shot)
    assert image.ndim == 3 and image.shape[2] == 4 and min(image.shape[:2]) > 200
    assert stats["with"]["std"] > 20  # not blank: the scan's lattice
    assert stats["with"]["coloured"] > 0.01  # the class-coloured points
    assert stats["without"]["std"] > 20 and stats["without"]["coloured"] < 0.001  # control: grey scan alone
