"""Networks of the j-trVAE: a multi-head MLP encoder and two spatial decoders.

Coordinate convention (the only one in microvae):

* :func:`coordinate_grid` lists pixel centres as (row, col) pairs in [-1, 1], row-major
  (pixel ``(i, j)`` of an H×W image is entry ``i·W + j``; ``row = -1 + 2 i / (H - 1)``). Rows point
  down as the image is displayed (``origin='upper'``). One grid unit is ``(W - 1) / 2`` pixels.
* A decoder draws its canonical image ``g`` at transformed coordinates:
  ``image(x) = g(R(angle)ᵀ (x - shift))`` with ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` acting on
  (row, col). The rendered content therefore appears rotated by ``+angle`` COUNTER-CLOCKWISE as
  displayed and shifted by ``+shift`` (row, col) — the same convention as :mod:`microvae.cards`.
  (The paper writes the transform as ``R(γ)x + s``; that is this one with ``γ → -γ``, ``s → -R s``.)

Decoders return logits for every class at once: the class-independent part of the first layer
(coordinates and z) is computed once per sample, and each class adds only its bias row, so
enumerating K classes costs K times the later layers but never K concatenations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import ParameterError

__all__ = [
    "ACTIVATIONS",
    "EquivariantEncoder",
    "FourierDescriptor",
    "LatentInput",
    "MLPEncoder",
    "ObjectDescriptor",
    "SpatialBroadcastDecoder",
    "SpatialMLPDecoder",
    "TaperedView",
    "activation_layer",
    "coordinate_grid",
    "head_slice",
    "mlp",
    "periodic_centroid",
    "rotate_vectors",
    "rotated_copies",
    "sample_at",
    "transform_coordinates",
]

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "softplus": nn.Softplus, "gelu": nn.GELU}


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`ACTIVATIONS` (``tanh``, ``relu``, ``silu``, ``softplus``, ``gelu``).

    Returns
    -------
    nn.Module
        A new instance of that activation.

    Raises
    ------
    ParameterError
        When ``name`` is not a known activation.
    """
    if name not in ACTIVATIONS:
        raise ParameterError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def coordinate_grid(height: int, width: int | None = None) -> Tensor:
    """Pixel centres as (row, col) in [-1, 1], row-major; shape (H·W, 2), float32.

    ``coordinate_grid(H, W)[i * W + j] == (-1 + 2 i / (H - 1), -1 + 2 j / (W - 1))``.

    Parameters
    ----------
    height : int
        H, the rows, in px (at least 2).
    width : int or None, optional
        W, the columns, in px (at least 2); ``height`` when None (a square grid).

    Returns
    -------
    Tensor
        (H·W, 2) float32 pixel centres (row, col) in grid units, row-major.

    Raises
    ------
    ParameterError
        When either side is under 2 pixels.
    """
    width = height if width is None else width
    if height < 2 or width < 2:
        raise ParameterError(f"a coordinate grid needs at least 2×2 pixels, got {height}×{width}")
    rows = torch.linspace(-1.0, 1.0, height)
    cols = torch.linspace(-1.0, 1.0, width)
    row, col = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([row.reshape(-1), col.reshape(-1)], dim=1)


def transform_coordinates(grid: Tensor, angle_rad: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    """Pull the output grid back into the decoder's canonical frame: ``u = R(angle)ᵀ (x - shift)``.

    Parameters
    ----------
    grid : Tensor
        (P, 2) output pixel coordinates (row, col) in grid units.
    angle_rad : Tensor or None
        (B,) rotation of the rendered content, counter-clockwise as displayed, or (B, K) one per
        class; or None.
    shift : Tensor or None
        (B, 2) translation (row, col) of the rendered content in grid units, or None.

    Returns
    -------
    Tensor
        (B, P, 2) canonical coordinates (row, col), or (B, K, P, 2) for (B, K) angles; B = 1
        when both angle and shift are None.
    """
    coords = grid.unsqueeze(0)
    if shift is not None:
        coords = coords - shift.unsqueeze(1)
    if angle_rad is not None:
        if angle_rad.ndim == 2:  # one angle per class: (B, K, P, 2)
            coords = coords.unsqueeze(1)
        cos, sin = torch.cos(angle_rad)[..., None], torch.sin(angle_rad)[..., None]
        row, col = coords[..., 0], coords[..., 1]
        coords = torch.stack([cos * row + sin * col, -sin * row + cos * col], dim=-1)
    return coords


def mlp(in_features: int, hidden: Sequence[int], activation: str) -> nn.Sequential:
    """Linear + activation layers; output width ``hidden[-1]`` (``in_features`` if hidden is empty).

    Parameters
    ----------
    in_features : int
        Width of the input.
    hidden : sequence of int
        Width of each Linear layer, in order; each is followed by an activation.
    activation : str
        The activation's name (a key of :data:`ACTIVATIONS`).

    Returns
    -------
    nn.Sequential
        The layers (empty, an identity, when ``hidden`` is empty).

    Raises
    ------
    ParameterError
        When ``activation`` is unknown (and ``hidden`` is not empty).
    """
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), activation_layer(activation)]
        in_features = width
    return nn.Sequential(*layers)


def head_slice(sizes: dict[str, int], name: str) -> slice:
    """Where ``name`` sits in a vector that concatenates heads of these ``sizes`` (in order).

    Parameters
    ----------
    sizes : dict of str to int
        Each head's width, in the order of concatenation.
    name : str
        The head to find.

    Returns
    -------
    slice
        Its range of indices in the concatenated vector.

    Raises
    ------
    KeyError
        When ``name`` is not among ``sizes``.
    """
    start = 0
    for key, size in sizes.items():
        if key == name:
            return slice(start, start + size)
        start += size
    raise KeyError(name)


class MLPEncoder(nn.Module):
    """Inference network: one MLP trunk, one linear layer for all heads.

    Input (B, C, H, W) images; output a dict of
    ``z_mean`` (B, D) (or (B, ``mean_size``): 2D direction vectors for circular latents),
    ``z_log_sd`` (B, D); ``class_logits`` (B, K) when K > 0;
    ``angle_vec_mean`` (B, 2), ``angle_vec_log_sd`` (B, 1) when rotation is on (the angle is the
    direction of a 2D Gaussian vector, see :mod:`microvae.models`);
    ``shift_mean``, ``shift_log_sd`` (B, 2) in grid units (row, col) when translation is on.

    Parameters
    ----------
    in_features : int
        C·H·W, the width of a flattened image.
    latent_dim : int
        D, the continuous latents.
    n_classes : int
        K, the classes (0: no ``class_logits`` head).
    rotation : bool
        Whether the angle heads are present.
    translation : bool
        Whether the shift heads are present.
    hidden : sequence of int, default (256, 256)
        Widths of the trunk's hidden layers.
    activation : str, default "tanh"
        The trunk's activation (a key of :data:`ACTIVATIONS`).
    mean_size : int or None, optional
        Width of ``z_mean`` when it differs from D (circular latents: 2 per angle); D when None.

    Attributes
    ----------
    trunk : nn.Sequential
        The MLP trunk.
    head_sizes : dict of str to int
        Each head's width, in the order of the output.
    head : nn.Linear
        The one linear layer of all heads.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        n_classes: int,
        rotation: bool,
        translation: bool,
        hidden: Sequence[int] = (256, 256),
        activation: str = "tanh",
        mean_size: int | None = None,
    ):
        super().__init__()
        self.trunk = mlp(in_features, hidden, activation)
        sizes = {"z_mean": latent_dim if mean_size is None else mean_size, "z_log_sd": latent_dim}
        if n_classes > 0:
            sizes["class_logits"] = n_classes
        if rotation:
            sizes.update(angle_vec_mean=2, angle_vec_log_sd=1)
        if translation:
            sizes.update(shift_mean=2, shift_log_sd=2)
        self.head_sizes = sizes
        self.head = nn.Linear(hidden[-1] if hidden else in_features, sum(sizes.values()))

    def head_slice(self, name: str) -> slice:
        """Where head ``name`` sits in the output of ``self.head``.

        Parameters
        ----------
        name : str
            A key of ``head_sizes``.

        Returns
        -------
        slice
            Its range of output columns.
        """
        return head_slice(self.head_sizes, name)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Encode a batch of images.

        Parameters
        ----------
        x : Tensor
            (B, C, H, W) images.

        Returns
        -------
        dict of str to Tensor
            The heads (see the class docstring), each (B, width).
        """
        out = self.head(self.trunk(x.flatten(1)))
        return dict(zip(self.head_sizes, out.split(list(self.head_sizes.values()), dim=1)))


class LatentInput(nn.Module):
    """Affine map of (z, one-hot class) split into a shared part and a per-class bias table.

    ``forward(z)`` → (B, F) for ``W_z z + b``; ``class_bias`` (K, F) holds the one-hot columns of
    the weight, so that ``W [z, onehot(k)] + b = forward(z) + class_bias[k]``. Weights are drawn as
    PyTorch draws a Linear layer with ``fan_in`` inputs (the width of the concatenated input).

    Parameters
    ----------
    latent_dim : int
        D, the width of z.
    n_classes : int
        K (0: one implicit class whose bias is a fixed zero row in ``class_bias``).
    features : int
        F, the output width.
    fan_in : int
        The fan-in that sets the uniform init bound 1/√fan_in.

    Attributes
    ----------
    from_z : nn.Parameter
        (F, D) weight of z.
    bias : nn.Parameter
        (F,) shared bias.
    class_bias : nn.Parameter or Tensor
        (K, F) per-class bias rows; a (1, F) zero buffer when K = 0.
    """

    def __init__(self, latent_dim: int, n_classes: int, features: int, fan_in: int):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.from_z = nn.Parameter(torch.empty(features, latent_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(features).uniform_(-bound, bound))
        if n_classes > 0:
            self.class_bias = nn.Parameter(torch.empty(n_classes, features).uniform_(-bound, bound))
        else:  # one implicit class whose bias is already in `bias`
            self.register_buffer("class_bias", torch.zeros(1, features), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        """The shared part ``W_z z + b``.

        Parameters
        ----------
        z : Tensor
            (B, D) latents.

        Returns
        -------
        Tensor
            (B, F).
        """
        return torch.addmm(self.bias, z, self.from_z.t())

    def class_rows(self, class_vectors: Tensor | None) -> Tensor:
        """(1, K', F) bias rows of every class, or (B, 1, F) for given (B, K) class vectors.

        Parameters
        ----------
        class_vectors : Tensor or None
            (B, K) one-hot (or soft) class vectors, or None for every class.

        Returns
        -------
        Tensor
            (1, K', F) with K' = max(K, 1) when ``class_vectors`` is None, else (B, 1, F): the
            class vectors times ``class_bias``.
        """
        if class_vectors is None:
            return self.class_bias.unsqueeze(0)
        return (class_vectors.to(self.class_bias.dtype) @ self.class_bias).unsqueeze(1)


def _uniform_init_(layer: nn.Module, fan_in: int) -> nn.Module:
    bound = 1.0 / math.sqrt(fan_in)
    for p in layer.parameters():
        nn.init.uniform_(p, -bound, bound)
    return layer


class SpatialMLPDecoder(nn.Module):
    """Spatial generator: an MLP applied to every (transformed) pixel coordinate, conditioned on z, y.

    ``forward(coords, z)``: coords (B, P, 2) canonical (row, col) per pixel, z (B, D) →
    logits (B, K', P, C) for every class (K' = max(K, 1)); ``coords`` may have batch size 1.
    ``forward(coords, z, class_vectors)`` with (B, K) one-hot (or soft) class vectors → (B, 1, P, C).

    The first layer sees [coords, z, onehot(y)] (the paper's decoder). With ``latent_skips`` every
    further hidden layer also receives (z, y) as an added bias (skip connections, as in the
    convolutional decoder). ``coordinate_gain`` multiplies the initial coordinate weights: larger
    values start the network with sharper features (spatial MLPs are otherwise slow to learn edges).

    Parameters
    ----------
    latent_dim : int
        D, the width of z.
    n_classes : int
        K (0: a single implicit class).
    out_channels : int, default 1
        C, the channels of the output.
    hidden : sequence of int, default (256, 256, 256)
        Hidden layer widths (at least one).
    activation : str, default "tanh"
        The activation (a key of :data:`ACTIVATIONS`).
    latent_skips : bool, default False
        Add (z, y) as a bias to every further hidden layer.
    coordinate_gain : float, default 1.0
        Factor on the initial coordinate weights.

    Attributes
    ----------
    n_classes : int
        K' = max(K, 1), the classes a forward pass renders.
    from_coords : nn.Linear
        The first layer's coordinate part (2 → hidden[0], no bias).
    from_latents : LatentInput
        The first layer's (z, y) part.
    hidden : nn.ModuleList
        The further Linear layers.
    skips : nn.ModuleList or None
        One :class:`LatentInput` per further layer with ``latent_skips``, else None.
    out : nn.Linear
        The output layer (hidden[-1] → C).

    Raises
    ------
    ParameterError
        When ``hidden`` is empty.
    """

    def __init__(
        self,
        latent_dim: int,
        n_classes: int,
        out_channels: int = 1,
        hidden: Sequence[int] = (256, 256, 256),
        activation: str = "tanh",
        latent_skips: bool = False,
        coordinate_gain: float = 1.0,
    ):
        super().__init__()
        if not hidden:
            raise ParameterError("the spatial MLP decoder needs at least one hidden layer")
        self.n_classes = max(n_classes, 1)
        fan_in = 2 + latent_dim + n_classes
        self.from_coords = _uniform_init_(nn.Linear(2, hidden[0], bias=False), fan_in)
        with torch.no_grad():
            self.from_coords.weight.mul_(coordinate_gain)
        self.from_latents = LatentInput(latent_dim, n_classes, hidden[0], fan_in)
        self.activation = activation_layer(activation)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.skips = (
            nn.ModuleList(LatentInput(latent_dim, n_classes, b, a + latent_dim + n_classes) for a, b in zip(hidden[:-1], hidden[1:])) if latent_skips else None
        )
        self.out = nn.Linear(hidden[-1], out_channels)

    def forward(self, coords: Tensor, z: Tensor, class_vectors: Tensor | None = None) -> Tensor:
        """Render logits at the given coordinates.

        Parameters
        ----------
        coords : Tensor
            (B, P, 2) or (1, P, 2) canonical coordinates (row, col) in grid units, one per pixel;
            or (B, K', P, 2), one set per class (each class in its own pose).
        z : Tensor
            (B, D) latents.
        class_vectors : Tensor or None, optional
            (B, K) one-hot (or soft) class vectors; None renders every class.

        Returns
        -------
        Tensor
            Logits (B, K', P, C) without class vectors, (B, 1, P, C) with them.
        """
        per_class = coords.ndim == 4
        shared = self.from_coords(coords) + (self.from_latents(z)[:, None, None] if per_class else self.from_latents(z).unsqueeze(1))
        if not per_class:
            shared = shared.unsqueeze(1)  # (B, 1, P, H)
        h = self.activation(shared + self.from_latents.class_rows(class_vectors).unsqueeze(2))  # (B, K', P, H)
        for index, layer in enumerate(self.hidden):
            h = layer(h)
            if self.skips is not None:
                skip = self.skips[index]
                h = h + (skip(z).unsqueeze(1) + skip.class_rows(class_vectors)).unsqueeze(2)
            h = self.activation(h)
        return self.out(h)


class SpatialBroadcastDecoder(nn.Module):
    """Convolutional spatial-broadcast decoder with latent skip connections to every layer.

    The transformed coordinates enter as two input channels; (z, one-hot y) enters every layer as a
    per-channel bias (a 1×1 convolution of the tiled latent vector, which is the skip connection),
    split into a shared part and a per-class table as in :class:`SpatialMLPDecoder`.

    ``forward(coords, z)``: coords (B, H·W, 2) canonical (row, col) per pixel in row-major order,
    z (B, D) → logits (B, K', H·W, C); with (B, K) ``class_vectors`` → (B, 1, H·W, C).

    Parameters
    ----------
    latent_dim : int
        D, the width of z.
    n_classes : int
        K (0: a single implicit class).
    image_shape : tuple of int
        (H, W) of the rendered image, in px.
    out_channels : int, default 1
        C, the channels of the output.
    channels : sequence of int, default (64, 64, 64)
        Channels of each hidden convolution (at least one).
    kernel_size : int, default 3
        Side of the convolution kernels, in px (padding ``kernel_size // 2``).
    activation : str, default "tanh"
        The activation (a key of :data:`ACTIVATIONS`).

    Attributes
    ----------
    image_shape : tuple of int
        (H, W).
    n_classes : int
        K' = max(K, 1).
    convs : nn.ModuleList
        The hidden convolutions (no bias; the bias comes from ``skips``).
    skips : nn.ModuleList
        One :class:`LatentInput` per hidden convolution.
    out : nn.Conv2d
        The 1×1 output convolution.

    Raises
    ------
    ParameterError
        When ``channels`` is empty.
    """

    def __init__(
        self,
        latent_dim: int,
        n_classes: int,
        image_shape: tuple[int, int],
        out_channels: int = 1,
        channels: Sequence[int] = (64, 64, 64),
        kernel_size: int = 3,
        activation: str = "tanh",
    ):
        super().__init__()
        if not channels:
            raise ParameterError("the spatial broadcast decoder needs at least one hidden layer")
        self.image_shape = tuple(image_shape)
        self.n_classes = max(n_classes, 1)
        widths = [2, *channels]
        pad = kernel_size // 2
        fan_ins = [a * kernel_size**2 + latent_dim + n_classes for a in widths[:-1]]
        self.convs = nn.ModuleList(
            _uniform_init_(nn.Conv2d(a, b, kernel_size, padding=pad, bias=False), f) for a, b, f in zip(widths[:-1], widths[1:], fan_ins)
        )
        self.skips = nn.ModuleList(LatentInput(latent_dim, n_classes, b, f) for b, f in zip(channels, fan_ins))
        self.activation = activation_layer(activation)
        self.out = nn.Conv2d(channels[-1], out_channels, 1)

    def forward(self, coords: Tensor, z: Tensor, class_vectors: Tensor | None = None) -> Tensor:
        """Render logits at the given coordinates.

        Parameters
        ----------
        coords : Tensor
            (B, H·W, 2) or (1, H·W, 2) canonical coordinates (row, col) in grid units, row-major.
        z : Tensor
            (B, D) latents.
        class_vectors : Tensor or None, optional
            (B, K) one-hot (or soft) class vectors; None renders every class.

        Returns
        -------
        Tensor
            Logits (B, K', H·W, C) without class vectors, (B, 1, H·W, C) with them.
        """
        batch, (height, width) = z.shape[0], self.image_shape
        grid = coords.transpose(1, 2).reshape(-1, 2, height, width).expand(batch, -1, -1, -1)
        h = self.convs[0](grid) + self.skips[0](z)[:, :, None, None]  # (B, C0, H, W)
        rows = self.skips[0].class_rows(class_vectors)  # (B or 1, K', C0)
        h = h.unsqueeze(1) + rows[:, :, :, None, None]  # (B, K', C0, H, W)
        k = h.shape[1]
        h = self.activation(h).flatten(0, 1)
        for conv, skip in zip(self.convs[1:], self.skips[1:]):
            bias = skip(z)[:, None, :] + skip.class_rows(class_vectors)  # (B, K', Cl)
            h = self.activation(conv(h) + bias.reshape(batch * k, -1, 1, 1))
        logits = self.out(h)  # (B·K', C, H, W)
        return logits.reshape(batch, k, logits.shape[1], height * width).transpose(2, 3)


def rotated_copies(x: Tensor, count: int) -> Tensor:
    """(B·count, C, H, W): each image rotated by 0, 2π/count, … (bilinear, zeros outside).

    Parameters
    ----------
    x : Tensor
        (B, C, H, W) images.
    count : int
        The number of rotations, evenly spaced over 2π rad.

    Returns
    -------
    Tensor
        (B·count, C, H, W): the ``count`` rotated copies of each image, consecutive.
    """
    batch = x.shape[0]
    angles = torch.arange(count, device=x.device, dtype=x.dtype) * (2 * math.pi / count)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(angles)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (count, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, (count, x.shape[1], x.shape[2], x.shape[3]), align_corners=True)
    repeated = x.repeat_interleave(count, dim=0)
    return torch.nn.functional.grid_sample(repeated, grid.repeat(batch, 1, 1, 1), mode="bilinear", padding_mode="zeros", align_corners=True)


def sample_at(x: Tensor, grid: Tensor, angle_rad: Tensor | None, shift: Tensor | None) -> Tensor:
    """(B, C, W, W) images sampled at ``R(angle) u + shift`` for every grid point u (row-major).

    ``grid`` (W·W, 2) from :func:`coordinate_grid`; ``angle_rad`` (B,) and ``shift`` (B, 2) (row, col)
    in grid units, or None. The inverse of the decoder's pose: an image rendered as
    ``g(R(angle)ᵀ(x - shift))`` comes back as ``g``. Bilinear, zeros outside the image. A turn by a
    multiple of 90° maps pixel centres onto pixel centres, so it is exact (a pixel permutation).

    Parameters
    ----------
    x : Tensor
        (B, C, W, W) images.
    grid : Tensor
        (W·W, 2) coordinates (row, col) in grid units, from :func:`coordinate_grid`.
    angle_rad : Tensor or None
        (B,) angles in rad, or None (no rotation).
    shift : Tensor or None
        (B, 2) shifts (row, col) in grid units, or None (no shift).

    Returns
    -------
    Tensor
        (B, C, W, W) sampled images, in the dtype of ``x``.
    """
    batch, width = x.shape[0], x.shape[-1]
    points = grid.unsqueeze(0).expand(batch, -1, -1)  # (B, P, 2) u
    if angle_rad is not None:
        points = rotate_vectors(points, angle_rad[:, None])
    if shift is not None:
        points = points + shift.unsqueeze(1)
    sample_grid = points.flip(-1).reshape(batch, width, width, 2).to(x.dtype)  # (x=col, y=row)
    return torch.nn.functional.grid_sample(x, sample_grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def rotate_vectors(vectors: Tensor, angle_rad: Tensor) -> Tensor:
    """``R(angle) v`` for (..., 2) (row, col) vectors and angles broadcasting over ``...``.

    Parameters
    ----------
    vectors : Tensor
        (..., 2) vectors (row, col).
    angle_rad : Tensor
        Angles in rad, broadcasting over the leading dimensions of ``vectors``.

    Returns
    -------
    Tensor
        (..., 2) rotated vectors (row, col), counter-clockwise as displayed.
    """
    cos, sin = torch.cos(angle_rad), torch.sin(angle_rad)
    row, col = vectors[..., 0], vectors[..., 1]
    return torch.stack([cos * row - sin * col, sin * row + cos * col], dim=-1)


def periodic_centroid(weights: Tensor) -> Tensor:
    """Centroid (B, 2) (row, col), in pixels from the patch centre, of (B, W, W) non-negative weights
    that sum to 1, taken on the torus of the patch (each axis a circle of W pixels).

    A circular shift of the weights (``numpy.roll``) moves it by exactly that shift (modulo W), and
    a quarter turn turns it: unlike the plain centroid it has no edge where mass wraps around.

    Parameters
    ----------
    weights : Tensor
        (B, W, W) non-negative weights summing to 1 per patch.

    Returns
    -------
    Tensor
        (B, 2) centroid (row, col) in px from the patch centre ((W − 1) / 2), in [−W/2, W/2).
    """
    width = weights.shape[-1]
    phase = torch.arange(width, device=weights.device, dtype=weights.dtype) * (2 * math.pi / width)
    unit = torch.polar(torch.ones_like(phase), phase)  # (W,) complex
    row_mean = (weights.sum(2).to(unit.dtype) * unit).sum(1)  # Σ_rows w e^{iφ}
    col_mean = (weights.sum(1).to(unit.dtype) * unit).sum(1)
    centre = (width - 1) / 2
    position = torch.stack([torch.angle(row_mean), torch.angle(col_mean)], dim=1) * (width / (2 * math.pi))
    return torch.remainder(position - centre + width / 2, width) - width / 2


class EquivariantEncoder(nn.Module):
    """Inference network whose pose is equivariant and whose content is invariant by construction.

    The MLP encoder has to *learn* that a turned or moved patch has the same z and class; it learns
    it only roughly (the cryo-EM amortisation study's failure mode, measured by ``microvae
    diagnose``). This encoder builds it in, in three steps (all shapes per image, W×W pixels):

    1. **Centre.** Every pixel is scored by its salience, the squared contrast ((x − mean) / sd)²
       of the patch (bright and dark objects alike), plus a learned per-pixel correction (1×1
       convolutions, starting at 0); the softmax of the scores is a weight map whose periodic
       centroid (:func:`periodic_centroid`) is a first shift s₀. It moves exactly with a circular
       shift of the patch and turns with a quarter turn. (A score that starts without the salience
       puts s₀ anywhere, up to half a patch off, and the classes then fail to form.)
    2. **Orient.** The patch, re-centred on s₀, is sampled in ``rotations`` frames turned by
       φ_k = 2πk/R. One MLP reads every frame and gives a score a_k, a direction u_k and a shift
       correction t_k in that frame's axes; with weights w = softmax(a), the angle vector is
       ``v = Σ_k w_k R(φ_k) u_k`` and the shift ``s = s₀ + Σ_k w_k R(φ_k) t_k``. Turning the patch
       by φ_j permutes the frames, so v and s turn by exactly φ_j (for R divisible by 4, exactly
       under quarter turns; in between up to interpolation).
    3. **Read.** The patch sampled in its canonical frame, ``x(R(γ̂) u + ŝ)`` with γ̂ = atan2(v),
       is the same image whatever the pose; a radial taper (also on the frames of step 2) hides
       what a move or turn brings in at the edges. A second MLP reads it and gives z and the
       posterior sds, a third the class logits. The pose enters this read-out with its gradient
       stopped, so the content cannot pull the pose.

    Output: the dict of :class:`MLPEncoder` (``angle_vec_log_sd`` (B, 1); ``shift_log_sd`` (B, 2)
    holds one isotropic value twice, so that the posterior turns with the patch).

    Parameters
    ----------
    image_size : int
        W, the patch side in px.
    channels : int
        C, the image channels.
    latent_dim : int
        D, the continuous latents.
    n_classes : int
        K (0: no class head).
    rotation : bool
        Whether the angle is inferred (step 2's frames; one frame when off).
    translation : bool
        Whether the shift is inferred (step 1 and the shift correction).
    hidden : sequence of int, default (256, 256)
        Hidden widths of the content and class MLPs (the pose MLP uses the first only).
    activation : str, default "tanh"
        The activation (a key of :data:`ACTIVATIONS`).
    mean_size : int or None, optional
        Width of ``z_mean`` when it differs from D (circular latents); D when None.
    rotations : int, default 8
        R, the frames of step 2 (divisible by 4 for exact quarter-turn equivariance).
    score_channels : int, default 8
        Hidden channels of the learned per-pixel score correction.

    Attributes
    ----------
    rotations : int
        R when rotation is on, else 1.
    half_width_px : float
        (W − 1) / 2: one grid unit in px.
    pose_sizes : dict of str to int
        Widths of the pose MLP's outputs per frame (``score``, ``direction``, ``shift``).
    head_sizes : dict of str to int
        Widths of the content read-out's heads.
    trunk, head : nn.Module
        The content read-out (z and posterior sds).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        latent_dim: int,
        n_classes: int,
        rotation: bool,
        translation: bool,
        hidden: Sequence[int] = (256, 256),
        activation: str = "tanh",
        mean_size: int | None = None,
        rotations: int = 8,
        score_channels: int = 8,
    ):
        super().__init__()
        self.rotation, self.translation = rotation, translation
        self.rotations = rotations if rotation else 1
        in_features = channels * image_size * image_size
        self.register_buffer("grid", coordinate_grid(image_size), persistent=False)
        self.half_width_px = (image_size - 1) / 2.0
        # a radial taper, 1 inside 0.75 of the half-width and 0 from the inscribed circle on: what
        # enters at the edges when a patch moves or turns (neighbours, corners) is not read
        radius = self.grid.norm(dim=1).view(1, 1, image_size, image_size)
        self.register_buffer("taper", ((1.0 - radius) / 0.25).clamp(0.0, 1.0), persistent=False)
        if translation:
            self.pixel_scores = nn.Sequential(nn.Conv2d(channels, score_channels, 1), activation_layer(activation), nn.Conv2d(score_channels, 1, 1))
            nn.init.zeros_(self.pixel_scores[-1].weight)  # start from the salience (x − mean)² / sd² alone
            nn.init.zeros_(self.pixel_scores[-1].bias)
        pose_sizes = {"score": 1} | ({"direction": 2} if rotation else {}) | ({"shift": 2} if translation else {})
        self.pose_sizes = pose_sizes
        if rotation or translation:
            self.pose_trunk = mlp(in_features, hidden[:1], activation)
            self.pose_head = nn.Linear(hidden[-1], sum(pose_sizes.values()))
        sizes = {"z_mean": latent_dim if mean_size is None else mean_size, "z_log_sd": latent_dim}
        if n_classes > 0:  # its own read-out, as the MLP encoder's canonical class head
            self.class_head = nn.Sequential(mlp(in_features, hidden, activation), nn.Linear(hidden[-1], n_classes))
        if rotation:
            sizes["angle_vec_log_sd"] = 1
        if translation:
            sizes["shift_log_sd"] = 1
        self.head_sizes = sizes
        self.trunk = mlp(in_features, hidden, activation)
        self.head = nn.Linear(hidden[-1], sum(sizes.values()))

    def head_slice(self, name: str) -> slice:
        """Where head ``name`` sits in the output of ``self.head`` (the content read-out).

        Parameters
        ----------
        name : str
            A key of ``head_sizes``.

        Returns
        -------
        slice
            Its range of output columns.
        """
        return head_slice(self.head_sizes, name)

    def pose(self, x: Tensor) -> dict[str, Tensor]:
        """Posterior means of the pose: ``angle_vec_mean`` (B, 2) and ``shift_mean`` (B, 2) in grid
        units (row, col), each present when that latent is on.

        Parameters
        ----------
        x : Tensor
            (B, C, W, W) images.

        Returns
        -------
        dict of str to Tensor
            ``angle_vec_mean`` (B, 2) with rotation, ``shift_mean`` (B, 2) in grid units (row, col)
            with translation.
        """
        batch = x.shape[0]
        out: dict[str, Tensor] = {}
        centre = None
        if self.translation:
            # per patch and channel: the score sees contrast, not the absolute level
            mean, sd = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)
            standardised = (x - mean) / (sd + 1e-6)
            scores = self.pixel_scores(standardised).sum(1) + standardised.pow(2).sum(1)  # (B, W, W)
            scores = scores.flatten(1).float()
            weights = torch.softmax(scores, dim=1).view(batch, x.shape[-2], x.shape[-1])
            centre = (periodic_centroid(weights) / self.half_width_px).to(x.dtype)  # grid units
        angles = torch.arange(self.rotations, device=x.device, dtype=x.dtype) * (2 * math.pi / self.rotations)
        frames = self.taper * sample_at(
            x.repeat_interleave(self.rotations, 0), self.grid, angles.repeat(batch), None if centre is None else centre.repeat_interleave(self.rotations, 0)
        )
        raw = self.pose_head(self.pose_trunk(frames.flatten(1))).view(batch, self.rotations, -1)
        parts = dict(zip(self.pose_sizes, raw.split(list(self.pose_sizes.values()), dim=2)))
        weights = torch.softmax(parts["score"].float(), dim=1).to(raw.dtype)  # (B, R, 1)
        if self.rotation:
            out["angle_vec_mean"] = (weights * rotate_vectors(parts["direction"], angles[None, :])).sum(1)
        if self.translation:
            out["shift_mean"] = centre + (weights * rotate_vectors(parts["shift"], angles[None, :])).sum(1)
        return out

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Encode a batch of images: pose, then the content read in the canonical frame.

        Parameters
        ----------
        x : Tensor
            (B, C, W, W) images.

        Returns
        -------
        dict of str to Tensor
            The heads of :class:`MLPEncoder`: ``z_mean``, ``z_log_sd``, ``class_logits`` (K > 0),
            ``angle_vec_mean`` (B, 2) and ``angle_vec_log_sd`` (B, 1) with rotation,
            ``shift_mean`` and ``shift_log_sd`` (B, 2) in grid units (row, col) with translation.
        """
        out = self.pose(x) if (self.rotation or self.translation) else {}
        angle = shift = None
        if self.rotation:
            vector = out["angle_vec_mean"].detach()
            angle = torch.atan2(vector[:, 1], vector[:, 0])
        if self.translation:
            shift = out["shift_mean"].detach()
        canonical = self.taper * sample_at(x, self.grid, angle, shift)
        head = self.head(self.trunk(canonical.flatten(1)))
        out.update(zip(self.head_sizes, head.split(list(self.head_sizes.values()), dim=1)))
        if hasattr(self, "class_head"):
            out["class_logits"] = self.class_head(canonical.flatten(1))
        if self.translation:
            out["shift_log_sd"] = out["shift_log_sd"].expand(-1, 2)
        return out


class FourierDescriptor(nn.Module):
    """The rotation- and shift-invariant Fourier descriptor of :func:`microvae.baselines.fourier_descriptor`
    in torch (no learned parameters): (B, C, W, W) → (B, C · n_radii · (n_angles // 2 + 1)).

    ``log(1 + |FFT2(x − mean)|)`` read on a polar grid around the zero frequency (a fixed bilinear
    interpolation matrix), then ``|FFT|`` along the angle axis. Equal to the numpy version to
    float32 rounding (tested).

    Parameters
    ----------
    width : int
        W, the patch side in px (n_radii = W // 2 + 1).
    n_angles : int, default 32
        Angles of the polar grid.

    Attributes
    ----------
    n_radii, n_angles : int
        The polar grid's radii and angles.
    out_features_per_channel : int
        n_radii · (n_angles // 2 + 1).
    """

    def __init__(self, width: int, n_angles: int = 32):
        super().__init__()
        from .baselines import polar_interpolation

        self.n_radii, self.n_angles = width // 2 + 1, n_angles
        matrix = polar_interpolation(width, width, self.n_radii, n_angles).toarray()
        self.register_buffer("polar", torch.from_numpy(matrix), persistent=False)
        self.out_features_per_channel = self.n_radii * (n_angles // 2 + 1)

    def forward(self, x: Tensor) -> Tensor:
        """The descriptor of a batch of images.

        Parameters
        ----------
        x : Tensor
            (B, C, W, W) images (computed in float32).

        Returns
        -------
        Tensor
            (B, C · n_radii · (n_angles // 2 + 1)) float32 descriptors.
        """
        batch, channels = x.shape[:2]
        x = x.float()
        x = x - x.mean(dim=(-2, -1), keepdim=True)
        half = torch.fft.fftshift(torch.log1p(torch.fft.rfft2(x).abs()), dim=-2)  # (B, C, H, W//2+1)
        polar = half.reshape(batch * channels, -1) @ self.polar
        polar = polar.view(batch * channels, self.n_radii, self.n_angles)
        return torch.fft.rfft(polar, dim=-1).abs().reshape(batch, -1)


#: Compare-exchanges whose 5th output is the median of 9 values (Paeth's network, as in Devillard's ``opt_med9``).
_MEDIAN_OF_NINE = (
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 1),
    (3, 4),
    (6, 7),
    (1, 2),
    (4, 5),
    (7, 8),
    (0, 3),
    (5, 8),
    (4, 7),
    (3, 6),
    (1, 4),
    (2, 5),
    (4, 7),
    (4, 2),
    (6, 4),
    (4, 2),
)


def _median_of_nine(values: Sequence[Tensor]) -> Tensor:
    """The elementwise median of nine equal-shaped tensors (exactly ``torch.stack(values).median(0)``;
    a min/max network, ten times faster on the CPU than a median along a short axis)."""
    v = list(values)
    for a, b in _MEDIAN_OF_NINE:
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return v[4]


def _quantile(rows: Tensor, q: float) -> Tensor:
    """``torch.quantile(rows, q, dim=1)`` (linear interpolation) from two order statistics per row:
    (B, P) → (B,), several times faster than a full sort."""
    position = q * (rows.shape[1] - 1)
    below = int(math.floor(position))
    low = rows.kthvalue(below + 1, dim=1).values
    if below + 1 >= rows.shape[1]:
        return low
    return low + (position - below) * (rows.kthvalue(below + 2, dim=1).values - low)


class ObjectDescriptor(nn.Module):
    """A rotation-, shift- and scale-invariant descriptor of the one object in each patch (no
    learned parameters): (B, C, W, W) → (B, n_radii · n_harmonics).

    Made to read objects drawn by any means under any contrast, noise and background, the way a
    microscopist segments a particle before describing its shape:

    1. the channels are averaged; pixels farther from their 3×3 median than six robust sds of the
       patch (1.4826 · MAD), and at least ``OUTLIER_FLOOR`` of its 0.5–99.5 % range, are replaced by
       that median (salt-and-pepper, hot pixels, cosmic rays), then a Gaussian blur of
       ``blur_px`` px;
    2. a plane fitted (least squares) to the 2 px frame of the patch is subtracted (a slow
       background), and the result multiplied by ``polarity`` (+1: the object is brighter than
       its surround; −1: darker, e.g. ink on paper, AFM depressions);
    3. Otsu's threshold (a 64-bin histogram per patch) marks the object; its positive intensity
       inside that mask gives the object's centroid and radius of gyration ``r_g``;
    4. the positive part of the patch, divided by its mean inside the mask (contrast), is read
       bilinearly on ``n_radii`` circles about the centroid, of radii 0.25…2.2 · ``r_g`` (scale),
       at ``n_angles`` angles (zero outside the patch), and the modulus of its FFT along the angle
       (rotation) is kept up to ``n_harmonics`` harmonics, divided by ``n_angles``.

    A patch with nothing above the threshold is read about its centre with ``r_g`` = W / 4.

    With ``centred`` the circles are about the patch's centre instead of the centroid (patches
    cut around objects that sit at their centres, ``translation`` off): in a patch of a lattice
    the marked "object" is every column in it, and its centroid moves towards the brighter side
    of an interface, so that the columns next to it were read as the other side's
    (the zoo's perovskite film at bench size: 0.975–0.978 about the centroid, 0.999–1.000 about
    the centre, benchmarks/README.md).

    With ``scale_px`` (the *sized* reading) the circles have the same radii in every patch,
    0.25…2.2 · ``scale_px`` (:func:`microvae.baselines.object_scale` takes the 90th percentile of
    the set's ``r_g``): blind to turn, shift and brightness, not to size, so objects that differ
    in size or length (a dimer and a linear trimer of the same atoms) stay apart, where the
    scale-invariant reading maps them onto each other.

    Parameters
    ----------
    width : int
        W, the patch side in px (>= 5).
    polarity : float, default 1.0
        +1 for objects brighter than their surround, −1 for darker ones
        (:func:`microvae.baselines.object_polarity` reads it from a set of patches).
    n_radii, n_angles, n_harmonics : int, default 8, 64, 12
        The polar grid and the harmonics kept.
    blur_px : float, default 0.7
        Gaussian sd of step 1, px.
    scale_px : float or None, default None
        None: radii in units of each object's own ``r_g`` (scale-invariant). A number > 0: radii
        in units of this many px for every patch (sized).
    centred : bool, default False
        Read the circles about the patch's centre, not the object's centroid (``r_g`` is still
        the object's, about its centroid). The centre is pixel (W//2, W//2), where
        :mod:`microvae.patches` puts the atom (for even W half a pixel below and right of the
        window's middle).
    """

    OUTLIER_SDS = 6.0
    OUTLIER_FLOOR = 0.05
    FRAME_PX = 2
    HISTOGRAM_BINS = 64
    RADII = (0.25, 2.2)

    def __init__(
        self,
        width: int,
        polarity: float = 1.0,
        n_radii: int = 8,
        n_angles: int = 64,
        n_harmonics: int = 12,
        blur_px: float = 0.7,
        scale_px: float | None = None,
        centred: bool = False,
    ):
        super().__init__()
        if width < 5:
            raise ParameterError(f"ObjectDescriptor needs patches of at least 5 px, got {width}")
        if scale_px is not None and not (math.isfinite(scale_px) and scale_px > 0):
            raise ParameterError(f"ObjectDescriptor's scale_px must be a positive number of pixels or None, got {scale_px}")
        self.width, self.polarity = int(width), float(polarity)
        self.scale_px = None if scale_px is None else float(scale_px)
        self.centred = bool(centred)
        self.n_radii, self.n_angles, self.n_harmonics = int(n_radii), int(n_angles), int(n_harmonics)
        self.out_features = self.n_radii * self.n_harmonics
        radius = max(1, int(4.0 * blur_px + 0.5))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / blur_px) ** 2)
        self.register_buffer("blur", (taps / taps.sum()).float(), persistent=False)
        index = torch.arange(width, dtype=torch.float64)
        rows, cols = torch.meshgrid(index - (width - 1) / 2, index - (width - 1) / 2, indexing="ij")
        depth = torch.minimum(torch.minimum(index[:, None], index[None, :]), torch.minimum(width - 1 - index[:, None], width - 1 - index[None, :]))
        frame = (depth < self.FRAME_PX).reshape(-1)
        design = torch.stack([torch.ones_like(rows), rows, cols], dim=-1).reshape(-1, 3)
        fit = torch.linalg.pinv(design[frame])  # (3, frame pixels)
        projector = torch.zeros(3, width * width, dtype=torch.float64)
        projector[:, frame] = fit
        self.register_buffer("plane_fit", projector.T.float(), persistent=False)  # (W², 3): x ↦ the frame's plane (offset, row, col slopes)
        self.register_buffer("plane_basis", design.T.float(), persistent=False)  # (3, W²): the plane's values at every pixel
        self.register_buffer("index", index.float(), persistent=False)
        angles = torch.arange(self.n_angles, dtype=torch.float64) * (2 * math.pi / self.n_angles)
        radii = torch.linspace(self.RADII[0], self.RADII[1], self.n_radii, dtype=torch.float64)
        self.register_buffer("ring_rows", (radii[:, None] * torch.sin(angles)[None]).float(), persistent=False)
        self.register_buffer("ring_cols", (radii[:, None] * torch.cos(angles)[None]).float(), persistent=False)

    def flattened(self, x: Tensor) -> Tensor:
        """Steps 1–2 of the class docstring, without the polarity.

        Parameters
        ----------
        x : Tensor
            (B, C, W, W) patches, any intensity units.

        Returns
        -------
        Tensor
            (B, W, W) float32: the channels' mean, outlier pixels replaced by their 3×3 median,
            blurred, the plane fitted to the frame subtracted.
        """
        x = x.float().mean(dim=1)
        batch, w = x.shape[0], self.width
        padded = nn.functional.pad(x[:, None], (1, 1, 1, 1), mode="replicate")
        median = _median_of_nine(nn.functional.unfold(padded, 3).unbind(1)).view(batch, w, w)
        deviation = (x - median).abs()
        flat = x.reshape(batch, -1)
        spread = _quantile(flat, 0.995) - _quantile(flat, 0.005)
        mad = deviation.reshape(batch, -1).median(dim=1).values
        limit = torch.maximum(self.OUTLIER_SDS * 1.4826 * mad, self.OUTLIER_FLOOR * spread)
        x = torch.where(deviation > limit[:, None, None], median, x)
        taps = self.blur.numel()
        x = nn.functional.conv2d(nn.functional.pad(x[:, None], (taps // 2,) * 4, mode="replicate"), self.blur.view(1, 1, 1, -1))
        x = nn.functional.conv2d(x, self.blur.view(1, 1, -1, 1))[:, 0]
        flat = x.reshape(batch, -1)
        return (flat - (flat @ self.plane_fit) @ self.plane_basis).view(batch, w, w)

    def locate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Steps 1–3 of the class docstring: the object in each patch.

        Parameters
        ----------
        x : Tensor
            (B, C, W, W) patches, any intensity units (computed in float32).

        Returns
        -------
        image : Tensor
            (B, 1, W, W) the positive part of the cleaned patch divided by its mean inside the mask.
        row0, col0 : Tensor
            (B,) the object's centroid (row, col) in px from the patch's first pixel.
        gyration : Tensor
            (B,) its radius of gyration ``r_g`` in px (W / 4 where nothing is above the threshold).
        """
        y = self.polarity * self.flattened(x)
        batch, w = y.shape[0], self.width
        flat = y.reshape(batch, -1)
        low, high = flat.min(dim=1).values, flat.max(dim=1).values
        bins = self.HISTOGRAM_BINS
        step = torch.clamp(high - low, min=1e-12) / bins
        which = torch.clamp(((flat - low[:, None]) / step[:, None]).long(), 0, bins - 1)
        counts = torch.zeros(batch, bins, device=y.device).scatter_add_(1, which, torch.ones_like(flat))
        centres = low[:, None] + step[:, None] * (torch.arange(bins, device=y.device) + 0.5)
        below = counts.cumsum(1)[:, :-1]
        above = counts.sum(1, keepdim=True) - below
        sums = (counts * centres).cumsum(1)[:, :-1]
        total = (counts * centres).sum(1, keepdim=True)
        between = below * above * (sums / below.clamp(min=1) - (total - sums) / above.clamp(min=1)) ** 2
        threshold = centres[:, :-1].gather(1, between.argmax(dim=1, keepdim=True)) + step[:, None] / 2  # Otsu: maximal between-class variance
        mask = (flat > threshold).view(batch, w, w)
        positive = y.clamp(min=0)
        weight = positive * mask
        mass = weight.sum(dim=(1, 2))
        found = mass > 1e-12
        mass = mass.clamp(min=1e-12)
        row0 = (weight * self.index[:, None]).sum(dim=(1, 2)) / mass
        col0 = (weight * self.index[None, :]).sum(dim=(1, 2)) / mass
        spread = (weight * ((self.index[:, None] - row0[:, None, None]) ** 2 + (self.index[None, :] - col0[:, None, None]) ** 2)).sum(dim=(1, 2)) / mass
        centre = (w - 1) / 2
        row0 = torch.where(found, row0, torch.full_like(row0, centre))
        col0 = torch.where(found, col0, torch.full_like(col0, centre))
        gyration = torch.where(found, spread.clamp(min=1e-6).sqrt(), torch.full_like(spread, w / 4))
        contrast = (mass / mask.sum(dim=(1, 2)).clamp(min=1)).clamp(min=1e-12)
        return (positive / contrast[:, None, None])[:, None], row0, col0, gyration

    def forward(self, x: Tensor) -> Tensor:
        """The descriptors of a batch of patches.

        Parameters
        ----------
        x : Tensor
            (B, C, W, W) patches, any intensity units (computed in float32).

        Returns
        -------
        Tensor
            (B, n_radii · n_harmonics) float32, ordered radius, harmonic (dimensionless).
        """
        image, row0, col0, gyration = self.locate(x)
        w = self.width
        if self.centred:  # where microvae.patches puts the object: pixel (W//2, W//2), not the window's middle for even W
            row0 = col0 = torch.full_like(row0, float(w // 2))
        if self.scale_px is not None:
            gyration = torch.full_like(gyration, self.scale_px)
        rows = row0[:, None, None] + gyration[:, None, None] * self.ring_rows
        cols = col0[:, None, None] + gyration[:, None, None] * self.ring_cols
        grid = torch.stack([cols, rows], dim=-1) * (2.0 / (w - 1)) - 1.0  # grid_sample's (x, y) in [-1, 1]
        rings = nn.functional.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]
        harmonics = torch.fft.rfft(rings, dim=-1).abs()[..., : self.n_harmonics] / self.n_angles
        return harmonics.reshape(len(image), -1)


class TaperedView(nn.Module):
    """The view of :func:`microvae.baselines.pca_features` with ``taper=True`` in torch (no learned
    parameters): each patch (and channel) minus its mean, times the 2D Hann window
    (:func:`microvae.patches.hann_window`), flattened.

    Parameters
    ----------
    channels, width : int
        C and W of the (B, C · W · W) flattened patches it reads.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        from .patches import hann_window

        self.register_buffer("window", torch.from_numpy(hann_window(width)).float(), persistent=False)
        self.channels, self.width = channels, width

    def forward(self, x: Tensor) -> Tensor:
        """The tapered views of a batch of flattened patches.

        Parameters
        ----------
        x : Tensor
            (B, C · W · W) patches, flattened (computed in float32).

        Returns
        -------
        Tensor
            (B, C · W · W) float32: mean removed per patch and channel, times the window.
        """
        x = x.float().view(-1, self.channels, self.width, self.width)
        x = x - x.mean(dim=(-2, -1), keepdim=True)
        return (x * self.window).flatten(1)
