#!/usr/bin/env bash
# Make the local Debian base image for builds with no container registry:
#
#   docker/make_base_image.sh [--force] [IMAGE]        # default IMAGE: local/debian:bookworm
#
# - debootstrap --variant=minbase of this host's Debian release, from the Debian mirror
#   configured in THIS host's apt sources (/etc/apt/sources.list, sources.list.d/*.list and
#   *.sources): no mirror or registry host name is written in this repository;
# - the image's apt sources are the host's entries for that release (main archive,
#   -updates, -security), so `apt-get install` in the Dockerfiles uses the same mirror;
# - the CA certificates this host added (/usr/local/share/ca-certificates, what Debian's
#   update-ca-certificates reads) are trusted in the image, so builds behind an HTTPS proxy
#   work as on the host. They are copied into the image at build time, never committed;
# - no docs, man pages or recommends (like the official slim images), apt caches emptied;
# - `docker import`, labelled with a digest of its inputs (release, sources, CA files):
#   an existing image with the same digest is kept (the slow part runs once per machine),
#   --force rebuilds.
#
# Needs root, debootstrap and a running Docker engine. Prints the image and its size.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
image="${1:-local/debian:bookworm}"

. /etc/os-release
codename="${VERSION_CODENAME:?cannot read VERSION_CODENAME from /etc/os-release}"

# The host's apt entries for this release, one "URI SUITE COMPONENTS" a line.
sources="$(python3 - "$codename" <<'PY'
import glob, re, sys
codename = sys.argv[1]
entries = []
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        continue
    for line in lines:
        line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 4 and line[0] == "deb":
            entries.append((line[1], line[2], line[3:]))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields, key = {}, None
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append((uri, suite, fields.get("components", "").split()))
seen = set()
for uri, suite, components in entries:
    if not uri.startswith(("http://", "https://")) or not (suite == codename or suite.startswith(codename + "-")):
        continue
    if (uri, suite) not in seen and "main" in components:
        seen.add((uri, suite))
        print(uri, suite, "main")
PY
)"
mirror="$(awk -v s="$codename" '$2 == s {print $1; exit}' <<<"$sources")"
if [ -z "$mirror" ]; then
  echo "make_base_image: no http(s) apt source for '$codename' with component main in /etc/apt/sources.list(.d)" >&2
  exit 1
fi

certs=(/usr/local/share/ca-certificates/*.crt)
[ -e "${certs[0]}" ] || certs=()
digest="$( { echo "$codename"; echo "$sources"; [ ${#certs[@]} -eq 0 ] || cat "${certs[@]}"; cat "$0"; } | sha256sum | cut -c1-16)"

if [ "$force" = 0 ] && [ "$(docker image inspect -f '{{index .Config.Labels "league.base.inputs"}}' "$image" 2>/dev/null)" = "$digest" ]; then
  echo "make_base_image: $image is current (inputs $digest), kept"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "make_base_image: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d /tmp/league-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT

echo "make_base_image: debootstrap --variant=minbase $codename (mirror from the host's apt sources)"
started=$SECONDS
debootstrap --variant=minbase --include=ca-certificates "$codename" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# Apt: the host's entries for this release; no recommends, no docs (as the slim images).
awk '{print "deb", $1, $2, $3}' <<<"$sources" >"$root/etc/apt/sources.list"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/90league-slim"
cat >"$root/etc/dpkg/dpkg.cfg.d/90league-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

# The host's extra CA certificates: trusted by OpenSSL, apt, pip (via PIP_CERT) in the image.
if [ ${#certs[@]} -gt 0 ]; then
  cp "${certs[@]}" "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
# As in the official Debian images: package scripts start no daemons during a build.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change "LABEL league.base.inputs=$digest" \
  --change 'CMD ["bash"]' \
  - "$image" >/dev/null
echo "make_base_image: $image built in $((SECONDS - started)) s, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
