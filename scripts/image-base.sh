#!/usr/bin/env bash
# scripts/image-base.sh DIR — the runtime base of Weir's image, unpacked into DIR (as root):
# Debian's glibc, iptables (nft) and the CA certificates, from this machine's Debian release
# and apt sources, with mmdebstrap. Both ways scripts/image.sh builds the image use it (the
# Dockerfile runs it in a build stage).
#
# The packages are unpacked, not installed: their maintainer scripts' work is done here (the
# CA bundle, iptables' default alternative, the users). What only those scripts need (openssl,
# debconf, awk) is removed again, and so is every program but the binaries' own and
# xtables-nft-multi: no shell, no package manager. The packages that stay are listed in
# /var/lib/dpkg/status.d/ (one control file each, as distroless images do), for scanners.
set -euo pipefail
# Removed after unpacking, with all their files.
scaffolding="openssl libssl3 debconf mawk"

if [ "${1:-}" = --extract-hook ]; then
  # mmdebstrap's hook: the new root, with the downloaded packages still in its apt cache.
  root=$2
  debs=$root/var/cache/apt/archives
  mkdir -p "$root/var/lib/dpkg/status.d"
  for deb in "$debs"/*.deb; do
    package=$(dpkg-deb -f "$deb" Package)
    if [[ " $scaffolding " == *" $package "* ]]; then
      dpkg-deb --fsys-tarfile "$deb" | tar -t | while read -r file; do
        [ -d "$root/$file" ] || rm -f "$root/$file"
      done
    else
      dpkg-deb -f "$deb" > "$root/var/lib/dpkg/status.d/$package"
    fi
  done
  cat "$root"/usr/share/ca-certificates/mozilla/*.crt > "$root/etc/ssl/certs/ca-certificates.crt"
  # Programs: xtables-nft-multi alone, under the names the sidecar's init runs it by.
  find "$root/usr/bin" "$root/usr/sbin" -mindepth 1 ! -name xtables-nft-multi -delete
  for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -s xtables-nft-multi "$root/usr/sbin/$name"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'weir-proxy:x:1337:1337:the sidecar:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:weir:/nonexistent:/sbin/nologin' > "$root/etc/passwd"
  printf '%s\n' root:x:0: weir-proxy:x:1337: nonroot:x:65532: > "$root/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' > "$root/etc/nsswitch.conf"
  chmod 1777 "$root/tmp"
  exit 0
fi

[ $# -eq 1 ] || { echo "usage: scripts/image-base.sh DIR" >&2; exit 2; }
dir=$1
command -v mmdebstrap >/dev/null || {
  echo "scripts/image-base.sh: mmdebstrap is missing (on Debian: apt-get install mmdebstrap)" >&2
  exit 1
}
# The release the binaries are built on (their glibc), from the sources apt already uses.
suite=${WEIR_BASE_SUITE:-$(. /etc/os-release && echo "$VERSION_CODENAME")}
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] && sources+=("$f")
done
mmdebstrap --variant=extract --quiet \
  --include=libc6,libgcc-s1,iptables,ca-certificates,base-files,netbase \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*' \
  --extract-hook="'$(cd "$(dirname "$0")" && pwd)/$(basename "$0")' --extract-hook \"\$1\"" \
  "$suite" "$dir" "${sources[@]}"
# What the build left: apt's own directories (its partial/ ones are _apt's), this machine's
# resolver and name, device nodes (the runtime brings /dev, resolv.conf and the hostname).
# And base-files' login scripts, for a shell the image does not have.
rm -rf "$dir/var/cache/apt" "$dir/var/lib/apt" "$dir/var/log/apt" "$dir/etc/apt" \
  "$dir/etc/resolv.conf" "$dir/etc/hostname" "$dir/etc/update-motd.d" "$dir/etc/profile.d"
find "$dir/dev" -mindepth 1 -delete
# Everything root's, nothing setuid or setgid (base-files' /var/local is group staff's).
chown -R 0:0 "$dir"
find "$dir" -perm /6000 -exec chmod ug-s {} +
