#!/usr/bin/env bash
# Builds sesame's Debian package: bash dist/deb.sh OUTDIR writes OUTDIR/sesame_VERSION_ARCH.deb
# and prints its path.
#
# VERSION: $VERSION, else the file VERSION, else 'git describe' of a vX.Y.Z tag
# (v1.2.3-4-gabcdef0 gives 1.2.3+git4.gabcdef0), else 0.0.0~gitYYYYMMDD.HASH of the last
# commit; "+dirty" is added when tracked files differ from it. The binary reports the same
# string ('sesame version'). GOARCH picks the architecture (default: this machine's).
# SOURCE_DATE_EPOCH (default: the last commit's time) dates the man pages and the files.
set -euo pipefail

out=${1:?usage: bash dist/deb.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=${VERSION:-}
if [[ -z $version && -f VERSION ]]; then
  version=$(tr -d ' \n' <VERSION)
fi
if [[ -z $version ]]; then
  if desc=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    version=${desc#v}
    if [[ $version =~ ^(.*)-([0-9]+)-(g[0-9a-f]+)$ ]]; then
      version="${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
    fi
  else
    version="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=7 HEAD)"
  fi
  [[ -z $(git status --porcelain) ]] || version+="+dirty"
fi
[[ $version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "deb.sh: version \"$version\" is not a Debian version" >&2; exit 1; }

goarch=${GOARCH:-$(go env GOARCH)}
case $goarch in
  amd64 | arm64 | riscv64 | s390x) debarch=$goarch ;;
  386) debarch=i386 ;;
  arm) debarch=armhf; export GOARM=${GOARM:-7} ;;
  ppc64le) debarch=ppc64el ;;
  *) echo "deb.sh: no Debian architecture for GOARCH=$goarch" >&2; exit 1 ;;
esac
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
ldflags="-s -w -X github.com/sesame-knock/sesame/internal/cli.Version=$version"
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$stage/sesame" ./cmd/sesame

# The man pages come from the text each command prints for -h (sesame __man), so they are
# made by a binary for this machine.
host=$stage/sesame
if [[ $goarch != "$(go env GOHOSTARCH)" ]]; then
  host=$stage/sesame-host
  env -u GOARCH -u GOARM CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$host" ./cmd/sesame
fi
mkdir -p "$stage/pages" "$stage/man/man1" "$stage/man/man8"
"$host" __man --date "$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)" "$stage/pages" >/dev/null
for page in "$stage"/pages/*.[18]; do
  sect=${page##*.}
  gzip -9n <"$page" >"$stage/man/man$sect/$(basename "$page").gz"
done

# copyright: sesame's, then the license of every module linked into the binary.
{
  cat dist/copyright
  CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go list -deps -f '{{with .Module}}{{.Path}} {{.Version}} {{.Dir}}{{end}}' ./cmd/sesame |
    sort -u | while read -r path modver dir; do
      [[ $path == github.com/sesame-knock/sesame ]] && continue
      lic=$(find "$dir" -maxdepth 1 -type f \( -iname 'licen[cs]e*' -o -iname 'copying*' \) | sort | head -1)
      [[ -n $lic ]] || { echo "deb.sh: no license file in $dir ($path)" >&2; exit 1; }
      printf '\n-------- %s %s --------\n\n' "$path" "$modver"
      cat "$lic"
    done
} >"$stage/copyright"

(cd dist/debpkg && env -u GOARCH -u GOARM -u GOOS go build -trimpath -o "$stage/debpkg" .)
deb=$out/sesame_${version}_${debarch}.deb
STAGE=$stage VERSION=$version DEB_ARCH=$debarch MAINTAINER=${MAINTAINER:-sesame packagers <sesame@localhost>} \
  "$stage/debpkg" -config dist/nfpm.yaml -o "$deb"
echo "$deb"
