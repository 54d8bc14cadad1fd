#!/usr/bin/env bash
# One request through l402-proxy with curl, configured only from the environment, as an agent's
# shell would be:
#   https_proxy / http_proxy   lower case: curl ignores upper-case HTTP_PROXY (HTTPS_PROXY works
#                              in either case, but keep both lower-case)
#   CURL_CA_BUNDLE             the proxy's CA: curl ignores SSL_CERT_FILE
#
#   curl.sh METHOD URL [JSON_BODY]
#
# Prints the fixed format tests/clients.rs parses (see client.py), from the last response
# header block (after any CONNECT), or `ERROR curl exit N: …` when curl failed.
set -uo pipefail
method="$1" url="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=(-sS --max-time 30 -X "$method" -D "$work/h" -o "$work/b")
if [ $# -ge 3 ]; then
  args+=(-H 'Content-Type: application/json' --data-binary "$3")
fi
curl "${args[@]}" "$url" 2>"$work/err"
rc=$?
if [ $rc -ne 0 ]; then
  echo "ERROR curl exit $rc: $(tr '\n' ' ' <"$work/err")"
  exit 0
fi
awk '
  { sub(/\r$/, "") }
  /^HTTP\// { n = 0; split($0, f, " "); status = f[2]; next }
  /^[A-Za-z0-9-]+:/ {
    name = tolower(substr($0, 1, index($0, ":") - 1))
    value = substr($0, index($0, ":") + 1); sub(/^[ \t]+/, "", value)
    if (name ~ /^x-l402-proxy-/ || name == "proxy-authenticate") h[++n] = name ": " value
  }
  END { print "STATUS " status; for (i = 1; i <= n; i++) print "HEADER " h[i]; print "BODY" }
' "$work/h"
cat "$work/b"
