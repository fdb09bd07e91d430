#!/usr/bin/env bash
# A throwaway S3 server for the backend tests: Ceph's S3 gateway (radosgw) on a
# one-node Ceph cluster (one monitor, one OSD, no manager, no cephx) whose
# files all live in DIR. Debian's radosgw has no standalone mode: it needs a
# monitor and an OSD behind it.
#
#   scripts/services/s3.sh start DIR [PORT [BUCKET]]  (PORT 17480, BUCKET hub-test)
#   scripts/services/s3.sh stop DIR
#
# Environment: S3_ACCESS_KEY / S3_SECRET_KEY (the S3 user's keys; test
# defaults), S3_OBJECTSTORE (bluestore on a sparse file in DIR, default, or
# memstore), S3_MON_PORT (13300; v1 messenger on S3_MON_PORT+1).
#
# Things that cost time to find out on this kind of machine:
# - every port stays below 32768: Linux hands out 32768-60999 as ephemeral
#   source ports, and a daemon binding one of those can collide at random;
# - radosgw only authenticates against the monitor with the `crc secure`
#   messenger modes spelled out, even with cephx off (it retries forever);
# - `cluster addr` must be pinned to loopback or the OSD picks another one;
# - one OSD needs pool size 1 and small placement-group counts, no autoscale.
set -euo pipefail

action=${1:?usage: s3.sh start|stop DIR [PORT [BUCKET]]}
dir=${2:?usage: s3.sh start|stop DIR [PORT [BUCKET]]}
port=${3:-17480}
bucket=${4:-hub-test}
access=${S3_ACCESS_KEY:-HUBTESTACCESSKEY}
secret=${S3_SECRET_KEY:-hubtestsecretkey0123456789}
store=${S3_OBJECTSTORE:-bluestore}
mon=${S3_MON_PORT:-13300}
conf="$dir/ceph.conf"
name=client.rgw.hub

stop() {
  local daemon pidfile pid i
  for daemon in "$name" osd.0 mon.a; do
    pidfile="$dir/run/$daemon.pid"
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || continue
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    # An OSD that is still flushing ignores the first signal now and then.
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  done
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i
  shift 2
  for i in $(seq 1 $((limit * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "s3.sh: $what did not come up within ${limit}s; logs in $dir/log" >&2
  return 1
}

osd_up() { ceph -c "$conf" osd dump 2>/dev/null | grep -q '^osd.0 up'; }

case "$action" in
  stop)
    stop
    exit 0
    ;;
  start) ;;
  *)
    echo "s3.sh: unknown action '$action' (start, stop)" >&2
    exit 2
    ;;
esac

for tool in ceph-mon ceph-osd radosgw radosgw-admin uuidgen curl; do
  command -v "$tool" >/dev/null || {
    echo "s3.sh: '$tool' is missing (apt-get install radosgw ceph-mon ceph-osd uuid-runtime curl)" >&2
    exit 1
  }
done

stop
rm -rf "$dir"
mkdir -p "$dir"/{run,log,mon.a,osd.0,rgw}
fsid=$(uuidgen)
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon,v1:127.0.0.1:$((mon + 1))]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms mon client mode = crc secure
ms mon service mode = crc secure
ms mon cluster mode = crc secure
ms client mode = crc secure
ms service mode = crc secure
ms cluster mode = crc secure
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
pid file = $dir/run/\$name.pid
keyring = $dir/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1

[mon]
mon data = $dir/mon.\$id

[osd]
osd data = $dir/osd.\$id
osd objectstore = $store
memstore device bytes = 8589934592
bluestore block create = true
bluestore block size = 32212254720
bluestore fsck on mount = false
bluestore cache autotune = false
bluestore cache size = 268435456
osd memory target = 1073741824

[$name]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
rgw enable usage log = false
# Deleted objects are reclaimed within a minute instead of after two hours,
# so that repeated 1 GiB benchmark runs do not fill the 30 GiB store (a full
# OSD stalls every PUT).
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw gc processor max time = 30
CONF

ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$dir/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
monmaptool --create --addv a "[v2:127.0.0.1:$mon,v1:127.0.0.1:$((mon + 1))]" \
  --fsid "$fsid" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon -c "$conf" -i a

osd_uuid=$(uuidgen)
ceph -c "$conf" osd new "$osd_uuid" 0 >/dev/null
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$dir/log/osd-mkfs.log"
ceph-osd -c "$conf" -i 0
wait_for 90 "the OSD" osd_up

radosgw -c "$conf" -n "$name"
wait_for 120 "radosgw on 127.0.0.1:$port" curl -sf -o /dev/null "http://127.0.0.1:$port/"

radosgw-admin -c "$conf" user create --uid=hub-test --display-name=hub-test \
  --access-key="$access" --secret-key="$secret" >/dev/null

# Create the bucket with a SigV4-signed request (radosgw refuses the request
# without the payload-hash header).
status=$(curl -s -o "$dir/log/create-bucket.out" -w '%{http_code}' -X PUT \
  --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" \
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$port/$bucket")
if [ "$status" != 200 ]; then
  echo "s3.sh: creating bucket '$bucket' answered $status:" >&2
  cat "$dir/log/create-bucket.out" >&2
  exit 1
fi
echo "http://127.0.0.1:$port/$bucket"
