#!/usr/bin/env bash
# Runs a launch that must fail: passes when it exits non-zero within the time limit and its
# output matches the pattern.
#   expect_failure.sh <seconds> <extended regex> <command...>
set -uo pipefail
limit=$1 pattern=$2
shift 2
output=$(timeout --kill-after=5 "$limit" "$@" 2>&1)
rc=$?
printf '%s\n' "$output"
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: still running after ${limit}s (a hang)"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: exited 0"; exit 1; fi
if ! grep -Eq -- "$pattern" <<<"$output"; then echo "FAIL: no line matches: $pattern"; exit 1; fi
echo "PASS: exit code $rc, message found"
