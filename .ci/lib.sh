# Shared by the .ci scripts: a clean copy of the template, and cargo-generate run on it.
# shellcheck shell=bash

# The repository root.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Copies the files git would commit (tracked, plus untracked files that are not ignored) into DIR.
# cargo-generate copies its whole source directory before applying `ignore`, target/ included,
# which costs gigabytes and breaks while a build writes there; a snapshot avoids both.
snapshot() {
    local dir=$1
    mkdir -p "$dir"
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$dir"
}

# generate NAME DEST [cargo-generate -d options...]: renders a snapshot of the template into
# DEST/NAME, non-interactively.
generate() {
    local name=$1 dest=$2
    shift 2
    local template
    template=$(mktemp -d)
    snapshot "$template"
    mkdir -p "$dest"
    cargo generate --path "$template" --name "$name" --destination "$dest" \
        --silent --vcs none --no-workspace "$@" >/dev/null
    rm -rf "$template"
}
