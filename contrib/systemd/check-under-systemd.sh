#!/usr/bin/env bash
# Runs docs/DEPLOY.md's systemd steps against a real systemd on a machine
# where systemd is not PID 1 (a container, a CI runner): systemd boots as
# PID 1 of a new PID and mount namespace, with /tmp, /run and
# /etc/systemd/system private to it and everything that would touch the
# host masked (udev, logind, dbus, tmpfiles, gettys, timers). Then:
# install the units, socket-activate evloop, read its status and metrics,
# reload it (a restart without downtime: a new main PID), stop it while a
# client holds a connection (the drain serves it), and kill the namespace.
#
# Usage (as root, with evloop installed at /usr/bin/evloop):
#   bash contrib/systemd/check-under-systemd.sh
# Needs unshare and nsenter (util-linux), systemd, socat and curl. Prints
# what it saw; exits 0 only if every step held.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -x /usr/bin/evloop ]] || { echo "install evloop at /usr/bin/evloop first"; exit 2; }
for tool in unshare nsenter socat curl /lib/systemd/systemd; do
  command -v "$tool" >/dev/null || { echo "$tool is missing"; exit 2; }
done

boot=$(mktemp)
trap 'rm -f "$boot"' EXIT
cat >"$boot" <<'EOF'
set -euo pipefail
mount --make-rprivate /
mount -t tmpfs tmpfs /etc/systemd/system
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for unit in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
  systemd-udev-trigger.service systemd-udev-settle.service systemd-logind.service \
  dbus.service dbus.socket getty@.service serial-getty@.service console-getty.service \
  getty.target systemd-timesyncd.service cron.service ssh.service systemd-networkd.service \
  networking.service systemd-resolved.service systemd-hwdb-update.service \
  systemd-modules-load.service systemd-sysctl.service systemd-remount-fs.service \
  systemd-random-seed.service systemd-tmpfiles-setup-dev.service systemd-tmpfiles-setup.service \
  systemd-tmpfiles-clean.service systemd-tmpfiles-clean.timer kmod-static-nodes.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount dev-mqueue.mount \
  sys-kernel-config.mount sys-fs-fuse-connections.mount proc-sys-fs-binfmt_misc.automount \
  systemd-binfmt.service systemd-journal-flush.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer man-db.timer logrotate.timer systemd-pstore.service \
  systemd-firstboot.service systemd-machine-id-commit.service ldconfig.service \
  systemd-update-utmp.service systemd-update-utmp-runlevel.service nginx.service \
  haproxy.service prometheus.service prometheus-node-exporter.service tmp.mount; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done
printf '[Unit]\nDescription=only what the check starts\n' >/etc/systemd/system/evloop-check.target
exec /lib/systemd/systemd --system --unit=evloop-check.target --log-target=journal-or-kmsg
EOF
unshare --fork --pid --mount --mount-proc --uts bash "$boot" >/dev/null 2>&1 &
pid1=
for _ in $(seq 100); do
  pid1=$(pgrep -f -- "--unit=evloop-check.target" | head -n 1 || true)
  [[ -n $pid1 ]] && [[ $(nsenter -t "$pid1" -m -p -- systemctl is-system-running 2>/dev/null || true) =~ ^(running|degraded)$ ]] && break
  sleep 0.1
done
[[ -n $pid1 ]] || { echo "FAILED: systemd did not boot in the namespace"; exit 1; }
trap 'kill -KILL "$pid1" 2>/dev/null || true; rm -f "$boot"' EXIT
in_ns() { nsenter -t "$pid1" -m -p -u --wd="$PWD" -- "$@"; }
fail() { echo "FAILED: $*"; in_ns journalctl -u evloop.service --no-pager -n 30 || true; exit 1; }
echo "systemd $(in_ns systemctl --version | head -n 1 | cut -d' ' -f2) is PID 1 of a namespace (pid $pid1 here)"

# The steps of docs/DEPLOY.md, "One machine: systemd".
in_ns cp contrib/systemd/evloop.socket contrib/systemd/evloop.service /etc/systemd/system/
in_ns systemd-analyze verify --man=no /etc/systemd/system/evloop.socket /etc/systemd/system/evloop.service
in_ns systemctl daemon-reload
in_ns systemctl enable --now evloop.socket 2>/dev/null
reply=$(printf 'hello\n' | timeout 10 socat - TCP:127.0.0.1:1815)
[[ $reply == hello ]] || fail "the activated echo answered '$reply'"
status=$(in_ns systemctl show -p StatusText --value evloop.service)
[[ $status == "serving on 127.0.0.1:1815 unix:/run/evloop/evloop.sock" ]] || fail "status '$status'"
echo "ok: socket-activated, READY=1 with status '$status'"
first=$(in_ns systemctl show -p MainPID --value evloop.service)
curl -sf http://127.0.0.1:9815/metrics | grep -q '^evloop_connections_accepted_total 1$' ||
  fail "no metrics"
echo "ok: /metrics counts the connection"

in_ns systemctl reload evloop.service
for _ in $(seq 100); do
  second=$(in_ns systemctl show -p MainPID --value evloop.service)
  [[ $second != "$first" && $second != 0 ]] && break
  sleep 0.05
done
[[ $second != "$first" ]] || fail "the main PID stayed $first after the reload"
reply=$(printf 'after the reload\n' | timeout 10 socat - TCP:127.0.0.1:1815)
[[ $reply == "after the reload" ]] || fail "after the reload: '$reply'"
[[ $(in_ns systemctl is-active evloop.service) == active ]] || fail "not active after the reload"
echo "ok: reloaded without downtime: main PID $first -> $second"

# A client holds a connection across the stop; the drain serves it.
held=$(mktemp)
(sleep 0.5; printf 'across the stop\n'; sleep 1) | timeout 10 socat - TCP:127.0.0.1:1815 >"$held" &
client=$!
sleep 0.2
in_ns systemctl stop evloop.service 2>/dev/null
wait "$client" || true
[[ $(cat "$held") == "across the stop" ]] || fail "the held connection got '$(cat "$held")'"
rm -f "$held"
result=$(in_ns systemctl show -p Result --value evloop.service)
[[ $result == success ]] || fail "the stop ended with result '$result'"
echo "ok: stopped after the reload with a drain (result $result), the held connection served"
in_ns systemctl stop evloop.socket
echo "PASSED"
