#!/bin/sh
# Check the Prometheus configuration, alert rules and alert unit tests with promtool.
# Without promtool the checks are skipped, except in CI (CI=true), where that is an error.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v promtool >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
        echo "deploy/check.sh: promtool not found (install prometheus, e.g. apt-get install prometheus)" >&2
        exit 1
    fi
    echo "deploy/check.sh: promtool not found, skipping Prometheus checks (they are required when CI=true)"
    exit 0
fi

cd "$here/prometheus"
promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts_test.yml
