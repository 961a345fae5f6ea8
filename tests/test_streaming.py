"""Patches larger than memory: the lazy PatchFile, shuffled chunk-order batches, streamed training
and encoding (equal to the resident results), and DistributedDataParallel over two CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from microvae.config import EncodeConfig
from microvae.models import JTRVAEConfig
from microvae.streaming import PatchFile, evenly_spaced, shuffled_batches, value_range
from microvae.training import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


def patch_file(tmp_path, n=300, size=10, chunk=16, seed=0):
    images = np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=images, chunks=(chunk, 1, size, size))
    return images, path


def cards_file(tmp_path, count=200):
    """Card patches of 10×10 (structure to learn, unlike uniform noise) as an HDF5 file for PatchFile."""
    from microvae.cards import make_cards

    images = make_cards(count, size=10, max_angle_deg=60.0, seed=7).images
    path = tmp_path / "cards.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=images, chunks=(16, 1, 10, 10))
    return images, path


def test_patch_file_reads_like_the_array(tmp_path):
    images, path = patch_file(tmp_path)
    view = PatchFile(path)
    assert len(view) == 300 and view.shape == images.shape and view.chunk_rows == 16 and view.nbytes == images.nbytes
    np.testing.assert_array_equal(view[17:90], images[17:90])
    rows = np.array([0, 3, 15, 16, 17, 200, 299])
    np.testing.assert_array_equal(view.take(rows), images[rows])
    np.testing.assert_array_equal(np.concatenate([block for _, block in view.blocks(50)]), images)
    np.testing.assert_array_equal(evenly_spaced(view, 100), images[::3])
    assert value_range(view, "p") == (float(images.min()), float(images.max()))
    with pytest.raises(TypeError):
        view[::2]


def test_patch_mean_of_a_streamed_file_is_the_arrays(tmp_path):
    """The decoder's mean offset starts from the patches' mean, read by slices from a
    PatchFile (300 rows in chunks of 16: the last slice is short)."""
    from microvae.training_data import patch_mean

    images, path = patch_file(tmp_path)
    np.testing.assert_allclose(patch_mean(PatchFile(path)), images.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert patch_mean(images).shape == (1, 10, 10)


def test_shuffled_batches_visit_every_row_once_in_mixed_deterministic_order(tmp_path):
    images, path = patch_file(tmp_path)
    view = PatchFile(path)
    rows = np.sort(np.random.default_rng(1).choice(300, 250, replace=False))

    def epoch(seed):
        return list(shuffled_batches(view, rows, 20, torch.Generator().manual_seed(seed), buffer_rows=64))

    batches = epoch(0)
    seen = np.concatenate([r for r, _ in batches])
    assert sorted(seen.tolist()) == rows.tolist()  # each row exactly once
    assert [len(r) for r, _ in batches] == [20] * 12 + [10]  # full batches but the last
    for batch_rows, patches in batches:
        np.testing.assert_array_equal(patches, images[batch_rows])  # data follow their rows
    assert all(len(np.unique(r // 16)) >= 3 for r, _ in batches[:-1])  # every batch mixes chunks
    again = epoch(0)
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(batches, again))
    other = epoch(1)
    assert not np.array_equal(np.concatenate([r for r, _ in other]), seen)
    # the chunk visiting order is random: the first batch is not confined to the file's start
    starts = [int(np.median(epoch(seed)[0][0])) for seed in range(5)]
    assert max(starts) - min(starts) > 50


def tiny(**changes):
    model = JTRVAEConfig(image_size=10, n_classes=2, encoder_hidden=(16,), decoder_hidden=(16, 16))
    train = TrainConfig(**(dict(epochs=3, batch_size=16, seed=3, checkpoint_every=1, device="cpu", val_fraction=0.2, pixel_fraction=0.5) | changes))
    return model, train


def test_streamed_training_trains_and_resumes_bit_identically(tmp_path):
    """Streamed and resident training both learn the cards: on the validation patches, which no
    step saw, they reconstruct better than the mean training image does (a bar that the β
    schedule's falling loss does not reach by itself: after 3 epochs, or with the widths 16 of
    `tiny`, the model still draws the mean intensity everywhere); the untrained model is the
    control. Measured (seeds 3, 0, 1): MSE 0.017–0.022 against 0.033–0.036 for the mean image and
    0.21–0.24 untrained. An interrupted streamed run resumes bit-identically."""
    from microvae.encoding import encode_array
    from microvae.training import build_model, split_rows

    images, path = cards_file(tmp_path, count=300)
    model = JTRVAEConfig(image_size=10, n_classes=2, encoder_hidden=(32,), decoder_hidden=(32, 32))
    train = tiny(epochs=10, lr=5e-3)[1]
    streamed = fit(PatchFile(path), model, train, tmp_path / "streamed")
    assert np.isfinite([row["loss"] for row in streamed.history]).all()
    assert sum(streamed.history[-1][f"n_class_{k}"] for k in range(2)) == 60  # the validation rows
    resident = fit(images, model, train, tmp_path / "resident")
    train_rows, val_rows = split_rows(len(images), train.val_fraction, train.seed)
    mean_image = float(((images[val_rows] - images[train_rows].mean(0)) ** 2).mean())

    def held_out_mse(trained):
        return float(encode_array(trained, images[val_rows], device="cpu")["recon_error"].mean())

    errors = {
        "streamed": held_out_mse(streamed.model),
        "resident": held_out_mse(resident.model),
        "untrained": held_out_mse(build_model(model, train.seed)),
        "mean image": mean_image,
    }
    assert errors["streamed"] < 0.75 * mean_image and errors["resident"] < 0.75 * mean_image, errors
    assert errors["untrained"] > mean_image, errors

    class Stop(Exception):
        pass

    def crash(event):
        if event["event"] == "batch" and event["epoch"] == 9 and event["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        fit(PatchFile(path), model, train, tmp_path / "again", progress=crash)
    resumed = fit(PatchFile(path), model, train, tmp_path / "again")
    assert resumed.resumed_from_epoch == 8
    for name, value in streamed.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_streamed_file_with_nan_is_refused_naming_it(tmp_path):
    from microvae.errors import InputError

    images, path = patch_file(tmp_path)
    with h5py.File(path, "r+") as handle:
        handle["patches"][123, 0, 2, 2] = np.nan
    with pytest.raises(InputError, match="patches.h5.*NaN.*patch 123"):
        value_range(PatchFile(path), str(path))


def test_train_and_encode_stream_above_the_memory_limit(tmp_path, lattice_tif):
    """The stages with memory_limit=0 (everything streamed) give the encoding of the resident run."""
    from microvae.config import ExtractConfig
    from microvae.patches import PatchParams
    from microvae.stages import run_encode, run_extract, run_train
    from microvae.training import configs_from_settings

    path, _ = lattice_tif
    patches = tmp_path / "p.h5"
    run_extract([str(path)], patches, ExtractConfig(PatchParams(window=12, grid_step=6)))
    settings = dict(classes=2, latent_dim=1, epochs=2, hidden=16, batch_size=32, device="cpu", translation=False)
    results = {}
    for name, limit in (("resident", 1 << 40), ("streamed", 0)):
        model_config, train_config = configs_from_settings(settings)
        trained = run_train(patches, tmp_path / name, model_config, train_config, memory_limit=limit)
        assert ("streamed from disk" in " ".join(trained.notes)) == (name == "streamed")
        run_encode(tmp_path / name, patches, tmp_path / f"{name}.h5", EncodeConfig(device="cpu", memory_limit_bytes=limit))
        with h5py.File(tmp_path / f"{name}.h5") as handle:
            results[name] = {key: handle[key][()] for key in ("class_probs", "z_mean", "neg_elbo")}
    # training differs (chunk-order shuffling), so encode the streamed run both ways instead
    run_encode(tmp_path / "streamed", patches, tmp_path / "streamed_resident.h5", EncodeConfig(device="cpu", memory_limit_bytes=1 << 40))
    with h5py.File(tmp_path / "streamed_resident.h5") as handle:
        for key, value in results["streamed"].items():
            np.testing.assert_array_equal(handle[key][()], value)


def torchrun(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout, env=env)


# The DDP runs below draw no noise (:func:`noiseless_draws`: every reparametrised draw is the
# posterior mean) and score every pixel, so a training step is a deterministic function of the
# weights and the batch; and the loss is a mean over the batch once the class-balance term (a function
# of the batch's mean class posterior, which each rank computes on its half) is off. Then the average
# of two half-batches' gradients is the gradient of the global batch, and DDP must reproduce one
# process trained on the global batches.
def noiseless_draws(self, x, generator):
    """Stands in for ``JTRVAE.standard_normal_draws``: zeros, i.e. z, v, s at their posterior means."""
    zeros = lambda width: torch.zeros(x.shape[0], width, device=x.device)  # noqa: E731
    return {"z": zeros(self.config.latent_dim), "angle_vec": zeros(2), "shift": zeros(2)}


def exact_settings(per_rank_batch):
    """Settings under which a DDP step equals a one-process step on the global batch (see above)."""
    model = JTRVAEConfig(image_size=10, n_classes=2, latent_dim=2, encoder_hidden=(16,), decoder_hidden=(16, 16), class_balance=0.0)
    train = TrainConfig(epochs=3, batch_size=per_rank_batch, seed=3, checkpoint_every=3, device="cpu", val_fraction=0.2, pixel_fraction=1.0)
    return model, train


DDP_DRIVER = """
import os, sys
sys.path.insert(0, sys.argv[3])                    # the repository, for tests.test_streaming
import torch
torch.set_num_threads(1)
from microvae import training
from microvae.models import JTRVAE
from microvae.streaming import PatchFile
from tests.test_streaming import exact_settings, noiseless_draws

JTRVAE.standard_normal_draws = noiseless_draws
path, out, rank = sys.argv[1], sys.argv[2], os.environ["RANK"]
model, train = exact_settings(16)
stream = PatchFile(path)
images = stream[0:len(stream)]
for name, data in (("resident", images), ("streamed", stream)):
    trained = training.fit(data, model, train, os.path.join(out, name)).model     # this rank's own weights
    torch.save(trained.state_dict(), os.path.join(out, f"{name}_rank{rank}.pt"))
training.World.wrap = lambda self, module: module          # the control: no gradient averaging
trained = training.fit(images, model, train, os.path.join(out, "alone")).model
torch.save(trained.state_dict(), os.path.join(out, f"alone_rank{rank}.pt"))
"""


def test_distributed_training_equals_one_process_on_the_same_global_batches(tmp_path, monkeypatch):
    """Each rank's in-memory weights after 3 epochs of DDP over two CPU processes (gloo, batches of
    16 per rank) equal those of one process trained with batches of 32 — the same global batches,
    each rank taking every 2nd image of each — resident and streamed. The control trains the same
    two ranks without DDP's gradient averaging (each learns from its half alone): its weights are
    far from the one-process run's and differ between the ranks. Measured: max |Δw| 9e-6 (resident)
    and 9e-7 (streamed) with DDP, 0.018 without averaging (0.026 between the ranks), on weights that
    training moved by up to 0.031. (Adam divides out the gradient's scale, so averaging and summing
    over the ranks would train alike: this checks that the gradient's direction is the global
    batch's.)"""
    from dataclasses import replace

    from microvae.models import JTRVAE
    from microvae.training import build_model

    images, path = cards_file(tmp_path)  # 160 training images: 5 global batches of 32
    driver = tmp_path / "driver.py"
    driver.write_text(DDP_DRIVER)
    done = torchrun(str(driver), str(path), str(tmp_path), str(REPO))
    assert done.returncode == 0, done.stderr[-3000:]

    monkeypatch.setattr(JTRVAE, "standard_normal_draws", noiseless_draws)
    model, train = exact_settings(16)
    start = build_model(model, train.seed).state_dict()
    single = {
        name: fit(data, model, replace(train, batch_size=32), tmp_path / f"single_{name}").model.state_dict()
        for name, data in (("resident", images), ("streamed", PatchFile(path)))
    }

    def largest_difference(a, b):
        return max(float((a[key] - b[key]).abs().max()) for key in a)

    moved = largest_difference(single["resident"], start)  # how far training moved the weights
    figures = {"moved": moved}
    for name in ("resident", "streamed"):
        for rank in (0, 1):
            figures[f"{name} rank {rank}"] = largest_difference(torch.load(tmp_path / f"{name}_rank{rank}.pt"), single[name])
    alone = [torch.load(tmp_path / f"alone_rank{rank}.pt") for rank in (0, 1)]
    figures.update({f"alone rank {rank}": largest_difference(alone[rank], single["resident"]) for rank in (0, 1)})
    figures["alone rank 0 vs 1"] = largest_difference(alone[0], alone[1])
    for name in ("resident", "streamed"):
        for rank in (0, 1):
            assert figures[f"{name} rank {rank}"] < 1e-2 * moved, figures
    assert min(figures["alone rank 0"], figures["alone rank 1"], figures["alone rank 0 vs 1"]) > 0.1 * moved, figures


def test_distributed_training_with_two_cpu_processes(tmp_path, lattice_tif):
    """`torchrun --nproc_per_node 2` through the train stage (gloo): it says it trains with DDP,
    rank 0 alone writes the run folder, and a rerun with more epochs resumes. (That DDP trains as
    one process on the global batches, resident and streamed, is tested above on each rank's own
    weights; the streamed train stage in one process, in test_train_and_encode_stream_above_the_memory_limit.)"""
    memory_limit = 1 << 40
    from microvae.config import ExtractConfig
    from microvae.patches import PatchParams
    from microvae.run_folder import load_checkpoint
    from microvae.stages import run_extract

    path, _ = lattice_tif
    patches = tmp_path / "p.h5"
    run_extract([str(path)], patches, ExtractConfig(PatchParams(window=12, grid_step=6)))
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent("""
        import os, sys, torch
        torch.set_num_threads(1)
        from microvae.stages import run_train
        from microvae.training import configs_from_settings
        model, train = configs_from_settings(dict(classes=2, latent_dim=1, epochs=int(sys.argv[3]), hidden=16, batch_size=16,
                                                  device="cpu", translation=False, seed=4, checkpoint_every=1))
        result = run_train(sys.argv[1], sys.argv[2], model, train, memory_limit=int(sys.argv[4]))
        print("rank", os.environ["RANK"], result.status, " ".join(result.notes))
    """)
    )
    run = tmp_path / "run"
    done = torchrun(str(driver), str(patches), str(run), "2", str(memory_limit))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes" in done.stdout
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["checkpoints", "config.json", "log.csv", "loss.png", "init", "provenance.json", "training_stats.json", "class_templates.npz", "summary.json"]
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["final.pt", "last.pt"]
    more = torchrun(str(driver), str(patches), str(run), "3", str(memory_limit))
    assert more.returncode == 0, more.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints" / "final.pt")["epoch"] == 3
    assert len((run / "log.csv").read_text().strip().splitlines()) == 1 + 3
