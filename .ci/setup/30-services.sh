# shellcheck shell=bash
# Sourced by .ci/run: installs (when missing) and starts the real services the
# backend tests run against, a throwaway PostgreSQL and an S3 server (Ceph's
# radosgw on a one-node Ceph), then exports where to find them:
#   HUB_TEST_DATABASE_URL   postgres://postgres@127.0.0.1:15432/postgres
#   HUB_TEST_S3_URL         http://127.0.0.1:17480/hub-test (endpoint/bucket)
#   AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#   HUB_TEST_POSTGRES_DIR   the cluster's directory (the restart fault test)
# and registers hub_services_stop in cleanup_hooks. Runs as root.

# Nothing may skip in CI: a backend test without its service fails.
export HUB_TEST_REQUIRE_SERVICES=1

hub_services_dir=$(mktemp -d /tmp/hub-services.XXXXXX)
chmod 755 "$hub_services_dir"

hub_services_stop() {
  scripts/services/s3.sh stop "$hub_services_dir/s3" || true
  scripts/services/postgres.sh stop "$hub_services_dir/pg" || true
  rm -rf "$hub_services_dir"
}
cleanup_hooks+=(hub_services_stop)

hub_services_start() {
  local missing=() pkg
  for pkg in postgresql radosgw ceph-mon ceph-osd uuid-runtime curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || return 1
  fi
  local database s3
  database=$(scripts/services/postgres.sh start "$hub_services_dir/pg" 15432) || return 1
  s3=$(scripts/services/s3.sh start "$hub_services_dir/s3" 17480 hub-test 2>"$hub_services_dir/s3-start.log") || {
    cat "$hub_services_dir/s3-start.log"
    return 1
  }
  export HUB_TEST_DATABASE_URL=$database
  export HUB_TEST_POSTGRES_DIR=$hub_services_dir/pg
  export HUB_TEST_S3_URL=$s3
  export AWS_ENDPOINT_URL=http://127.0.0.1:17480
  export AWS_ACCESS_KEY_ID=${S3_ACCESS_KEY:-HUBTESTACCESSKEY}
  export AWS_SECRET_ACCESS_KEY=${S3_SECRET_KEY:-hubtestsecretkey0123456789}
  export AWS_REGION=us-east-1
  echo "PostgreSQL at $HUB_TEST_DATABASE_URL, S3 at $HUB_TEST_S3_URL"
}

hub_services_start
