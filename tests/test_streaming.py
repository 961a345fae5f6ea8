"""Patches larger than memory: the lazy PatchFile, shuffled chunk-order batches, streamed training
and encoding (equal to the resident results), and DistributedDataParallel over two CPU processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from microvae.models import JTRVAEConfig
from microvae.streaming import PatchFile, evenly_spaced, shuffled_batches, value_range
from microvae.training import TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def patch_file(tmp_path, n=300, size=10, chunk=16, seed=0):
    images = np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)
    path = tmp_path / "patches.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("patches", data=images, chunks=(chunk, 1, size, size))
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


def test_shuffled_batches_visit_every_row_once_in_mixed_deterministic_order(tmp_path):
    images, path = patch_file(tmp_path)
    view = PatchFile(path)
    rows = np.sort(np.random.default_rng(1).choice(300, 250, replace=False))

    def epoch(seed):
        return list(shuffled_batches(view, rows, 20, torch.Generator().manual_seed(seed), buffer_rows=64))

    batches = epoch(0)
    seen = np.concatenate([r for r, _ in batches])
    assert sorted(seen.tolist()) == rows.tolist()                     # each row exactly once
    assert [len(r) for r, _ in batches] == [20] * 12 + [10]            # full batches but the last
    for batch_rows, patches in batches:
        np.testing.assert_array_equal(patches, images[batch_rows])     # data follow their rows
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
    train = TrainConfig(**(dict(epochs=3, batch_size=16, seed=3, checkpoint_every=1, device="cpu", val_fraction=0.2,
                                pixel_fraction=0.5) | changes))
    return model, train


def test_streamed_training_trains_and_resumes_bit_identically(tmp_path):
    images, path = patch_file(tmp_path)
    model, train = tiny()
    streamed = fit(PatchFile(path), model, train, tmp_path / "streamed")
    assert np.isfinite([row["loss"] for row in streamed.history]).all()
    assert streamed.history[-1]["loss"] < streamed.history[0]["loss"]
    assert sum(streamed.history[-1][f"n_class_{k}"] for k in range(2)) == 60       # the validation rows
    resident = fit(images, model, train, tmp_path / "resident")
    assert abs(streamed.history[-1]["loss"] - resident.history[-1]["loss"]) < 0.1 * abs(resident.history[0]["loss"])

    class Stop(Exception):
        pass

    def crash(event):
        if event["event"] == "batch" and event["epoch"] == 2 and event["step"] == 3:
            raise Stop

    with pytest.raises(Stop):
        fit(PatchFile(path), model, train, tmp_path / "again", progress=crash)
    resumed = fit(PatchFile(path), model, train, tmp_path / "again")
    assert resumed.resumed_from_epoch == 1
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
    from microvae.patches import PatchParams
    from microvae.stages import run_encode, run_extract, run_train
    from microvae.training import configs_from_settings

    path, _ = lattice_tif
    patches = tmp_path / "p.h5"
    run_extract([str(path)], patches, PatchParams(window=12, grid_step=6))
    settings = dict(classes=2, latent_dim=1, epochs=2, hidden=16, batch_size=32, device="cpu", translation=False)
    results = {}
    for name, limit in (("resident", 1 << 40), ("streamed", 0)):
        model_config, train_config = configs_from_settings(settings)
        trained = run_train(patches, tmp_path / name, model_config, train_config, memory_limit=limit)
        assert ("streamed from disk" in " ".join(trained.notes)) == (name == "streamed")
        run_encode(tmp_path / name, patches, tmp_path / f"{name}.h5", device="cpu", memory_limit=limit)
        with h5py.File(tmp_path / f"{name}.h5") as handle:
            results[name] = {key: handle[key][()] for key in ("class_probs", "z_mean", "neg_elbo")}
    # training differs (chunk-order shuffling), so encode the streamed run both ways instead
    run_encode(tmp_path / "streamed", patches, tmp_path / "streamed_resident.h5", device="cpu", memory_limit=1 << 40)
    with h5py.File(tmp_path / "streamed_resident.h5") as handle:
        for key, value in results["streamed"].items():
            np.testing.assert_array_equal(handle[key][()], value)


def torchrun(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000)]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("memory_limit", [1 << 40, 0], ids=["resident", "streamed"])
def test_distributed_training_with_two_cpu_processes(tmp_path, lattice_tif, memory_limit):
    """`torchrun --nproc_per_node 2 microvae train` (gloo): both ranks end with the same weights
    (gradients are averaged; their data shards and noise differ), rank 0 alone writes the run
    folder, and a rerun with more epochs resumes."""
    from microvae.patches import PatchParams
    from microvae.stages import run_extract
    from microvae.training import load_checkpoint

    path, _ = lattice_tif
    patches = tmp_path / "p.h5"
    run_extract([str(path)], patches, PatchParams(window=12, grid_step=6))
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent("""
        import os, sys, torch
        torch.set_num_threads(1)
        from microvae.stages import run_train
        from microvae.training import configs_from_settings, load_run
        model, train = configs_from_settings(dict(classes=2, latent_dim=1, epochs=int(sys.argv[3]), hidden=16, batch_size=16,
                                                  device="cpu", translation=False, seed=4, checkpoint_every=1))
        result = run_train(sys.argv[1], sys.argv[2], model, train, memory_limit=int(sys.argv[4]))
        weights = load_run(sys.argv[2])[0].state_dict()
        torch.save(weights, os.path.join(sys.argv[2], "..", "rank%s.pt" % os.environ["RANK"]))
        print("rank", os.environ["RANK"], result.status, " ".join(result.notes))
    """))
    run = tmp_path / "run"
    done = torchrun(str(driver), str(patches), str(run), "2", str(memory_limit))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes" in done.stdout
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name
    streamed = memory_limit == 0         # the default class initialisation needs the patches in memory
    assert sorted(p.name for p in run.iterdir()) == sorted(["checkpoints", "config.json", "log.csv", "loss.png",
                                                           "provenance.json", "training_stats.json", "summary.json"]
                                                          + ([] if streamed else ["init"]))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["final.pt", "last.pt"]
    if memory_limit == 0:
        return                                   # resuming is the same code for both; test it once
    more = torchrun(str(driver), str(patches), str(run), "3", str(memory_limit))
    assert more.returncode == 0, more.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints" / "final.pt")["epoch"] == 3
    assert len((run / "log.csv").read_text().strip().splitlines()) == 1 + 3
