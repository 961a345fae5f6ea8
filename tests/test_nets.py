"""The rotation-pooled class head and the rotated copies it pools over: conventions and invariance."""

from __future__ import annotations

import torch

from microvae.models import JTRVAE, JTRVAEConfig
from microvae.nets import rotated_copies


def test_rotation_pooled_class_head_is_invariant_to_quarter_turns():
    torch.manual_seed(1)
    model = JTRVAE(JTRVAEConfig(image_size=16, n_classes=4, class_rotations=4, encoder_hidden=(32,), decoder_hidden=(16,)))
    x = torch.rand(3, 1, 16, 16)
    x[..., 0, :] = x[..., -1, :] = x[..., :, 0] = x[..., :, -1] = 0  # keep the corners' zero padding out of it
    turned = torch.rot90(x, 1, dims=(2, 3))
    probs = torch.softmax(model.posterior(x)["class_logits"], 1)
    probs_turned = torch.softmax(model.posterior(turned)["class_logits"], 1)
    torch.testing.assert_close(probs, probs_turned, atol=1e-4, rtol=0)
    plain = JTRVAE(JTRVAEConfig(image_size=16, n_classes=4, class_rotations=0, encoder_hidden=(32,), decoder_hidden=(16,)))
    difference = (torch.softmax(plain.posterior(x)["class_logits"], 1) - torch.softmax(plain.posterior(turned)["class_logits"], 1)).abs().max()
    assert difference > 1e-3  # without pooling the class head is not invariant


def test_rotated_copies_first_copy_is_the_input():
    x = torch.rand(2, 1, 10, 10)
    copies = rotated_copies(x, 4).view(2, 4, 1, 10, 10)
    torch.testing.assert_close(copies[:, 0], x, atol=1e-5, rtol=0)
    torch.testing.assert_close(copies[:, 1], torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
