#!/usr/bin/env bash
# #11 item 6: the long calibration run on the bundled model (all engine actions, population 64,
# PSNR and reward as separate objectives, racing + surrogate). Resumable: rerun this script; each
# pass extends the run by $STEP (default 6) generations and writes the bank to runs/ (not the committed one).
#
# Second run (RUN=long-pop64-v2, the default): warm-started from the front of the first run after
# 8 generations (docs/benchmarks/ecad-scenes-candidate-g8/candidate-bank.json) plus the heuristic
# suite, which by then had the early-skip block patterns FirstBlockCache follows on this model.
#
# Third run (RUN=focus-psnr28): the same search with a region of interest, `--quality-floor psnr=28`
# (calibration PSNR; the benchmark's bars are 30 and 35 dB on held-out prompts), warm-started from
# the second run's bank (runs/calibrate/ecad-scenes/long-pop64-v2-bank.json: run RUN=long-pop64-v2
# first). The second run spent its population along the whole front, down to 14 dB at 18x MACs.
# RUN=focus-psnr28-steps: the same plus `--step-mutation 0.3` (step-aligned moves); its generation 0
# is the focus run's (same seeds, same selection), so its folder may start as a copy of that one's
# generation 0 (memo records of generation 0, references, state, config with the genetic settings).
# RUN=focus-psnr33: the 35 dB bar's region (`--quality-floor psnr=33`), warm-started from the
# committed bank (the merge of the two runs above after 18 generations each). Run for 8
# generations (its folder seeded by a copy of that bank at another path): nothing faster at either bar.
# RUN=focus-fitted: the focus run's search (`--quality-floor psnr=28`) with the cost a model fitted
# on this machine's timings predicts (`--cost fitted`, the cross-fit over every committed entry:
# docs/benchmarks/actions/cost-crossfit-32x32-20steps.json) instead of MACs: cross-attention costs
# ~2.2x more per MAC than self-attention here and every block run a fixed ~1.3 ms, which MACs miss.
# Warm-started from the committed bank; every candidate the runs above rendered is reused with its
# cost recomputed (`--renders-from`: same renders, another cost), so generation 0 renders nothing new.
# Run for 12 generations: nothing faster at either bar on the validation prompts (docs/calibration.md).
# RUN=guidance: the focus run's search (`--quality-floor psnr=28`, MACs, step-aligned moves) with one
# more action, guidance reuse (`--actions reuse,forecast,skip,guidance`: at a marked step only the
# conditional rows run, the unconditional output is rebuilt from the last guidance difference),
# warm-started from the committed bank and from variants of its fast entries that reuse guidance at
# one step (scripts/guidance_seeds.py: mutation alone reaches those 19 of 627 genes rarely), starting
# from every candidate the runs above rendered (`--renders-from` re-encodes them in the wider gene
# space) and, where it exists, from a first pass of this run without those seeds (3 generations,
# its folder kept as guidance-unseeded).
# Run for 9 generations: nothing faster at either bar; guidance reuse costs more PSNR per MAC saved
# than the front's other trades (docs/calibration.md).
# The served bank is the merge of the runs (after their last pass):
#   python -m ecad.search.merge runs/calibrate/ecad-scenes/focus-psnr28 \
#       runs/calibrate/ecad-scenes/focus-psnr28-steps --out schedules/ecad-scenes/32x32-20steps.json
cd "$(dirname "$0")/.."  # the repo root
export PYTHONPATH=$PWD
RUN=${RUN:-long-pop64-v2}
EXTRA=()
case "$RUN" in
  long-pop64) ;;
  long-pop64-v2) EXTRA=(--seed-bank docs/benchmarks/ecad-scenes-candidate-g8/candidate-bank.json) ;;
  focus-psnr28) EXTRA=(--seed-bank runs/calibrate/ecad-scenes/long-pop64-v2-bank.json --quality-floor psnr=28) ;;
  focus-psnr28-steps) EXTRA=(--seed-bank runs/calibrate/ecad-scenes/long-pop64-v2-bank.json --quality-floor psnr=28
                             --step-mutation 0.3) ;;
  focus-psnr33) EXTRA=(--seed-bank schedules/ecad-scenes/32x32-20steps.json --quality-floor psnr=33) ;;
  focus-fitted) R=runs/calibrate/ecad-scenes
                EXTRA=(--seed-bank schedules/ecad-scenes/32x32-20steps.json --quality-floor psnr=28 --cost fitted
                       --cost-model docs/benchmarks/actions/cost-crossfit-32x32-20steps.json
                       --renders-from $R/focus-psnr28 --renders-from $R/focus-psnr28-steps --renders-from $R/focus-psnr33
                       --renders-from $R/long-pop64-v2 --renders-from $R/long-pop64) ;;
  guidance) R=runs/calibrate/ecad-scenes
            test -f $R/guidance-seeds.json || "${PYTHON:-.venv-test/bin/python}" scripts/guidance_seeds.py \
                schedules/ecad-scenes/32x32-20steps.json $R/guidance-seeds.json || exit 1
            EXTRA=(--seed-bank schedules/ecad-scenes/32x32-20steps.json --seed-bank $R/guidance-seeds.json
                   --quality-floor psnr=28 --step-mutation 0.3 --actions reuse,forecast,skip,guidance
                   $(test -d $R/guidance-unseeded && echo --renders-from $R/guidance-unseeded) --renders-from $R/focus-psnr28 --renders-from $R/focus-psnr28-steps --renders-from $R/focus-psnr33
                   --renders-from $R/focus-fitted --renders-from $R/long-pop64-v2 --renders-from $R/long-pop64) ;;
  *) echo "unknown RUN=$RUN (long-pop64, long-pop64-v2, focus-psnr28, focus-psnr28-steps, focus-psnr33, focus-fitted, guidance)" >&2; exit 2 ;;
esac
for g in $(seq ${STEP:-6} ${STEP:-6} ${MAX_GENERATIONS:-80}); do
  nice -n 19 "${PYTHON:-.venv-test/bin/python}" -m ecad.cli.calibrate --population 64 --generations $g \
    --scorer combined --objectives psnr,reward --racing 0.25 --surrogate 3 --validation-prompts 8 \
    "${EXTRA[@]}" --run-dir runs/calibrate/ecad-scenes/$RUN --out runs/calibrate/ecad-scenes/$RUN-bank.json \
    --no-progress || exit 1
done
