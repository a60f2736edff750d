#!/usr/bin/env bash
# Offline schema check of the manifests in deploy/k8s: every resource in every *.yaml here
# (extras/ included; kustomization.yaml is kustomize's own file, not a resource) is validated
# against the Kubernetes OpenAPI schemas of one fixed version, in strict mode: unknown fields,
# wrong types and missing required fields are errors. The schemas ship inside the
# kubernetes-validate wheel, so nothing is fetched at validation time (only the one-time install
# from PyPI when it is missing).
#
#   bash deploy/k8s/validate.sh            # against Kubernetes 1.31
#   K8S_VERSION=1.33 bash deploy/k8s/validate.sh
#
# Also: job.toml in the ConfigMap must parse as TOML, a resource kind the validator has no schema
# for is an error (the tool itself only warns), and with kubectl on PATH the kustomization must
# render (`kubectl kustomize`, offline) to exactly the resources of the files it lists, each valid.
# Exit status: 0 when everything is valid, 1 otherwise.
set -euo pipefail

VALIDATOR_VERSION=1.37.0
K8S_VERSION="${K8S_VERSION:-1.31.0}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"

have_validator() {
  "$PYTHON" - "$VALIDATOR_VERSION" <<'PY' 2>/dev/null
import sys
from kubernetes_validate.version import __version__
sys.exit(0 if __version__ == sys.argv[1] else 1)
PY
}

if ! have_validator; then
  echo "installing kubernetes-validate==$VALIDATOR_VERSION ..." >&2
  if ! PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check \
      "kubernetes-validate==$VALIDATOR_VERSION" >&2; then
    # A system Python that refuses pip installs (PEP 668): use a private virtual environment.
    venv="${XDG_CACHE_HOME:-$HOME/.cache}/drllm/k8s-validate-venv"
    echo "pip refused; installing into $venv" >&2
    "$PYTHON" -m venv "$venv"
    PYTHON="$venv/bin/python"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check \
      "kubernetes-validate==$VALIDATOR_VERSION" >&2
  fi
  have_validator || { echo "error: kubernetes-validate $VALIDATOR_VERSION is not importable" >&2; exit 1; }
fi

cd "$HERE"
mapfile -t files < <(find . \( -name '*.yaml' -o -name '*.yml' \) ! -name 'kustomization.y*ml' \
  -type f | sed 's|^\./||' | LC_ALL=C sort)
[ "${#files[@]}" -gt 0 ] || { echo "error: no manifests in $HERE" >&2; exit 1; }

failed=0
# kubernetes-validate exits 1 on a schema error, 2 on an unparsable file or unsupported version,
# and 0 with a WARN line for a kind it has no schema for: any WARN/ERROR/FATAL line fails here.
check() { # check LABEL ARGS... : runs the validator, echoes its output, records a failure
  local label="$1" out rc=0
  shift
  out="$("$PYTHON" -m kubernetes_validate --kubernetes-version "$K8S_VERSION" --strict "$@" 2>&1)" || rc=$?
  printf '%s\n' "$out"
  if [ "$rc" -ne 0 ] || grep -qE '^(WARN|ERROR|FATAL)|Traceback|Couldn.t' <<<"$out"; then
    echo "FAILED: $label" >&2
    failed=1
  fi
}

echo "kubernetes-validate $VALIDATOR_VERSION, Kubernetes $K8S_VERSION, strict"
check "manifests" "${files[@]}"

# job.toml must at least be TOML (the coordinator checks the keys: coordinator/src/job.rs).
"$PYTHON" - 20-configmap-job.yaml <<'PY' || failed=1
import sys, yaml
try:
    import tomllib
except ImportError:  # Python < 3.11
    print("SKIP job.toml: no tomllib (Python < 3.11)")
    sys.exit(0)
path = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
cm = next(d for d in docs if d.get("kind") == "ConfigMap")
try:
    job = tomllib.loads(cm["data"]["job.toml"])
except Exception as e:
    print(f"ERROR {path}: job.toml is not valid TOML: {e}")
    sys.exit(1)
missing = [k for k in ("output_dir", "datasets") if k not in job]
if missing:
    print(f"ERROR {path}: job.toml lacks required key(s) {missing}")
    sys.exit(1)
print(f"INFO {path} job.toml parses (datasets: {[d.get('name') for d in job['datasets']]})")
PY

if command -v kubectl >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  rendered="$tmp/kustomize-build.yaml"
  if kubectl kustomize . >"$rendered" 2>"$tmp/err"; then
    check "kustomize output" "$rendered"
    # The rendered set must be exactly the resources of the files kustomization.yaml lists.
    "$PYTHON" - "$rendered" <<'PY' || failed=1
import sys, yaml
kust = yaml.safe_load(open("kustomization.yaml"))
def ids(docs):
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs if d)
listed = ids(d for f in kust["resources"] for d in yaml.safe_load_all(open(f)))
rendered = ids(yaml.safe_load_all(open(sys.argv[1])))
if listed != rendered:
    print(f"ERROR kustomize renders {rendered}, the listed files hold {listed}")
    sys.exit(1)
print(f"INFO kustomization.yaml renders {len(rendered)} resources")
PY
  else
    cat "$tmp/err"
    echo "FAILED: kubectl kustomize" >&2
    failed=1
  fi
else
  echo "SKIP kustomize rendering: no kubectl on PATH"
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/k8s: INVALID" >&2
  exit 1
fi
echo "deploy/k8s: all manifests valid"
