#!/usr/bin/env bash
# A program whose rank 0 aborts the job must not end while its message is still unread in its
# stderr pipe: MPI launchers kill the job on MPI_Abort and can drop what is left there (Hydra did,
# in about one launch in a hundred). Runs the program (a singleton, no launcher) with stderr into
# a FIFO that this script holds open but reads only up to the message's first ';'. Half a second
# later the program must still be running (waiting for the rest to be read); once the rest is
# read it must end, non-zero, within the time limit.
#   abort_waits_for_reader.sh <seconds> <extended regex for the message's first part> <program...>
set -uo pipefail
limit=$1 pattern=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/stderr"
exec 3<>"$dir/stderr"  # read-write: opening never blocks, and the FIFO always has a reader
timeout --kill-after=5 "$limit" "$@" 2>"$dir/stderr" &
pid=$!
running() {  # the timeout process lives as long as the program does
    local state
    state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null) && [ "$state" != Z ]
}
fail() {  # timeout passes SIGTERM on to the program
    echo; echo "FAIL: $*"
    kill "$pid" 2>/dev/null
    exit 1
}
IFS= read -r -d ';' -t "$limit" head <&3 || fail "no ';' on stderr within ${limit}s"
printf '%s;' "$head"
grep -Eq -- "$pattern" <<<"$head" || fail "no line matches: $pattern"
sleep 0.5
running || fail "the program ended 0.5 s after writing its message, with the rest of it unread"
IFS= read -r -t "$limit" rest <&3
printf '%s\n' "$rest"
wait "$pid"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: still running after ${limit}s"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: exited 0"; exit 1; fi
echo "PASS: waited for its message to be read, then exited with code $rc"
