"""microvae's command-line interface (installed as ``microvae.cli``): a thin layer over ``microvae.stages``."""
