#!/bin/sh
# Instructions per operation (valgrind --tool=callgrind), erlang.PyBuffer
# against its baseline: stable on a busy machine, where timings are not.
# Each figure is the difference between two runs doing N1 and N2 units, over
# N2 - N1, so Python's start-up and the set-up cancel out.  Run from the
# repository root: bench/callgrind/run.sh.
set -e
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=${SRC:-$HERE/../../c_src}  # SRC=other/c_src: the same figures for another version
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ERTS=$(erl -noshell -eval 'io:format("~ts/erts-~ts/include/", [code:root_dir(), erlang:system_info(version)]), halt().')
INC=$($PYTHON -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
LIBDIR=$($PYTHON -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
LIB=$($PYTHON -c 'import sysconfig; print("python" + sysconfig.get_config_var("LDVERSION"))')
# the NIF's flags (c_src/Makefile)
gcc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$SRC" -I"$ERTS" -I"$INC" \
    "$HERE/harness.c" "$SRC/buffer_type.c" "$SRC/stream.c" \
    -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -l"$LIB" -lpthread -o "$OUT/harness"

# instr OP LINES N: instructions of a whole run
instr() {
    OP=$1 N=$3 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg" \
        "$OUT/harness" "$HERE/ops.py" "$2" 1 2>&1 | sed -n 's/.*refs: *//p' | tr -d ,
}
# per OP LINES N1 N2: instructions per unit
per() {
    a=$(instr "$1" "$2" "$3")
    b=$(instr "$1" "$2" "$4")
    echo $(( (b - a) / ($4 - $3) ))
}
row() { # label, ours, baseline
    printf '%-34s %10s %10s %8s\n' "$1" "$2" "$3" \
        "$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2fx", b / a }')"
}
printf '%-34s %10s %10s %8s\n' "instructions per unit" PyBuffer baseline ratio
row "readline() (vs BytesIO), per line" \
    "$(per readline_pybuffer 40000 10000 30000)" "$(per readline_bytesio 40000 10000 30000)"
row "next(it) (vs BytesIO), per line" \
    "$(per iterate_pybuffer 40000 10000 30000)" "$(per iterate_bytesio 40000 10000 30000)"
row "find, 64 MiB (vs one memmem)" \
    "$(per find_pybuffer 671088 1 3)" "$(per find_memmem 671088 1 3)"
printf '%-34s %10s\n' "readview(), per 64 KiB view" "$(per readview 671088 100 900)"
echo "ratio = baseline / PyBuffer (1.00x = as few instructions); the Python loop around each call is counted on both sides."
