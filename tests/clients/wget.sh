#!/usr/bin/env bash
# One request through l402-proxy with GNU wget, as an agent's shell would run it:
#   https_proxy / http_proxy   lower case only: wget ignores HTTPS_PROXY and HTTP_PROXY
#   --ca-certificate=FILE      the proxy's CA (wget ignores SSL_CERT_FILE); here from
#                              $L402_PROXY_CA. `ca_certificate = FILE` in a file named by
#                              WGETRC does the same without an argument.
#
#   wget.sh METHOD URL [JSON_BODY]
#
# Prints the fixed format tests/clients.rs parses (see client.py), from the last response
# header block wget -S reported, or `ERROR wget exit N: …` when there was no response.
set -uo pipefail
method="$1" url="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
args=(-S --timeout=30 --tries=1 --content-on-error -O "$work/b" --method="$method"
  --ca-certificate="${L402_PROXY_CA:?set L402_PROXY_CA to the proxy CA file}")
if [ $# -ge 3 ]; then
  args+=(--header='Content-Type: application/json' --body-data="$3")
fi
wget "${args[@]}" "$url" 2>"$work/err"
rc=$?
# -S writes each response's header lines to stderr indented by two spaces.
if ! grep -q '^  HTTP/' "$work/err"; then
  echo "ERROR wget exit $rc: $(tr '\n' ' ' <"$work/err")"
  exit 0
fi
awk '
  { sub(/\r$/, "") }
  /^  HTTP\// { n = 0; split($0, f, " "); status = f[2]; next }
  /^  [A-Za-z0-9-]+:/ {
    line = substr($0, 3)
    name = tolower(substr(line, 1, index(line, ":") - 1))
    value = substr(line, index(line, ":") + 1); sub(/^[ \t]+/, "", value)
    if (name ~ /^x-l402-proxy-/ || name == "proxy-authenticate") h[++n] = name ": " value
  }
  END { print "STATUS " status; for (i = 1; i <= n; i++) print "HEADER " h[i]; print "BODY" }
' "$work/err"
cat "$work/b" 2>/dev/null
