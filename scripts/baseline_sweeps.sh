#!/usr/bin/env bash
# The sweeps of issue 16 (docs/results/baseline_diagnosis.md): `tune` on validation users only,
# then the reported tables on test users. Each step is nice'd and runs two one-thread jobs; every
# command resumes, so running a step again continues it after an interruption.
#
#   scripts/baseline_sweeps.sh tune-spotify tune-vaccine tables-spotify tables-vaccine ...
set -euo pipefail
run() { nice -n 19 recsim-ft "$@" --jobs 2 --quiet; }

for step in "$@"; do
  case $step in
    tune-spotify)  # the paper's head (relu) against the new default (gelu), Spotify
      for head in gelu relu; do
        run tune --table 1 --settings spotify --lrs 1e-4 --seeds 3 \
          --model head_activation=$head --out results/tune_head_$head/spotify
      done ;;
    tune-vaccine)
      for head in gelu relu; do
        run tune --table 2 --settings k25_m25 --lrs 1e-5 --seeds 2 \
          --model head_activation=$head --out results/tune_head_$head/vaccine
      done ;;
    tables-spotify)
      run reproduce --table 1 --envs spotify --seeds 10 --out results/table1_gelu ;;
    tables-hm)
      run reproduce --table 1 --envs hm --seeds 3 --out results/table1_hm_gelu ;;
    tables-vaccine)
      run reproduce --table 2 --settings k25_m25 --seeds 10 --out results/table2_gelu ;;
    tables-vaccine-100)  # the settings of Table II not run at the full protocol before
      run reproduce --table 2 --settings k25_m100 k50_m100 k100_m100 --seeds 3 \
        --out results/table2_gelu_m100 ;;
    tables-vaccine-50)  # the two settings run before with the paper's head
      run reproduce --table 2 --settings k25_m50 k50_m50 --seeds 3 --out results/table2_gelu_m50 ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
