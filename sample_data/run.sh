#!/usr/bin/env bash
# The main job on the shipped real STEM scan: find atoms, cut patches, write previews.
# Outputs go to ./sample_output (or the folder given as the first argument).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-sample_output}"
mkdir -p "$out"
scan="$here/scifireaders_SI-Survey_Image.dm3"
microvae find-atoms "$scan" -o "$out/atoms.h5" --preview "$out/atoms.png"
microvae extract "$scan" --atoms "$out/atoms.h5" --window 32 -o "$out/patches.h5" --preview "$out/patches.png"
echo "done: $out/atoms.h5 $out/patches.h5 and PNG previews in $out/"
