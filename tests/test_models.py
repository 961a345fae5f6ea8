"""The j-trVAE: coordinate conventions, the factored decoder, the exact enumerated ELBO (checked
against Pyro's TraceEnum_ELBO), the KL schedule, and the cards: ≥ 0.95 matched accuracy at ±60°."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from microvae.cards import make_cards
from microvae.encoding import encode_array
from microvae.metrics import adjusted_rand_index, circular_correlation, matched_accuracy
from microvae.models import JTRVAE, JTRVAEConfig, beta_schedule, class_imbalance, pyro_guide, pyro_model
from microvae.nets import SpatialMLPDecoder, coordinate_grid, transform_coordinates
from microvae.training import TrainConfig, build_model, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_config(**changes) -> JTRVAEConfig:
    return JTRVAEConfig(**(dict(image_size=9, latent_dim=2, encoder_hidden=(16,), decoder_hidden=(16, 16)) | changes))


# --- coordinates and decoders ----------------------------------------------------------------


def test_coordinate_grid_is_row_col_in_minus_one_to_one_row_major():
    grid = coordinate_grid(3, 5)
    assert grid.shape == (15, 2)
    torch.testing.assert_close(grid[0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(grid[1], torch.tensor([-1.0, -0.5]))  # next column
    torch.testing.assert_close(grid[5], torch.tensor([0.0, -1.0]))  # next row
    torch.testing.assert_close(grid[-1], torch.tensor([1.0, 1.0]))


def test_plus_90_degrees_turns_the_rendered_image_counter_clockwise():
    """Exact for the spatial MLP decoder (a function of each pixel's coordinates alone); the conv
    decoder's kernels are not rotation symmetric, so it can only learn the rotation approximately."""
    torch.manual_seed(0)
    size = 9
    decoder = SpatialMLPDecoder(2, 0, hidden=(32, 32), latent_skips=True, coordinate_gain=3.0)
    z = torch.randn(1, 2)
    grid = coordinate_grid(size)
    upright = decoder(transform_coordinates(grid, torch.zeros(1)), z)[0, 0, :, 0].view(size, size)
    turned = decoder(transform_coordinates(grid, torch.tensor([math.pi / 2])), z)[0, 0, :, 0].view(size, size)
    # torch.rot90(k=1) over (row, col) turns an image counter-clockwise as displayed (rows down)
    torch.testing.assert_close(turned, torch.rot90(upright, 1), atol=1e-5, rtol=0)
    assert not torch.allclose(turned, upright, atol=1e-3)


def test_positive_row_shift_moves_the_content_down():
    torch.manual_seed(1)
    model = JTRVAE(small_config(n_classes=0, latent_dim=1))
    z = torch.randn(1, 1)
    still = model.decode(z)[0, 0]
    moved = model.decode(z, shift=torch.tensor([[2.0, 0.0]]))[0, 0]  # pixels (row, col)
    torch.testing.assert_close(moved[2:], still[:-2], atol=1e-5, rtol=0)


def test_factored_first_layer_equals_the_concatenated_decoder():
    """Class-independent part once + a per-class bias row == concatenating [coords, z, onehot(y)]."""
    torch.manual_seed(2)
    k, d = 3, 2
    decoder = SpatialMLPDecoder(d, k, hidden=(8, 8), latent_skips=False)
    coords, z = torch.randn(4, 5, 2), torch.randn(4, d)
    first = torch.nn.Linear(2 + d + k, 8)
    with torch.no_grad():
        first.weight.copy_(torch.cat([decoder.from_coords.weight, decoder.from_latents.from_z, decoder.from_latents.class_bias.t()], dim=1))
        first.bias.copy_(decoder.from_latents.bias)
    expected = []
    for y in range(k):
        onehot = torch.nn.functional.one_hot(torch.full((4, 5), y), k).float()
        h = torch.tanh(first(torch.cat([coords, z[:, None].expand(-1, 5, -1), onehot], dim=-1)))
        expected.append(decoder.out(torch.tanh(decoder.hidden[0](h))))
    torch.testing.assert_close(decoder(coords, z), torch.stack(expected, dim=1), atol=1e-5, rtol=0)
    # one class at a time (decode) equals the matching slice of the all-class output
    onehot = torch.eye(k)[[2, 0, 1, 2]]
    torch.testing.assert_close(decoder(coords, z, onehot)[:, 0], decoder(coords, z)[torch.arange(4), [2, 0, 1, 2]])


def test_canonical_view_undoes_the_decoders_pose():
    torch.manual_seed(3)
    model = JTRVAE(small_config(image_size=15, n_classes=0, latent_dim=1))
    z = torch.randn(1, 1)
    upright = model.decode(z)
    angle, shift_px = torch.tensor([0.6]), torch.tensor([[1.0, -1.5]])
    posed = model.decode(z, angle_rad=angle, shift=shift_px)
    back = model.canonical_view(posed, angle, shift_px / model.half_width_px)
    inner = (slice(None), slice(None), slice(4, 11), slice(4, 11))  # away from the corners
    torch.testing.assert_close(back[inner], upright[inner], atol=0.03, rtol=0)


# --- the objective ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        dict(n_classes=4),  # j-trVAE
        dict(n_classes=0),  # rtVAE
        dict(n_classes=3, rotation=False),  # j-tVAE
        dict(n_classes=3, translation=False, decoder="conv"),  # j-rVAE, conv decoder
        dict(n_classes=0, rotation=False, translation=False, likelihood="gaussian"),  # plain VAE
    ],
)
def test_loss_terms_shapes_and_sub_cases(settings):
    torch.manual_seed(4)
    model = JTRVAE(small_config(**settings))
    x = torch.rand(5, 1, 9, 9)
    terms = model.loss_terms(x, torch.Generator().manual_seed(0))
    for name in ("recon", "kl_z", "kl_angle", "kl_shift", "kl_tau", "kl_y"):
        assert terms[name].shape == (5,) and torch.isfinite(terms[name]).all(), name
        assert (terms[name] >= -1e-5).all() or name == "recon" and settings.get("likelihood") == "gaussian"
    assert terms["class_probs"].shape == (5, max(settings["n_classes"], 1))
    if settings["n_classes"] == 0:
        assert torch.all(terms["kl_y"] == 0)
    if not settings.get("rotation", True):
        assert torch.all(terms["kl_angle"] == 0)
    if not settings.get("translation", True):
        assert torch.all(terms["kl_shift"] == 0)
    encoded = model.encode(x)
    assert encoded["angle_rad"].shape == (5,) and encoded["shift"].shape == (5, 2)


def test_recon_is_the_class_posterior_weighted_sum_of_per_class_reconstructions():
    torch.manual_seed(5)
    model = JTRVAE(small_config(n_classes=3))
    x = torch.rand(4, 1, 9, 9)
    noise = {"z": torch.randn(4, 2), "angle_vec": torch.randn(4, 2), "shift": torch.randn(4, 2)}
    terms = model.loss_terms(x, noise=noise)
    post = model.posterior(x)
    z = post["z_mean"] + post["z_sd"] * noise["z"]
    v = post["angle_vec_mean"] + post["angle_vec_sd"] * noise["angle_vec"]
    s = post["shift_mean"] + post["shift_sd"] * noise["shift"]
    per_class = []
    for y in range(3):
        mean = model.decode(z, torch.eye(3)[[y] * 4], torch.atan2(v[:, 1], v[:, 0]), s * model.half_width_px)
        per_class.append(torch.nn.functional.binary_cross_entropy(mean, x, reduction="none").flatten(1).sum(1))
    expected = (torch.softmax(post["class_logits"], 1) * torch.stack(per_class, 1)).sum(1)
    torch.testing.assert_close(terms["recon"], expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("betas", [None, {"beta_z": 1.0, "beta_tau": 3.0, "beta_y": 7.0}])
@pytest.mark.parametrize(
    "settings",
    [
        dict(n_classes=4),
        dict(n_classes=2, translation=False, likelihood="gaussian"),
        dict(n_classes=0),
        dict(n_classes=2, decoder="conv"),
        dict(n_classes=3, encoder="equivariant"),
    ],
)
def test_enumerated_elbo_matches_pyro_traceenum(settings, betas):
    """Our one-pass Σ_y q(y|x)·ELBO(x, y) equals TraceEnum_ELBO with 'y' enumerated in parallel,
    on the same model, batch and continuous draws (the guide's draws are replayed into ours)."""
    torch.manual_seed(6)
    model = JTRVAE(small_config(**settings))
    x = torch.rand(6, 1, 9, 9)
    pyro.clear_param_store()
    pyro.set_rng_seed(11)
    guide_trace = poutine.trace(pyro_guide).get_trace(model, x, betas)
    post = model.posterior(x)
    noise = {"z": (guide_trace.nodes["z"]["value"] - post["z_mean"]) / post["z_sd"], "angle_vec": torch.zeros(6, 2), "shift": torch.zeros(6, 2)}
    if model.config.rotation:
        noise["angle_vec"] = (guide_trace.nodes["angle_vec"]["value"] - post["angle_vec_mean"]) / post["angle_vec_sd"]
    if model.config.translation:
        noise["shift"] = (guide_trace.nodes["shift"]["value"] - post["shift_mean"]) / post["shift_sd"]
    if "y" in guide_trace.nodes:
        guide_trace.remove_node("y")  # y is enumerated, not replayed
    replayed_guide = poutine.replay(pyro_guide, trace=guide_trace)
    theirs = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(pyro_model, replayed_guide, model, x, betas)

    terms = model.loss_terms(x, noise=noise, kl_estimator="sample")
    weights = betas or {"beta_z": 1.0, "beta_tau": 1.0, "beta_y": 1.0}
    ours = model.weighted_loss(terms, weights) * x.shape[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-3)
    # and so are the gradients with respect to every weight that either objective uses
    parameters = [p for p in model.parameters()]
    mine = torch.autograd.grad(ours, parameters, allow_unused=True, retain_graph=True)
    reference = torch.autograd.grad(theirs, parameters, allow_unused=True)
    for a, b in zip(mine, reference):
        a = torch.zeros_like(b) if a is None and b is not None else a
        b = torch.zeros_like(a) if b is None and a is not None else b
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_analytic_kl_is_the_mean_of_the_sampled_estimate():
    torch.manual_seed(7)
    model = JTRVAE(small_config(n_classes=0, angle_prior_concentration=1.5, shift_prior_sd=0.3))
    x = torch.rand(2, 1, 9, 9).repeat(4000, 1, 1, 1)
    with torch.no_grad():
        analytic = model.loss_terms(x[:2], torch.Generator().manual_seed(0))
        sampled = model.loss_terms(x, torch.Generator().manual_seed(1), kl_estimator="sample")
    for name in ("kl_z", "kl_angle", "kl_shift"):
        estimate = sampled[name].view(4000, 2).mean(0)
        error = sampled[name].view(4000, 2).std(0) / math.sqrt(4000)
        assert torch.all((estimate - analytic[name]).abs() < 5 * error + 1e-3), name


def test_beta_schedule_windows():
    config = JTRVAEConfig()  # the defaults: y 30 → 1 over 0–10 %, z 3 → 1 over 10–30 %
    at = {e: beta_schedule(e, 100, config) for e in (0, 5, 10, 20, 30, 60)}
    assert (at[0]["beta_z"], at[0]["beta_tau"], at[0]["beta_y"]) == (3.0, 1.0, 30.0)
    assert at[5]["beta_y"] == pytest.approx(15.5)
    assert (at[10]["beta_z"], at[10]["beta_y"]) == (3.0, 1.0)  # continuous weighted 3× the discrete
    assert at[20]["beta_z"] == pytest.approx(2.0)
    for epoch in (30, 60):  # the plain ELBO from then on
        assert (at[epoch]["beta_z"], at[epoch]["beta_tau"], at[epoch]["beta_y"]) == (1.0, 1.0, 1.0)
    assert at[60]["class_balance"] == config.class_balance
    paper = JTRVAEConfig(beta_tau_start=10, beta_y_start=3, beta_z_start=None, beta_y_window=None, anneal_fraction=0.2, class_balance=0.0)
    assert beta_schedule(10, 100, paper) == {
        "beta_z": 1.0,
        "beta_tau": 5.5,
        "beta_y": 2.0,
        "class_balance": 0.0,
        "label_weight": paper.label_weight,
        "class_balance_unbiased": 0.0,
        "z_active": 1.0,
    }


def test_class_balance_penalises_unequal_class_usage_only():
    terms = {name: torch.zeros(4) for name in ("recon", "kl_tau", "kl_z", "kl_y")}
    betas = {"beta_z": 1.0, "beta_tau": 1.0, "beta_y": 1.0, "class_balance": 2.0}
    collapsed = torch.eye(4)[[0, 0, 0, 0]]
    uniform = torch.full((4, 4), 0.25)
    uniform_confident = torch.eye(4)[[0, 1, 2, 3]]  # every class used once
    assert JTRVAE.weighted_loss(terms | {"class_probs": uniform_confident}, betas) == pytest.approx(0.0, abs=1e-6)
    assert JTRVAE.weighted_loss(terms | {"class_probs": collapsed}, betas) == pytest.approx(2.0 * math.log(4))
    unbiased = betas | {"class_balance_unbiased": 1.0}
    assert JTRVAE.weighted_loss(terms | {"class_probs": collapsed}, unbiased) == pytest.approx(2.0 * 2 * (0.75**2 + 3 * 0.25**2))
    assert JTRVAE.weighted_loss(terms | {"class_probs": uniform}, unbiased) == pytest.approx(0.0, abs=1e-7)


def test_z_delay_switches_the_continuous_latents_off_early():
    config = JTRVAEConfig(image_size=8, n_classes=2, latent_dim=2, z_delay=0.3)
    assert [beta_schedule(e, 10, config)["z_active"] for e in (0, 2, 3, 9)] == [0.0, 0.0, 1.0, 1.0]
    model = build_model(config, seed=0)
    x = torch.rand(4, 1, 8, 8)
    noise = {"z": torch.randn(4, 2), "angle_vec": torch.randn(4, 2), "shift": torch.randn(4, 2)}
    post = model.posterior(x)
    moved = post | {"z_mean": post["z_mean"] + 5.0}
    off = [model.loss_terms(x, noise=noise, posterior=p, use_z=False) for p in (post, moved)]
    on = [model.loss_terms(x, noise=noise, posterior=p) for p in (post, moved)]
    assert torch.equal(off[0]["recon"], off[1]["recon"]) and float(off[0]["kl_z"].abs().max()) == 0.0
    assert not torch.allclose(on[0]["recon"], on[1]["recon"])


def test_class_imbalance_is_unbiased_and_does_not_favour_uniform_posteriors():
    """Confident posteriors from equally used classes cost nothing on average over random batches
    (the batch KL charged them for chance imbalance), and a skewed usage is estimated without bias."""
    generator = torch.Generator().manual_seed(0)

    def mean_over_batches(usage: torch.Tensor) -> float:
        classes = torch.multinomial(usage, 32 * 4000, replacement=True, generator=generator).view(4000, 32)
        return float(torch.stack([class_imbalance(torch.eye(len(usage))[c]) for c in classes]).mean())

    assert abs(mean_over_batches(torch.tensor([0.5, 0.5]))) < 2e-3
    skewed = torch.tensor([0.7, 0.3])
    assert mean_over_batches(skewed) == pytest.approx(0.5 * 2 * float(((skewed - 0.5) ** 2).sum()), rel=0.05)
    confident_batch = torch.eye(2)[torch.arange(32) % 2]  # 16 of each: a lucky batch
    assert class_imbalance(confident_batch) < 0  # below its mean of 0 by chance


# --- the cards ----------------------------------------------------------------------------------

CARDS = dict(n=3000, size=28, max_angle_deg=60.0, seed=1)
EPOCHS = 45


@pytest.fixture(scope="module")
def cards():
    return make_cards(**CARDS)


def test_untrained_or_collapsed_models_fail_the_metric(cards):
    """Negative controls: the bars below are far above what learning nothing scores."""
    for seed in (0, 1, 2):
        untrained = build_model(JTRVAEConfig(), seed=seed)
        encoded = encode_array(untrained, cards.images, device="cpu")
        assert matched_accuracy(cards.labels, encoded["class"]) < 0.45
        correlations = _suit_angle_correlations(cards, encoded)
        assert correlations[3] < 0.85 and correlations[1] < 0.7, correlations  # measured: at most 0.38
    assert matched_accuracy(cards.labels, np.zeros_like(cards.labels)) == pytest.approx(0.25)  # one class
    shuffled = np.random.default_rng(0).permutation(cards.labels)
    assert matched_accuracy(cards.labels, shuffled) < 0.3 and abs(adjusted_rand_index(cards.labels, shuffled)) < 0.01


def _suit_angle_correlations(cards, encoded) -> list[float]:
    """Circular correlation of the learned angle with the true one, per suit, ascending."""
    return sorted(circular_correlation(cards.angle_rad[cards.labels == suit], encoded["angle_rad"][cards.labels == suit]) for suit in range(4))


@pytest.mark.long
def test_jtrvae_separates_the_card_suits_at_60_degrees(cards, tmp_path):
    """The model's default settings trained by :func:`fit` alone, with the classes starting from
    random weights (no class initialisation: ``microvae train``'s default starts them from the
    classical partitions of :mod:`microvae.discovery`, which ``tests/test_zoo_discovery.py``
    covers), 3000 cards of 28×28, 45 epochs, training seed 0: matched accuracy of argmax q(y|x)
    ≥ 0.9, ARI ≥ 0.8, and the learned angle turns with the true one within three suits.

    One seed, as a regression test of the paper's objective from a random start; its spread over
    seeds is a benchmark's figure (``python benchmarks/bench_cards_quality.py --angles 60``). This
    test ran seeds 0–2 until 2026-11-30 and then took 322 s of the suite's ~1100 s on CI's 2 cores.
    Measured with this recipe on the CPU (one thread, 2026-11-30), seeds 0–4: accuracy 0.977,
    0.716, 0.970, 0.929, 0.949 (ARI 0.939, 0.533, 0.922, 0.828, 0.874): a bad seed (1) merges two
    suits early and does not recover within 45 epochs. Seed 0 with torch's default threads (two
    on CI, which changes the arithmetic): accuracy 0.943, angle correlations of the best three
    suits 0.92 / 0.86 / 0.86; the hearts' class tends to learn its canonical heart turned by about
    50° and, the heart being nearly three-fold symmetric (two lobes and a point), wraps the angle
    into ±60° (a sawtooth, correlation ≈ -0.5), so the fourth suit is not asserted. The untrained
    controls: accuracy < 0.45, angle correlations ≤ 0.38
    (``test_untrained_or_collapsed_models_fail_the_metric``). 2000 cards instead of 3000 fail the
    bar (accuracy 0.59–0.88 at seeds 0–4, two threads): the recipe needs the data.

    Marked ``long`` on 2026-12-02 (``python -m pytest -q -m long`` runs it): it took 112 s of the
    suite's 1351 s that day; the paper's objective from a random start stays in the default run
    through ``tests/test_semisupervised.py`` (its unsupervised arm) and the untrained controls."""
    train = TrainConfig(epochs=EPOCHS, seed=0, checkpoint_every=EPOCHS, device="cpu", val_fraction=0.0)
    result = fit(cards.images, JTRVAEConfig(), train, tmp_path / "run")
    encoded = encode_array(result.model, cards.images, device="cpu")
    accuracy = matched_accuracy(cards.labels, encoded["class"])
    ari = adjusted_rand_index(cards.labels, encoded["class"])
    correlations = _suit_angle_correlations(cards, encoded)
    assert accuracy >= 0.9 and ari >= 0.8, (accuracy, ari)
    assert correlations[3] > 0.85 and correlations[2] > 0.8 and correlations[1] > 0.7, correlations


def test_mean_offset_renders_the_mean_patch_in_the_patch_frame(tmp_path):
    """With ``mean_offset`` the decoder adds a per-pixel offset in the patch's own frame, started
    at the training patches' mean: a decoder whose network outputs 0 renders exactly that mean
    (Bernoulli: the offset is its logit), at any angle (the offset does not turn with the
    pose). ``fit`` starts it from the patches; a wrong-shaped mean and a model without the
    offset are refused."""
    from microvae.errors import ParameterError
    from microvae.training_data import patch_mean

    patches = np.random.default_rng(0).uniform(0.1, 0.9, (20, 1, 9, 9)).astype(np.float32)
    model = build_model(small_config(mean_offset=True), seed=0)
    model.start_mean_offset(patch_mean(patches))
    with torch.no_grad():
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.zero_()
        z, onehot = torch.zeros(2, model.config.latent_dim), torch.eye(model.config.n_classes)[:2]
        upright = model.decode(z, onehot, angle_rad=torch.zeros(2))
        turned = model.decode(z, onehot, angle_rad=torch.full((2,), 1.0))
    np.testing.assert_allclose(upright[0, 0].numpy(), patches.mean(0)[0], atol=1e-5)
    np.testing.assert_allclose(turned.numpy(), upright.numpy(), atol=1e-6)
    with pytest.raises(ParameterError, match=r"\(1, 9, 9\)"):
        model.start_mean_offset(np.zeros((1, 10, 10)))
    with pytest.raises(ParameterError, match="no mean offset"):
        build_model(small_config(), seed=0).start_mean_offset(patch_mean(patches))
    trained = fit(patches, small_config(mean_offset=True), TrainConfig(epochs=1, lr=1e-7, seed=0, device="cpu"), tmp_path / "run").model
    np.testing.assert_allclose(torch.sigmoid(trained.mean_offset[:, 0]).detach().numpy(), patches.mean(0).ravel(), atol=1e-4)


@pytest.mark.parametrize("decoder", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("channels", [1, 2])
def test_mean_offset_adds_the_mean_to_every_class_and_pixel(decoder, likelihood, channels):
    """For both decoders, both likelihoods and several channels the offset is added to every
    class's output at every pixel (and at a pixel subset): the logit of the mean patch for the
    Bernoulli likelihood, the mean itself for the Gaussian."""
    mean_patch = np.random.default_rng(1).uniform(0.2, 0.8, (channels, 9, 9))
    model = build_model(small_config(mean_offset=True, decoder=decoder, likelihood=likelihood, channels=channels), seed=0)
    z, angle = torch.randn(3, model.config.latent_dim), torch.tensor([0.0, 0.5, -1.0])
    with torch.no_grad():
        before = model.decoder_logits(z, angle, None)
        model.start_mean_offset(mean_patch)
        after = model.decoder_logits(z, angle, None)
    expected = mean_patch.reshape(channels, 81).T
    if likelihood == "bernoulli":
        expected = np.log(expected / (1 - expected))
    np.testing.assert_allclose((after - before).numpy(), np.broadcast_to(expected, after.shape), atol=1e-5)
    if decoder == "mlp":
        index = torch.tensor([0, 40, 80])
        with torch.no_grad():
            subset = model.decoder_logits(z, angle, None, pixel_index=index)
        np.testing.assert_allclose(subset.numpy(), after[:, :, index].numpy(), atol=1e-5)


def test_mean_offset_is_on_by_default_exactly_without_pose_latents():
    """The CLI's settings turn the offset on for centred, upright patches only (with pose
    latents it competes with them: benchmarks/README.md) whose classes start from a partition
    (not for the paper's procedure, ``class_init='none'``); an explicit setting wins, and a saved
    config from before the setting existed loads without it."""
    from microvae.config import configs_from_settings

    def offset(**settings) -> bool:
        return configs_from_settings({"classes": 2, **settings})[0].mean_offset

    assert offset(rotation=False, translation=False)
    assert not offset(rotation=True, translation=False)
    assert not offset(rotation=False, translation=True)
    assert not offset()  # the defaults turn and move
    assert not offset(rotation=False, translation=False, mean_offset=False)
    assert not offset(rotation=False, translation=False, class_init="none")
    assert offset(rotation=False, translation=False, class_init="restarts")
    saved = small_config().to_dict()
    saved.pop("mean_offset")
    assert JTRVAEConfig.from_dict(saved).mean_offset is False


def test_template_pose_is_on_by_default_exactly_where_objects_turn_from_a_partition():
    """The CLI's settings search each class's turn (``template_pose``) for models with rotation
    and K ≥ 2 classes that start from a partition, and whose encoder and decoder are the MLPs; an explicit setting wins,
    it is refused without rotation or with the convolutional decoder, and a saved config from
    before the setting existed loads without it."""
    from microvae.config import configs_from_settings
    from microvae.errors import ParameterError

    def pose(**settings) -> bool:
        return configs_from_settings({"classes": 2, **settings})[0].template_pose

    assert pose()  # the defaults turn
    assert pose(translation=False)
    assert not pose(rotation=False)
    assert not pose(class_init="none")
    assert not configs_from_settings({"classes": 0})[0].template_pose
    assert configs_from_settings({"classes": "auto"})[0].template_pose
    assert not pose(decoder="conv")
    assert not pose(encoder="equivariant")  # it reads its own angle
    assert not pose(template_pose=False)
    with pytest.raises(ParameterError, match="template_pose"):
        small_config(rotation=False, template_pose=True).validate()
    with pytest.raises(ParameterError, match="template_pose"):
        small_config(decoder="conv", template_pose=True).validate()
    saved = small_config().to_dict()
    saved.pop("template_pose")
    assert JTRVAEConfig.from_dict(saved).template_pose is False


def test_the_template_pose_searches_edges_by_default_and_old_runs_their_patches():
    """With the template pose the CLI's settings search the turns on the patches' edges
    (``EDGE_SIGMAS_PX``), without it on nothing; a saved config from before the edges loads
    searching the patches themselves (its templates were learned so); scales must be positive."""
    from microvae.config import EDGE_SIGMAS_PX, POSE_CANDIDATES, POSE_REFINE_STEPS, configs_from_settings
    from microvae.errors import ParameterError

    assert configs_from_settings({"classes": 2})[0].pose_edge_sigmas_px == EDGE_SIGMAS_PX
    assert configs_from_settings({"classes": 2, "rotation": False})[0].pose_edge_sigmas_px == ()
    assert configs_from_settings({"classes": 2, "pose_edge_sigmas_px": (1.5,)})[0].pose_edge_sigmas_px == (1.5,)
    saved = small_config(template_pose=True, pose_edge_sigmas_px=EDGE_SIGMAS_PX).to_dict()
    assert JTRVAEConfig.from_dict(saved).pose_edge_sigmas_px == EDGE_SIGMAS_PX
    saved.pop("pose_edge_sigmas_px")
    assert JTRVAEConfig.from_dict(saved).pose_edge_sigmas_px == ()
    assert build_model(JTRVAEConfig.from_dict(saved), seed=0).pose_templates.shape[1] == 1
    with pytest.raises(ParameterError, match="pose_edge_sigmas_px"):
        small_config(template_pose=True, pose_edge_sigmas_px=(0.0,)).validate()
    # the refinement off the grid: set with the template pose, 0 for configs saved before it
    assert configs_from_settings({"classes": 2})[0].pose_refine_steps == POSE_REFINE_STEPS > 0
    assert configs_from_settings({"classes": 2, "rotation": False})[0].pose_refine_steps == 0
    saved = small_config(template_pose=True, pose_refine_steps=POSE_REFINE_STEPS).to_dict()
    assert JTRVAEConfig.from_dict(saved).pose_refine_steps == POSE_REFINE_STEPS
    saved.pop("pose_refine_steps")
    assert JTRVAEConfig.from_dict(saved).pose_refine_steps == 0
    with pytest.raises(ParameterError, match="pose_refine_steps"):
        small_config(template_pose=True, pose_refine_steps=-1).validate()
    # several turns refined per search: set with the template pose, 1 for configs saved before it
    assert configs_from_settings({"classes": 2})[0].pose_candidates == POSE_CANDIDATES > 1
    assert configs_from_settings({"classes": 2, "rotation": False})[0].pose_candidates == 1
    saved = small_config(template_pose=True, pose_candidates=POSE_CANDIDATES).to_dict()
    assert JTRVAEConfig.from_dict(saved).pose_candidates == POSE_CANDIDATES
    saved.pop("pose_candidates")
    assert JTRVAEConfig.from_dict(saved).pose_candidates == 1
    with pytest.raises(ParameterError, match="pose_candidates"):
        small_config(template_pose=True, pose_candidates=0).validate()


def test_template_pose_renders_each_class_at_its_own_turn():
    """With ``template_pose`` the decoder renders class y at (v's angle + y's template turn):
    the per-class pass equals K single-class passes at those angles; the reported angle is the
    most probable class's; the templates are part of the weights; the turns are searched when
    not given, and given turns are used as they are."""
    cards = make_cards(24, 16, 120, seed=0)
    config = small_config(image_size=16, n_classes=3, template_pose=True)
    model = build_model(config, seed=0)
    with pytest.raises(Exception, match="pose templates"):
        model.start_template_pose(np.zeros((4, 1, 16, 16), np.float32))  # more templates than classes
    model.start_template_pose(cards.images[:3])
    assert "pose_templates" in model.state_dict()
    x = torch.from_numpy(cards.images)
    with torch.no_grad():
        searched = model.posterior(x)
        turns = searched["class_turns"]
        assert turns.shape == (24, 3) and bool((turns.abs() <= math.pi + 1e-6).all())
        given = torch.full((24, 3), 0.3)
        assert torch.equal(model.posterior(x, given)["class_turns"], given)
        z = torch.randn(24, config.latent_dim)
        angle = torch.rand(24, 3) * 6 - 3
        every = model.decoder_logits(z, angle, None)
        for k in range(3):
            one = model.decoder_logits(z, angle[:, k], None, class_vectors=torch.nn.functional.one_hot(torch.full((24,), k), 3).float())
            torch.testing.assert_close(every[:, k], one[:, 0], atol=1e-5, rtol=1e-5)
        summary = model.summarise(searched)
        m = searched["angle_vec_mean"]
        expected = torch.atan2(m[:, 1], m[:, 0]) + turns.gather(1, summary["class_probs"].argmax(1, keepdim=True))[:, 0]
        difference = torch.remainder(summary["angle_rad"] - expected + math.pi, 2 * math.pi) - math.pi
        assert float(difference.abs().max()) < 1e-5
    reloaded = build_model(config, seed=1)
    reloaded.load_state_dict(model.state_dict())
    torch.testing.assert_close(reloaded.pose_templates, model.pose_templates)
