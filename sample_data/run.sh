#!/usr/bin/env bash
# The main job on the shipped real STEM scan (an oxide interface): find atoms, cut a patch around each,
# train a two-class j-trVAE, encode every patch and export class, latent and angle maps.
# Outputs go to ./sample_output (or the folder given as the first argument). Rerunning reuses what is
# up to date and resumes an interrupted training.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-sample_output}"
microvae pipeline "$here/pipeline.toml" "$here/scifireaders_SI-Survey_Image.dm3" -o "$out"
echo "done: maps in $out/maps/ (PNG previews, TIFF, HDF5); run folder $out/run/"
