#!/usr/bin/env bash
# What `npm start` runs: install what is missing, build, start the local Orthanc stack, run the router.
# Extra arguments go to `ddr listen` (npm start -- --port 11112 --policy round-robin).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The router's parts, and what `npm test` starts besides them (strace, Chromium for the console, dciodvfy for SRs).
APT_PACKAGES=(orthanc orthanc-dicomweb dcmtk strace chromium dicom3tools postgresql haproxy)
INSTALL_COMMAND="apt-get update && apt-get install -y ${APT_PACKAGES[*]}"

# 1. Debian packages: Orthanc, its DICOMweb plugin and dcmtk (and what the tests and the local cluster use).
missing=()
if [[ ! -x /usr/sbin/Orthanc ]] && ! command -v Orthanc >/dev/null 2>&1; then missing+=(orthanc); fi
if [[ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]]; then missing+=(orthanc-dicomweb); fi
if ! command -v storescu >/dev/null 2>&1 || ! command -v dcmsend >/dev/null 2>&1; then missing+=(dcmtk); fi
if ! command -v strace >/dev/null 2>&1; then missing+=(strace); fi
if [[ ! -x /usr/bin/chromium ]]; then missing+=(chromium); fi
if ! command -v dciodvfy >/dev/null 2>&1; then missing+=(dicom3tools); fi
# The local cluster (ddr stack up --routers: docs/cluster.md) and its tests.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null 2>&1; then missing+=(postgresql); fi
if [[ ! -x /usr/sbin/haproxy ]] && ! command -v haproxy >/dev/null 2>&1; then missing+=(haproxy); fi
if (( ${#missing[@]} > 0 )); then
  if [[ "$(id -u)" != 0 ]]; then
    echo "ddr needs the Debian packages: ${missing[*]}. Install them as root, then run npm start again:" >&2
    echo "  sudo sh -c '${INSTALL_COMMAND}'" >&2
    exit 2
  fi
  echo "==> installing ${missing[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update </dev/null >&2
  apt-get install -y "${missing[@]}" </dev/null >&2
  # Debian starts its own Orthanc service on 4242/8042, the ports of ddr's default backend "orthanc1".
  # It was installed just now for ddr, so it is stopped and disabled; ddr runs its own Orthancs.
  if [[ " ${missing[*]} " == *" orthanc "* ]] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
    echo "==> stopping and disabling the orthanc system service (it holds ports 4242/8042)" >&2
    systemctl disable --now orthanc >&2 || true
  fi
  # Likewise Debian's PostgreSQL (5432) and HAProxy services: ddr stack runs its own.
  for service in postgresql haproxy; do
    if [[ " ${missing[*]} " == *" ${service} "* ]] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
      echo "==> stopping and disabling the ${service} system service (ddr stack runs its own)" >&2
      systemctl disable --now "$service" >&2 || true
    fi
  done
fi

# 2. Node dependencies and build.
if [[ ! -d node_modules ]]; then
  echo "==> installing npm dependencies" >&2
  npm ci --no-audit --no-fund >&2
fi
# A processing module with its own dependencies (its install script only fetches CUDA binaries).
if [[ ! -d modules/onnx-classifier/node_modules ]]; then
  echo "==> installing modules/onnx-classifier's dependencies" >&2
  (cd modules/onnx-classifier && npm ci --ignore-scripts --no-audit --no-fund >&2)
fi
echo "==> building" >&2
npm run build >&2

# 3. The Orthanc stack, with the same config file the router will use (--config/-c among the arguments).
config_path=""
port_flag=""
ae_flag=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  next="${args[i + 1]:-}"
  case "${args[i]}" in
    --config=*) config_path="${args[i]#--config=}" ;;
    --config | -c) config_path="$next" ;;
    --port=*) port_flag="${args[i]#--port=}" ;;
    --port | -p) port_flag="$next" ;;
    --ae-title=*) ae_flag="${args[i]#--ae-title=}" ;;
    --ae-title | -a) ae_flag="$next" ;;
  esac
done
echo "==> starting the Orthanc stack" >&2
if [[ -n "$config_path" ]]; then node bin/run.js stack up --config "$config_path"; else node bin/run.js stack up; fi

# 4. The router, in the foreground.
# storescu proposes uncompressed transfer syntaxes only: show an uncompressed sample (dcmsend handles the rest).
sample="$(find fixtures/studies -type f -name '*explicit-le*.dcm' 2>/dev/null | sort | head -n 1 || true)"
sample="${sample:-$(find fixtures -type f -name '*.dcm' -not -path '*/broken/*' 2>/dev/null | sort | head -n 1 || true)}"
# The router's port and AE title: flags, else the config (file and DDR_* variables), else the defaults.
listen_config="$(node --input-type=module -e '
  const {loadConfig} = await import(process.cwd() + "/dist/lib/config/load.js")
  const config = loadConfig({configPath: process.argv[1] || undefined})
  console.log(config.listen.port, config.listen.aeTitle)
' "$config_path" 2>/dev/null || true)"
port="${port_flag:-$(echo "$listen_config" | cut -s -d' ' -f1)}"
ae="${ae_flag:-$(echo "$listen_config" | cut -s -d' ' -f2-)}"
port="${port:-11113}"
ae="${ae:-DYNAMIC_DICOM_MW}"
echo "" >&2
echo "send a file:       TCP_NODELAY=1 storescu -aec ${ae} localhost ${port} ${sample:-path/to/file.dcm}" >&2
if [[ -d fixtures/studies ]]; then
  echo "send all fixtures: TCP_NODELAY=1 dcmsend -aec ${ae} localhost ${port} --scan-directories --recurse fixtures/studies" >&2
fi
console_url="$(node --input-type=module -e '
  const {loadConfig} = await import(process.cwd() + "/dist/lib/config/load.js")
  const {routerStatusUrl} = await import(process.cwd() + "/dist/lib/status/client.js")
  const config = loadConfig({configPath: process.argv[1] || undefined})
  if (config.status.console) console.log(`${routerStatusUrl(config.status)}/console/`)
' "$config_path" 2>/dev/null || true)"
if [[ -n "$console_url" ]]; then
  echo "the console:       ${console_url} (fleet, studies, queue and dead letters, upload, rules)" >&2
fi
echo "stop the router with Ctrl-C; the Orthanc stack keeps running: node bin/run.js stack down stops it" >&2
echo "" >&2
exec node bin/run.js listen "$@"
