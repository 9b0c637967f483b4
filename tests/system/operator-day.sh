#!/usr/bin/env bash
# System test: the Debian package through an operator's first day, under a real systemd.
#
# Boots a minimal Debian 12 rootfs (mmdebstrap; cached under /var/cache/roomsync-systest) with
# `systemd-nspawn --boot` on a private, loopback-only network, and in it: installs the .deb
# with apt, writes a config and the secret, runs the stand-in DingTalk API as a service of its
# own (`roomsync stand-in`), `systemctl enable --now roomsync`, and checks what the operator
# and the readers of the mirror get: unit state and STATUS=, the journal, file modes, reading
# as a member and a non-member of the group roomsync (daemon running and stopped), `roomsync
# status`, a stop during a slow fetch, the watchdog, then remove and purge.
#
# Usage: tests/system/operator-day.sh path/to/roomsync_<version>-1_<arch>.deb
# The rootfs tarball is cached in $ROOMSYNC_SYSTEST_CACHE (default /var/cache/roomsync-systest),
# keyed on the suite and the package list.
# Needs root, systemd-nspawn (systemd-container), mmdebstrap and a kernel that allows the
# namespaces and cgroups nspawn uses; prints one line and exits 0 when it cannot run here.
# Leaves no container, mount, cgroup or process behind, whatever happens (trap cleanup).
set -euo pipefail

DEB=${1:?usage: $0 path/to/roomsync.deb}
SUITE=bookworm
# ca-certificates: a dependency of the package (the container has no apt lists to fetch it).
INCLUDE=systemd,systemd-sysv,dbus,sqlite3,passwd,ca-certificates
CACHE_DIR=${ROOMSYNC_SYSTEST_CACHE:-/var/cache/roomsync-systest}
PORT=8089
ROOMS=250
SECRET=standin-app-secret-0000
DB=/var/lib/roomsync/rooms.db
# Short watchdog for the test (a runtime drop-in): the shipped 120 s works the same way, the
# daemon pings every WatchdogSec/2, but would make the test wait minutes.
WATCHDOG_SEC=4

skip() {
    echo "system test skipped: $*"
    exit 0
}

[ "$(id -u)" -eq 0 ] || skip "it must run as root (systemd-nspawn boots a container)"
unshare --mount --pid --net --uts --ipc --fork --mount-proc true 2>/dev/null ||
    skip "this kernel does not allow the namespaces systemd-nspawn needs"
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
    CGROUP_ROOTS=(/sys/fs/cgroup)
elif [ -e /sys/fs/cgroup/unified/cgroup.controllers ] && [ -d /sys/fs/cgroup/systemd ]; then
    CGROUP_ROOTS=(/sys/fs/cgroup/unified /sys/fs/cgroup/systemd)
else
    skip "no cgroup v2 (or hybrid) hierarchy for systemd-nspawn"
fi
for tool in systemd-nspawn mmdebstrap nsenter setpriv; do
    command -v "$tool" >/dev/null || {
        echo "system test: $tool is missing (apt-get install systemd-container mmdebstrap)" >&2
        exit 1
    }
done
[ -f "$DEB" ] || { echo "system test: no package at $DEB" >&2; exit 1; }

started=$SECONDS
WORK=$(mktemp -d /var/tmp/roomsync-systest.XXXXXX)
ROOT=$WORK/root
MACHINE=roomsync-systest-$$
CGROUP_NAME=roomsync-systest-$$
NSPAWN_PID=
CT_PID=
had_nspawn_run_dir=$([ -d /run/systemd/nspawn ] && echo yes || echo no)

# --- cleanup: container, processes, cgroups, files --------------------------------------------

kill_cgroup() {
    local root dir
    for root in "${CGROUP_ROOTS[@]}"; do
        dir=$root/$CGROUP_NAME
        [ -d "$dir" ] || continue
        if [ -e "$dir/cgroup.kill" ]; then
            echo 1 >"$dir/cgroup.kill" 2>/dev/null || true
        fi
        find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    done
}

remove_cgroups() {
    local root dir tries
    for root in "${CGROUP_ROOTS[@]}"; do
        dir=$root/$CGROUP_NAME
        for tries in 1 2 3 4 5 6 7 8 9 10; do
            [ -d "$dir" ] || break
            find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$dir" ] || break
            kill_cgroup
            sleep 0.5
        done
        if [ -d "$dir" ]; then echo "cleanup: could not remove cgroup $dir" >&2; fi
    done
}

cleanup() {
    local status=$?
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # A clean shutdown of the container first, then the hard way.
        [ -n "$CT_PID" ] && timeout 20 nsenter -t "$CT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 1 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    [ -n "$NSPAWN_PID" ] && wait "$NSPAWN_PID" 2>/dev/null
    kill_cgroup
    remove_cgroups
    # nspawn mounts inside its own mount namespace; anything that leaked into ours goes too.
    grep -F " $WORK/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf --one-file-system "$WORK"
    if [ "$had_nspawn_run_dir" = no ]; then
        find /run/systemd/nspawn -depth -type d -empty -delete 2>/dev/null
    fi
    local left=""
    grep -qF " $WORK" /proc/mounts && left="$left mounts"
    for root in "${CGROUP_ROOTS[@]}"; do [ -d "$root/$CGROUP_NAME" ] && left="$left cgroup:$root/$CGROUP_NAME"; done
    [ -e "$WORK" ] && left="$left $WORK"
    if [ -n "$left" ]; then
        echo "cleanup: left behind:$left" >&2
        [ "$status" -eq 0 ] && status=1
    fi
    echo "system test took $((SECONDS - started)) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- checks -----------------------------------------------------------------------------------

passed=0
failed=0

# check DESCRIPTION COMMAND...: the command's output is the evidence shown (first lines).
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        passed=$((passed + 1))
        printf 'ok   %s\n' "$what"
    else
        failed=$((failed + 1))
        printf 'FAIL %s\n' "$what"
    fi
    [ -n "$out" ] && printf '%s\n' "$out" | head -n 12 | sed 's/^/       /'
    return 0
}

# Runs a command inside the container, as root, with a clean environment.
ct() {
    nsenter -t "$CT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

# Runs a command inside the container as USER with that user's groups.
ct_as() {
    local user=$1
    shift
    ct setpriv --reuid="$user" --regid="$user" --init-groups "$@"
}

# --- the rootfs, cached -------------------------------------------------------------------------

rootfs_tarball() {
    local key tarball
    key=$(printf '%s\n' "$SUITE" "$INCLUDE" minbase | sha256sum | cut -c1-16)
    tarball=$CACHE_DIR/$SUITE-$key.tar
    if [ ! -s "$tarball" ]; then
        mkdir -p "$CACHE_DIR"
        echo "building the $SUITE rootfs (mmdebstrap, cached in $tarball)" >&2
        if ! mmdebstrap --quiet --format=tar --variant=minbase --include="$INCLUDE" "$SUITE" \
            "$tarball.tmp.$$" >&2; then
            rm -f "$tarball.tmp.$$"
            return 1
        fi
        mv "$tarball.tmp.$$" "$tarball"
    fi
    printf '%s\n' "$tarball"
}

# --- boot -------------------------------------------------------------------------------------

child_of() {
    local children
    children=$(cat "/proc/$1/task/$1/children" 2>/dev/null || true)
    printf '%s\n' "${children%% *}"
}

boot() {
    local tarball
    tarball=$(rootfs_tarball)
    mkdir -p "$ROOT"
    tar -C "$ROOT" -xf "$tarball"
    cp "$DEB" "$ROOT/root/roomsync.deb"
    local root
    for root in "${CGROUP_ROOTS[@]}"; do mkdir "$root/$CGROUP_NAME"; done
    (
        # nspawn creates its payload and supervisor cgroups below ours, so they go with it.
        for root in "${CGROUP_ROOTS[@]}"; do echo "$BASHPID" >"$root/$CGROUP_NAME/cgroup.procs"; done
        exec systemd-nspawn --quiet --boot --register=no --keep-unit --private-network \
            --machine="$MACHINE" --directory="$ROOT" --console=read-only
    ) >"$WORK/console.log" 2>&1 &
    NSPAWN_PID=$!
    # nspawn's first child sets up and forks the container's init; wait for systemd itself.
    local i pid
    for i in $(seq 1 200); do
        pid=$(child_of "$NSPAWN_PID")
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ]; then
            CT_PID=$pid
            break
        fi
        kill -0 "$NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$CT_PID" ] || { cat "$WORK/console.log"; echo "the container did not start" >&2; exit 1; }
    # systemctl answers once systemd's private socket is up; then it waits for the boot.
    local state=
    for i in $(seq 1 300); do
        state=$(timeout 60 nsenter -t "$CT_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            systemctl is-system-running --wait 2>&1 || true)
        case $state in
            *"Failed to connect"* | offline | unknown | "") sleep 0.1 ;;
            *) break ;;
        esac
    done
    echo "container booted: systemd is $state"
    case $state in
        running | degraded) ;;
        *) cat "$WORK/console.log"; exit 1 ;;
    esac
}

# --- the operator's day -----------------------------------------------------------------------

install_package() {
    local out
    out=$(ct apt-get install -y --no-install-recommends /root/roomsync.deb 2>&1) || {
        printf '%s\n' "$out"
        echo "apt-get install failed" >&2
        exit 1
    }
    printf '%s\n' "$out" >"$WORK/apt-install.log"
    ct rm /root/roomsync.deb
    check "apt installs the package; postinst says it needs credentials and does not start it" \
        sh -c 'grep -A5 "installed but not started" "$1"' _ "$WORK/apt-install.log"
    check "postinst created the user and group roomsync (systemd-sysusers)" \
        ct sh -c 'getent passwd roomsync && getent group roomsync'
    check "the service is neither enabled nor started" \
        ct sh -c '[ "$(systemctl is-enabled roomsync)" = disabled ] && ! systemctl is-active roomsync'
    check "the unit is /usr/lib/systemd/system/roomsync.service running /usr/bin/roomsync" \
        ct sh -c 'systemctl show -p FragmentPath -p ExecStart roomsync | grep -E "^FragmentPath=/usr/lib/systemd/system/roomsync.service$|path=/usr/bin/roomsync"'
    check "man page, completions and docs are installed" \
        ct ls /usr/share/man/man1/roomsync.1.gz /usr/share/bash-completion/completions/roomsync \
        /usr/share/zsh/vendor-completions/_roomsync /usr/share/fish/vendor_completions.d/roomsync.fish \
        /usr/share/doc/roomsync/README.md /usr/share/doc/roomsync/schema.md /usr/share/doc/roomsync/copyright
}

configure() {
    ct sh -c "cat >/etc/roomsync/roomsync.toml" <<EOF
# Written by the system test: the stand-in API on the container's loopback.
[dingtalk]
base_url = "http://127.0.0.1:$PORT"
app_key = "standin-app-key"
union_id = "standin-union-id"

[database]
path = "$DB"

[schedule]
# Every two seconds, to see several runs.
cron = "*/2 * * * * *"

[budget]
# Unlimited: a run every two seconds outruns a real budget's pace early in a month.
monthly_calls = 0
EOF
    ct sh -c "umask 077; printf '%s\n' '$SECRET' >/etc/roomsync/app_secret"
    ct sh -c "cat >/etc/default/dingtalk-standin" <<EOF
PAGE_LATENCY=0s
REVISION=0
EOF
    ct sh -c "cat >/etc/systemd/system/dingtalk-standin.service" <<EOF
[Unit]
Description=Stand-in DingTalk API (roomsync system test)
[Service]
Type=notify
DynamicUser=yes
EnvironmentFile=/etc/default/dingtalk-standin
ExecStart=/usr/bin/roomsync stand-in --listen 127.0.0.1:$PORT --rooms $ROOMS --revision \${REVISION} --page-latency \${PAGE_LATENCY}
EOF
    ct mkdir -p /run/systemd/system/roomsync.service.d
    ct sh -c "printf '[Service]\nWatchdogSec=${WATCHDOG_SEC}s\n' >/run/systemd/system/roomsync.service.d/watchdog.conf"
    ct systemctl daemon-reload
    check "the stand-in DingTalk API runs as its own service" \
        ct sh -c 'systemctl start dingtalk-standin && systemctl is-active dingtalk-standin && journalctl -u dingtalk-standin -o cat | grep "stand-in DingTalk API at"'
    check "systemctl enable --now roomsync" ct systemctl enable --now roomsync
}

sql() {
    ct sqlite3 -readonly -cmd ".timeout 5000" "$DB" "$@"
}

wait_for_runs() {
    local want=$1 i n=0
    for i in $(seq 1 150); do
        n=$(sql "SELECT COUNT(*) FROM sync_runs WHERE status = 'succeeded'" 2>/dev/null || echo 0)
        [ "${n:-0}" -ge "$want" ] && return 0
        sleep 0.2
    done
    echo "only $n succeeded runs after 30 s" >&2
    ct journalctl -u roomsync --no-pager -n 30 >&2
    return 1
}

# Each function below is one check: it prints its evidence and fails with a message.

unit_active_with_status() {
    ct systemctl is-active roomsync
    local status
    status=$(ct systemctl show -p StatusText --value roomsync)
    echo "StatusText=$status"
    [[ $status =~ ^"last run: sync run "[0-9]+" succeeded: 3 pages, rooms seen $ROOMS" ]]
}

summary_per_run() {
    local id ids
    ids=$(sql "SELECT run_id FROM sync_runs WHERE status = 'succeeded' ORDER BY run_id")
    for id in $ids; do
        ct journalctl -u roomsync "RUN_ID=$id" -o cat | grep -E "^sync run $id succeeded" ||
            { echo "no summary line for run $id"; return 1; }
    done
}

journal_fields() {
    local fields
    fields=$(ct journalctl -u roomsync RUN_ID=1 -o export | grep -aE '^(TRIGGER|PAGES|ROOMS_SEEN|ROOMS_ADDED|STATUS|PRIORITY)=' | sort -u)
    echo "run 1: $(echo $fields)"
    grep -qx "TRIGGER=startup" <<<"$fields" && grep -qx "PAGES=3" <<<"$fields" &&
        grep -qx "ROOMS_SEEN=$ROOMS" <<<"$fields" && grep -qx "ROOMS_ADDED=$ROOMS" <<<"$fields" &&
        grep -qx "STATUS=succeeded" <<<"$fields" || return 1
    ct journalctl -u roomsync RUN_ID=2 -o export | grep -ax "TRIGGER=schedule" | head -n 1 | sed 's/^/run 2: /'
    # INFO lines are priority 6 (info): -p info..info selects them, and the summary is one.
    ct journalctl -u roomsync RUN_ID=1 -p info..info -o cat | grep -E "^sync run 1 succeeded"
}

journal_clean() {
    local json text
    json=$(ct journalctl -u roomsync -o json)
    text=$(ct journalctl -u roomsync -o cat)
    echo "$(wc -l <<<"$json") entries of roomsync.service"
    if grep -q '"MESSAGE":\[' <<<"$json"; then echo "a MESSAGE stored as bytes"; return 1; fi
    if grep -q $'\e' <<<"$text"; then echo "ANSI escapes:"; grep $'\e' <<<"$text" | head -3 | cat -v; return 1; fi
    if grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' <<<"$text"; then echo "timestamps of its own"; return 1; fi
}

journal_has_no_secret() {
    local export
    export=$(ct journalctl -o export)
    echo "$(grep -ac '^MESSAGE=' <<<"$export") journal entries searched (all units)"
    ! grep -aF -e "$SECRET" -e standin-token- <<<"$export"
}

no_tick_held_back() {
    ! ct journalctl -u roomsync -o cat | grep -E "skipping this tick: (API budget|DingTalk)"
}

journal_has_no_denials() {
    ! ct journalctl -u roomsync -o cat | grep -iE "denied|not permitted|EPERM|EACCES|seccomp|SIGSYS|read-only file system"
}

no_dependency_chatter() {
    local targets
    targets=$(ct journalctl -u roomsync -o export | grep -a '^TARGET=' | sort | uniq -c)
    echo "$targets"
    ! grep -q tokio_cron_scheduler <<<"$targets"
}

modes_and_owners() {
    local files=(/var/lib/roomsync "$DB" "$DB-wal" "$DB-shm" "$DB.lock")
    ct stat -c "%a %U:%G %n" "${files[@]}"
    [ "$(ct stat -c "%a %U:%G" /var/lib/roomsync)" = "750 roomsync:roomsync" ] &&
        [ "$(ct stat -c "%a %U:%G" "${files[@]:1}" | sort -u)" = "640 roomsync:roomsync" ]
}

member_reads() {
    local n
    n=$(ct_as alice sqlite3 -readonly "$DB" "SELECT COUNT(*) FROM active_rooms")
    echo "alice (group roomsync): $n active rooms"
    [ "$n" = "$ROOMS" ]
}

non_member_cannot_read() {
    local out
    if out=$(ct_as bob sqlite3 -readonly "$DB" "SELECT COUNT(*) FROM rooms" 2>&1); then
        echo "bob read it: $out"
        return 1
    fi
    echo "bob (not in the group): $out"
}

status_refused_for_non_member() {
    local out code=0
    out=$(ct_as bob roomsync status 2>&1) || code=$?
    printf '%s\nexit %s\n' "$out" "$code"
    [ "$code" -eq 1 ] && grep -q "Permission denied" <<<"$out"
}

status_for() {
    local user=$1 out code=0
    out=$(ct_as "$user" roomsync status --max-age 1h --runs 3 2>&1) || code=$?
    printf '%s\nexit %s\n' "$out" "$code"
    [ "$code" -eq 0 ] && grep -q "fresh" <<<"$out"
}

stopped_cleanly() {
    local state
    state=$(ct systemctl show -p Result -p ExecMainStatus -p ActiveState roomsync | sort | tr '\n' ' ')
    echo "$state"
    [ "$state" = "ActiveState=inactive ExecMainStatus=0 Result=success " ]
}

watchdog_quiet() {
    local pid_before=$1
    ct systemctl show -p WatchdogUSec -p NRestarts -p MainPID -p ActiveState roomsync | sort | tr '\n' ' '
    echo
    [ "$(ct systemctl show -p MainPID --value roomsync)" = "$pid_before" ] &&
        [ "$(ct systemctl show -p NRestarts --value roomsync)" = 0 ] &&
        ct systemctl is-active roomsync >/dev/null &&
        ! ct journalctl -u roomsync | grep -i "watchdog timeout"
}

last_run_is() {
    local out
    out=$(sql "SELECT 'run ' || run_id || ' ' || status || coalesce(': ' || error, '') FROM sync_runs ORDER BY run_id DESC LIMIT 1")
    echo "$out"
    [[ $out =~ ^"run "[0-9]+" $1" ]]
}

same_digest() {
    echo "rooms, labels, groups and change feed: sha256 ${1%% *} before and ${2%% *} after"
    [ "$1" = "$2" ]
}

check_unit_and_journal() {
    check "at least three runs succeeded" wait_for_runs 3
    check "the unit is active and STATUS= shows the last run" unit_active_with_status
    check "journalctl -u roomsync RUN_ID=<id> shows each run's summary" summary_per_run
    check "journal fields RUN_ID, TRIGGER, the counts; INFO as priority info" journal_fields
    check "no ANSI escapes, no byte-array MESSAGE, no timestamp of its own" journal_clean
    check "the app secret and the access tokens are nowhere in the journal" journal_has_no_secret
    check "no seccomp or permission denials in roomsync's journal" journal_has_no_denials
    check "no tick was held back by the API budget" no_tick_held_back
    check "dependencies' chatter stays below INFO (no tokio_cron_scheduler lines)" no_dependency_chatter
}

reader_checks() {
    local when=$1
    check "a member of group roomsync reads the rooms with sqlite3 -readonly $when" member_reads
    check "a non-member cannot read the mirror $when" non_member_cannot_read
    check "roomsync status works for a member of group roomsync $when" status_for alice
    check "roomsync status tells a non-member why it cannot read $when" status_refused_for_non_member
}

check_files_and_readers() {
    check "/var/lib/roomsync is 0750, the database files 0640, all roomsync:roomsync" modes_and_owners
    ct useradd --no-create-home --groups roomsync alice
    ct useradd --no-create-home bob
    reader_checks "while the daemon runs"
    check "roomsync status works for root too" status_for root
}

check_stopped() {
    ct systemctl stop roomsync
    check "systemctl stop roomsync: stopped cleanly, exit 0" stopped_cleanly
    check "the -wal and -shm files stay after the daemon stopped" ct ls -l "$DB-wal" "$DB-shm"
    reader_checks "after the daemon stopped"
}

# A stop during a slow fetch: the stand-in is restarted serving changed rooms (revision 1)
# with 5 s per page, so the startup run fetches for 15 s; meanwhile more than two WatchdogSec
# pass, then systemctl stop interrupts the fetch.
check_slow_fetch_stop() {
    ct sh -c 'printf "PAGE_LATENCY=5s\nREVISION=1\n" >/etc/default/dingtalk-standin'
    ct systemctl restart dingtalk-standin
    local before after pid_before i t0 ms
    before=$(sql ".dump rooms labels room_labels room_groups room_changes" | sha256sum)
    ct systemctl start roomsync
    pid_before=$(ct systemctl show -p MainPID --value roomsync)
    for i in $(seq 1 100); do
        [ "$(sql "SELECT status FROM sync_runs ORDER BY run_id DESC LIMIT 1")" = running ] && break
        sleep 0.1
    done
    sleep $((2 * WATCHDOG_SEC + 1))
    check "the watchdog did not fire over $((2 * WATCHDOG_SEC + 1)) s (WatchdogSec=${WATCHDOG_SEC}s), a slow fetch under way" \
        watchdog_quiet "$pid_before"
    check "the run is still fetching" last_run_is running
    t0=$(date +%s%N)
    ct systemctl stop roomsync
    ms=$((($(date +%s%N) - t0) / 1000000))
    check "a stop during the slow fetch took ${ms} ms (< 5000)" test "$ms" -lt 5000
    check "... and exited 0" stopped_cleanly
    check "the run is recorded 'interrupted'" last_run_is interrupted
    after=$(sql ".dump rooms labels room_labels room_groups room_changes" | sha256sum)
    check "the mirrored data is unchanged" same_digest "$before" "$after"
}

remove_and_purge() {
    ct rm -rf /run/systemd/system/roomsync.service.d
    check "the enable symlink exists before removal" \
        ct ls -l /etc/systemd/system/multi-user.target.wants/roomsync.service
    ct apt-get remove -y roomsync >"$WORK/apt-remove.log" 2>&1
    check "apt remove keeps the conffile (and the operator's edits), removes the binary" \
        ct sh -c 'dpkg -l roomsync | grep "^rc" && grep -c standin-app-key /etc/roomsync/roomsync.toml && [ ! -e /usr/bin/roomsync ]'
    ct apt-get purge -y roomsync >"$WORK/apt-purge.log" 2>&1
    check "apt purge removes /etc/roomsync (with app_secret) and the enable symlink" \
        ct sh -c '[ ! -e /etc/roomsync ] && [ ! -e /etc/systemd/system/multi-user.target.wants/roomsync.service ] && echo gone'
    check "after purge no roomsync file is left outside /var/lib/roomsync (which keeps the mirror)" \
        ct sh -c 'left=$(find / -xdev \( -path /proc -o -path /sys -o -path /run -o -path /var/lib/roomsync \) -prune -o -name "*roomsync*" -print); [ -z "$left" ] || { echo "$left"; exit 1; }; ls /var/lib/roomsync'
}

boot
install_package
configure
check_unit_and_journal
check_files_and_readers
check_stopped
check_slow_fetch_stop
remove_and_purge

echo "system test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
