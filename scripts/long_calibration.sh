#!/usr/bin/env bash
# #11 item 6: the long calibration run on the bundled model (all engine actions, population 64,
# PSNR and reward as separate objectives, racing + surrogate). Resumable: rerun this script; each
# pass extends the run by $STEP (default 6) generations and writes the bank to runs/ (not the committed one).
#
# Second run (RUN=long-pop64-v2, the default): warm-started from the front of the first run after
# 8 generations (docs/benchmarks/ecad-scenes-candidate-g8/candidate-bank.json) plus the heuristic
# suite, which by then had the early-skip block patterns FirstBlockCache follows on this model.
cd "$(dirname "$0")/.."  # the repo root
export PYTHONPATH=$PWD
RUN=${RUN:-long-pop64-v2}
SEED_BANK=()
[ "$RUN" = long-pop64 ] || SEED_BANK=(--seed-bank docs/benchmarks/ecad-scenes-candidate-g8/candidate-bank.json)
for g in $(seq ${STEP:-6} ${STEP:-6} ${MAX_GENERATIONS:-80}); do
  nice -n 19 "${PYTHON:-.venv-test/bin/python}" -m ecad.cli.calibrate --population 64 --generations $g \
    --scorer combined --objectives psnr,reward --racing 0.25 --surrogate 3 --validation-prompts 8 \
    "${SEED_BANK[@]}" --run-dir runs/calibrate/ecad-scenes/$RUN --out runs/calibrate/ecad-scenes/$RUN-bank.json \
    --no-progress || exit 1
done
