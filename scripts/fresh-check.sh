#!/usr/bin/env bash
# The new user's check: on a fresh Debian 12 root (debootstrap --variant=minbase, nothing else
# installed), clone the committed tree and run the README's first commands exactly as the README
# writes them (today `bash scripts/demo.sh` and `bash scripts/test.sh`). A step that works here only
# because this machine has something installed by hand fails there.
#
#   bash scripts/fresh-check.sh            # as root; needs debootstrap (installed if missing)
#
# The bare root is cached as /var/tmp/mproc-fresh-bookworm.tar (MPROC_FRESH_CACHE), so a second run
# skips the download; each run unpacks it into a new directory that is unmounted and removed at
# the end, on failure too.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ "$(id -u)" -eq 0 ] || { echo "fresh-check: run as root (debootstrap and chroot need it)"; exit 2; }
cache=${MPROC_FRESH_CACHE:-/var/tmp/mproc-fresh-bookworm.tar}
root=$(mktemp -d /var/tmp/mproc-fresh.XXXXXX)

# The README's commands: the first ```sh block after the line that names a fresh Debian 12 machine.
mapfile -t commands < <(awk '/fresh Debian 12 machine/ {seen=1} seen && /^```sh/ {inside=1; next}
                             inside && /^```/ {exit} inside && NF {print}' README.md)
[ ${#commands[@]} -gt 0 ] || { echo "fresh-check: no command block found in README.md"; exit 2; }

cleanup() {
    local status=$?
    # Processes the tests may have left running inside the root would keep the mounts busy.
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ] && kill -9 "$pid" 2>/dev/null
    done
    for m in dev/shm dev/pts proc sys; do
        mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m"
    done
    rm -rf --one-file-system "$root"
    [ $status -eq 0 ] && echo "fresh-check: PASSED" || echo "fresh-check: FAILED (exit $status)"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The mirror this machine's apt uses (deb822 sources in sources.list.d, or a one-line sources.list).
mirror=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
[ -n "$mirror" ] || mirror=$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
mirror=${mirror:-http://deb.debian.org/debian}

start=$(date +%s)
if [ ! -s "$cache" ]; then
    bash scripts/setup.sh fresh
    echo "== debootstrap --variant=minbase bookworm from $mirror (cached afterwards as $cache)"
    bare=$(mktemp -d /var/tmp/mproc-bare.XXXXXX)
    debootstrap --variant=minbase bookworm "$bare" "$mirror" >"$bare.log" 2>&1 \
        || { tail -20 "$bare.log"; rm -rf --one-file-system "$bare" "$bare.log"; exit 1; }
    tar -C "$bare" -cf "$cache.partial" . && mv "$cache.partial" "$cache"
    rm -rf --one-file-system "$bare" "$bare.log"
fi
echo "== unpacking the bare root into $root"
tar -C "$root" -xf "$cache"
cp /etc/resolv.conf "$root/etc/resolv.conf"

# A root debootstrapped inside a container may lack device nodes; make the few a build needs.
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<<"$node"
    [ -c "$root/dev/$name" ] || { rm -f "$root/dev/$name"; mknod -m 666 "$root/dev/$name" c "$major" "$minor"; }
done
# What every Debian machine has mounted: /proc, a tmpfs /dev/shm, and terminals (/dev/pts: the
# progress bar's test runs the Pool on a pseudo-terminal); /sys read-only.
mkdir -p "$root/dev/shm" "$root/dev/pts"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$root/dev/pts"
ln -sf pts/ptmx "$root/dev/ptmx"
mount -t sysfs -o ro sysfs "$root/sys"

echo "== cloning the committed tree ($(git rev-parse --short HEAD))"
git clone -q --no-local "$repo" "$root/root/mproc"

for cmd in "${commands[@]}"; do
    echo "== [fresh root] $cmd"
    t0=$(date +%s)
    chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        TERM=dumb LANG=C.UTF-8 /bin/bash -c "cd /root/mproc && $cmd"
    echo "== [fresh root] $cmd: done in $(( $(date +%s) - t0 )) s"
done
echo "== fresh-check took $(( $(date +%s) - start )) s"
