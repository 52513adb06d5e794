#!/usr/bin/env bash
# Conformance tests: kvs-local (the binary, started on --port 0) against independent clients:
# the AWS SDK for Python (Debian's python3-boto3/python3-botocore), the AWS CLI (awscli), requests
# shaped like AWS's C producer, and our own kvssink. Fails when a test fails or none ran.
set -euo pipefail
cd "$(dirname "$0")/../../.."

cargo build --locked -p kvs-local -p gst-plugin-kvs

# Debian's python3 is the one scripts/setup.sh installs boto3, botocore and pytest into.
py=${KVS_CONFORMANCE_PYTHON:-/usr/bin/python3}
[ -x "$py" ] || py=python3
export PYTHONDONTWRITEBYTECODE=1
rc=0
"$py" -m pytest -q -p no:cacheprovider kvs-local/tests/conformance "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "conformance: no tests were collected" >&2
  exit 1
fi
exit "$rc"
