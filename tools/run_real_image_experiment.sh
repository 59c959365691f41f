#!/usr/bin/env bash
# TESKD against its baseline on an image-folder data set, same recipe and seed,
# trained one after the other, then curves and a table of top-1.
#
#   tools/run_real_image_experiment.sh cifar10jpg|imagenette OUT_DIR
#
# Settings (environment variables; the defaults are the configs' own recipe):
#   DATA_ROOT   folder with train/<class>/ and test/ (cifar10jpg) or val/
#               (imagenette); defaults to data/cifar10-jpg, data/imagenette2-224
#   N_TRAIN     if set, train on the first N_TRAIN images of each class
#   N_TEST      if set, evaluate on the first N_TEST images of each class
#               (the subset is copied to OUT_DIR/data; the source is untouched)
#   EPOCHS      number of epochs; the lr drops x0.1 at 1/2 and 3/4 of them
#               (the CIFAR recipe's 100/150 of 200) unless MILESTONES is set
#   MILESTONES  e.g. "[30,60]"
#   BATCH       images per step; the lr follows linearly (--auto-scale-lr)
#   SEED        random seed shared by both runs (default 0)
#   RESUME=1    resume both runs from the latest checkpoint in OUT_DIR
#   EXTRA       more --cfg-options, e.g. "train_dataloader.num_workers=8"
#   PYTHON      the interpreter (default: python)
set -euo pipefail

# The whole script is one function, read before it runs.
main() {

  recipe=${1:?usage: $0 cifar10jpg|imagenette OUT_DIR}
  out=${2:?usage: $0 cifar10jpg|imagenette OUT_DIR}
  root=$(cd "$(dirname "$0")/.." && pwd)
  python=${PYTHON:-python}

  case $recipe in
    cifar10jpg) env_name=CIFAR10JPG_ROOT; test_split=test
                default_root=$root/data/cifar10-jpg ;;
    imagenette) env_name=IMAGENETTE_ROOT; test_split=val
                default_root=$root/data/imagenette2-224 ;;
    *) echo "unknown recipe '$recipe': use cifar10jpg or imagenette" >&2
       exit 2 ;;
  esac
  # Numbers: a typo would otherwise become an empty subset or a bad option.
  for var in N_TRAIN N_TEST EPOCHS BATCH SEED; do
    value=${!var:-}
    if [ -n "$value" ] && ! [[ $value =~ ^[0-9]+$ ]]; then
      echo "$var='$value' is not a whole number (e.g. $var=10)" >&2
      exit 2
    fi
    if [ "$var" != SEED ] && [ "$value" = 0 ]; then
      echo "$var=0 must be at least 1" >&2
      exit 2
    fi
  done
  data=${DATA_ROOT:-$default_root}
  for split in train $test_split; do
    if [ ! -d "$data/$split" ]; then
      echo "no folder $data/$split: DATA_ROOT must hold train/<class>/ and" \
           "$test_split/<class>/ (see README, 'Data')" >&2
      exit 2
    fi
  done

  mkdir -p "$out"
  # Keep the first N images of every class (file names sort in data set order).
  copy_subset() {  # split n
    local split=$1 n=$2 dst files
    for cls in "$data/$split"/*/; do
      dst=$out/data/$split/$(basename "$cls")
      mkdir -p "$dst"
      mapfile -t files < <(find "$cls" -maxdepth 1 -type f | sort)
      cp -t "$dst" "${files[@]:0:$n}"
    done
  }
  if [ -n "${N_TRAIN:-}${N_TEST:-}" ]; then
    if [ -d "$out/data" ] && [ -z "${RESUME:-}" ]; then
      echo "$out/data exists: remove it or choose another OUT_DIR" >&2
      exit 2
    fi
    if [ ! -d "$out/data" ]; then
      copy_subset train "${N_TRAIN:-1000000}"
      copy_subset $test_split "${N_TEST:-1000000}"
    fi
    data=$out/data
  fi

  opts=("randomness.seed=${SEED:-0}")
  if [ -n "${EPOCHS:-}" ]; then
    opts+=("train_cfg.max_epochs=$EPOCHS")
    opts+=("param_scheduler.milestones=${MILESTONES:-[$((EPOCHS / 2)),$((EPOCHS * 3 / 4))]}")
  elif [ -n "${MILESTONES:-}" ]; then
    opts+=("param_scheduler.milestones=$MILESTONES")
  fi
  train_args=()
  if [ -n "${BATCH:-}" ]; then
    opts+=("train_dataloader.batch_size=$BATCH")
    train_args+=(--auto-scale-lr)
  fi
  [ -n "${RESUME:-}" ] && train_args+=(--resume)
  # shellcheck disable=SC2206
  [ -n "${EXTRA:-}" ] && opts+=($EXTRA)

  {
    echo "recipe=$recipe data=$data seed=${SEED:-0} epochs=${EPOCHS:-config}"
    echo "batch=${BATCH:-config} n_train=${N_TRAIN:-all} n_test=${N_TEST:-all}"
    echo "cfg-options: ${opts[*]}"
  } | tee -a "$out/protocol.txt"

  runs=()
  for method in teskd baseline; do
    name=${method}_resnet18_$recipe
    echo "[$(date -u +%FT%TZ)] start $name" | tee -a "$out/protocol.txt"
    env "$env_name=$data" "$python" "$root/tools/train.py" \
      "$root/configs/$method/resnet18_$recipe.py" \
      --work-dir "$out/$name" "${train_args[@]}" --cfg-options "${opts[@]}"
    echo "[$(date -u +%FT%TZ)] end $name" | tee -a "$out/protocol.txt"
    runs+=("$out/$name")
  done

  # A resumed experiment draws its curves again, over the earlier ones.
  plot_args=()
  [ -n "${RESUME:-}" ] && plot_args+=(--force)
  "$python" "$root/tools/analysis/plot_curves.py" "${runs[@]}" \
    --out-dir "$out/curves" "${plot_args[@]}"
}

main "$@"
exit
