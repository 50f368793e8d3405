#!/usr/bin/env bash
# Time the README's commands as a new user would run them: a fresh clone of this repository's main
# into /tmp/NAME, an empty CIFS_HOME, then make env, make book (cold) and make test, each timed.
#   bash scripts/fresh_clone.sh NAME [SEED]      e.g.  bash scripts/fresh_clone.sh fresh3 3
# Logs: /tmp/NAME-{env,book,test}.log. Deletes /tmp/NAME and /tmp/NAME-home first (its own folders).
set -u
NAME=${1:?usage: fresh_clone.sh NAME [SEED]}; SEED=${2:-0}
REPO=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "/tmp/$NAME" "/tmp/$NAME-home"
git clone -q "$REPO" "/tmp/$NAME" && cd "/tmp/$NAME" || exit 1
export CIFS_HOME="/tmp/$NAME-home" MPLBACKEND=Agg CIFS_SEED="$SEED"
for step in env book test; do
  t0=$(date +%s); make "$step" > "/tmp/$NAME-$step.log" 2>&1; rc=$?
  echo "make $step: rc=$rc, $(( $(date +%s) - t0 )) s (seed $SEED, commit $(git rev-parse --short HEAD))"
done
tail -1 "/tmp/$NAME-test.log"
