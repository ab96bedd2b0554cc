#!/usr/bin/env bash
# #11 item 6: the long calibration run on the bundled model (all engine actions, population 64,
# PSNR and reward as separate objectives, racing + surrogate). Resumable: rerun this script; each
# pass extends the run by two generations and writes the bank to runs/ (not the committed one).
cd "$(dirname "$0")/.."  # the repo root
export PYTHONPATH=$PWD
for g in 2 4 6 8 10 12 14 16 18 20; do
  nice -n 19 "${PYTHON:-.venv-test/bin/python}" -m ecad.cli.calibrate --population 64 --generations $g \
    --scorer combined --objectives psnr,reward --racing 0.25 --surrogate 3 --validation-prompts 8 \
    --run-dir runs/calibrate/ecad-scenes/long-pop64 --out runs/calibrate/ecad-scenes/long-pop64-bank.json \
    --no-progress || exit 1
done
