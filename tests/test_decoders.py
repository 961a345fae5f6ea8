"""The fast resampling decoder and the rotation-pooled class head: conventions and invariance."""

from __future__ import annotations

import math

import torch

from microvae.models import JTRVAE, JTRVAEConfig
from microvae.nets import ResampleDecoder, coordinate_grid, rotated_copies, transform_coordinates


def test_resample_decoder_rotates_counter_clockwise_as_displayed():
    torch.manual_seed(0)
    decoder = ResampleDecoder(latent_dim=2, n_classes=0, image_shape=(9, 9))
    z = torch.randn(1, 2)
    canonical = decoder.canonical(z, None)[0, 0]                                  # (9, 9)
    grid = coordinate_grid(9)
    identity = decoder(transform_coordinates(grid), z)[0, 0, :, 0].view(9, 9)
    torch.testing.assert_close(identity, canonical, atol=1e-5, rtol=0)
    quarter = decoder(transform_coordinates(grid, torch.tensor([math.pi / 2])), z)[0, 0, :, 0].view(9, 9)
    torch.testing.assert_close(quarter, torch.rot90(canonical, 1), atol=1e-5, rtol=0)  # rot90 k=1: counter-clockwise


def test_resample_and_mlp_decoders_agree_on_shapes():
    for decoder in ("mlp", "resample"):
        model = JTRVAE(JTRVAEConfig(image_size=12, n_classes=3, decoder=decoder, decoder_hidden=(16, 16), encoder_hidden=(16,)))
        terms = model.loss_terms(torch.rand(4, 1, 12, 12))
        assert terms["recon"].shape == (4,) and terms["class_probs"].shape == (4, 3)
        image = model.decode(torch.zeros(2, 2), torch.eye(3)[:2], torch.tensor([0.0, 1.0]), torch.zeros(2, 2))
        assert image.shape == (2, 1, 12, 12)


def test_rotation_pooled_class_head_is_invariant_to_quarter_turns():
    torch.manual_seed(1)
    model = JTRVAE(JTRVAEConfig(image_size=16, n_classes=4, class_rotations=4, encoder_hidden=(32,), decoder_hidden=(16,), decoder="resample"))
    x = torch.rand(3, 1, 16, 16)
    x[..., 0, :] = x[..., -1, :] = x[..., :, 0] = x[..., :, -1] = 0  # keep the corners' zero padding out of it
    turned = torch.rot90(x, 1, dims=(2, 3))
    probs = torch.softmax(model.posterior(x)["class_logits"], 1)
    probs_turned = torch.softmax(model.posterior(turned)["class_logits"], 1)
    torch.testing.assert_close(probs, probs_turned, atol=1e-4, rtol=0)
    plain = JTRVAE(JTRVAEConfig(image_size=16, n_classes=4, class_rotations=0, encoder_hidden=(32,), decoder_hidden=(16,), decoder="resample"))
    difference = (torch.softmax(plain.posterior(x)["class_logits"], 1) - torch.softmax(plain.posterior(turned)["class_logits"], 1)).abs().max()
    assert difference > 1e-3  # without pooling the class head is not invariant


def test_rotated_copies_first_copy_is_the_input():
    x = torch.rand(2, 1, 10, 10)
    copies = rotated_copies(x, 4).view(2, 4, 1, 10, 10)
    torch.testing.assert_close(copies[:, 0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(copies[:, 1], torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
