"""microvae: unsupervised structure discovery in atomically resolved microscopy images.

Floors of the library, bottom to top (imports only point down):

1. ``errors``, ``images`` (readers), ``artifacts`` (HDF5 schema, provenance, atomic writes),
   ``synthetic`` (lattices with ground truth), ``cards`` (the cards data set).
2. ``atoms`` (find and refine atom positions), ``patches`` (atom-centred, grid and FFT patches),
   ``nets`` (encoders and spatial decoders).
3. ``models`` (the j-trVAE family).
4. ``training``, ``encoding``, ``plots``.
5. ``stages`` (each CLI subcommand's work: read inputs, compute, write one artifact).

The command-line interface lives in ``microvae.cli`` (source folder ``cli/``) and is a thin layer
over ``stages``. The library never prints or exits.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
