#!/usr/bin/env bash
# ./ktls demo: a small ktls_filter cluster on 127.0.0.1 (see tools/demo.escript).
set -euo pipefail
: "${KTLS_ROOT:?run through ./ktls demo}"
# epmd is needed for the demo's named nodes (it starts on 127.0.0.1 only).
ERL_EPMD_ADDRESS=127.0.0.1 epmd -daemon 2>/dev/null || true
exec escript "$KTLS_ROOT/tools/demo.escript" "$KTLS_EBIN" "$@"
