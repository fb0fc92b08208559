# Shared by the .ci scripts: a clean copy of the template, and cargo-generate run on it.
# shellcheck shell=bash

# The repository root.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Copies the files git would commit (tracked, plus untracked files that are not ignored) into DIR.
# cargo-generate copies its whole source directory before applying `ignore`, target/ included,
# which costs gigabytes and breaks while a build writes there; a snapshot avoids both. A tree
# that is not a git checkout (check-update's copies of a snapshot) is copied whole, but target/.
snapshot() {
    local dir=$1
    mkdir -p "$dir"
    if ! git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$ROOT" && tar --exclude=./target -cf - .) | tar -xf - -C "$dir"
        return
    fi
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
    local status=0
    cargo generate --path "$template" --name "$name" --destination "$dest" \
        --silent --vcs none --no-workspace "$@" >/dev/null || status=$?
    rm -rf "$template"
    # Explicit: inside an `if`, `set -e` would not stop at a failed generation.
    return "$status"
}

die() {
    echo "error: $*" >&2
    exit 1
}

# Servers that start_server started and stop_server has not stopped yet. The scripts call
# stop_all from their EXIT trap, so a step that fails leaves no server running.
STARTED_PIDS=()

# stop_all: ends every server still running (SIGTERM, then waits for it).
stop_all() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}

# start_server BIN NAME: starts `BIN serve` on a free loopback port, set through the program's
# own environment variable (NAME_LISTEN, in upper case with `-` as `_`), logging JSON at info
# (whatever the project's default level: the address is read from the `listening` line) to a
# temporary file; with the HTTP front (a program whose `serve --help` offers --http-listen), on
# a free loopback port too. Sets SERVER_PID, SERVER_ADDR, SERVER_ADMIN_ADDR, SERVER_HTTP_ADDR
# (empty without the front) and SERVER_LOG.
start_server() {
    local bin=$1 name=$2 prefix http=()
    prefix=$(printf '%s' "$name" | tr 'a-z-' 'A-Z_')
    SERVER_LOG=$(mktemp)
    SERVER_ADDR="" SERVER_HTTP_ADDR=""
    if "$bin" serve --help | grep -q -- '--http-listen'; then
        http=("${prefix}_HTTP_LISTEN=127.0.0.1:0")
    fi
    env RUST_LOG=info "${prefix}_LISTEN=127.0.0.1:0" "${prefix}_ADMIN_LISTEN=127.0.0.1:0" "${http[@]}" \
        "$bin" serve --log-format json 2>"$SERVER_LOG" &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do
        SERVER_ADDR=$(grep -o '"local_addr":"[^"]*"' "$SERVER_LOG" | cut -d '"' -f 4 || true)
        # shellcheck disable=SC2034 # read by the scripts that source this file
        SERVER_ADMIN_ADDR=$(grep -o '"admin_addr":"[^"]*"' "$SERVER_LOG" | cut -d '"' -f 4 || true)
        SERVER_HTTP_ADDR=$(grep -o '"http_addr":"[^"]*"' "$SERVER_LOG" | cut -d '"' -f 4 || true)
        [ -n "$SERVER_ADDR" ] && { [ ${#http[@]} -eq 0 ] || [ -n "$SERVER_HTTP_ADDR" ]; } && return 0
        sleep 0.1
    done
    kill "$SERVER_PID" 2>/dev/null || true
    cat "$SERVER_LOG" >&2
    die "$name serve did not start listening"
}

# stop_server NAME SIGNAL: sends SIGNAL (TERM or INT) and requires a graceful exit with status 0.
stop_server() {
    local name=$1 signal=$2
    kill -"$signal" "$SERVER_PID"
    local status=0
    wait "$SERVER_PID" || status=$?
    local pid kept=()
    for pid in "${STARTED_PIDS[@]}"; do [ "$pid" = "$SERVER_PID" ] || kept+=("$pid"); done
    STARTED_PIDS=("${kept[@]}")
    [ "$status" -eq 0 ] || die "$name serve exited with status $status after SIG$signal"
    grep -q '"shutdown complete"' "$SERVER_LOG" || die "$name serve did not log a complete shutdown"
    grep -q "\"signal\":\"SIG$signal\"" "$SERVER_LOG" || die "$name serve did not log SIG$signal"
    rm -f "$SERVER_LOG"
}

# The seam of a generated project, relative to its root: one file per command, and the registry.
COMMANDS=crates/service/src/commands

# register MODULE SPEC: in the project in the current directory, the two registry lines, the module line where rustfmt wants it (in
# order) and the command at the end of REGISTRY.
register() {
    python3 - "$COMMANDS/mod.rs" "$1" "$2" <<'PYTHON'
import re, sys
path, module, spec = sys.argv[1:]
lines = open(path).read().split("\n")
# The run of `mod NAME;` lines that ends with the last one: the commands' (not `mod context;`).
last = max(i for i, line in enumerate(lines) if re.fullmatch(r"mod \w+;", line))
first = last
while re.fullmatch(r"mod \w+;", lines[first - 1]):
    first -= 1
lines[first:last + 1] = sorted(lines[first:last + 1] + [f"mod {module};"])
end = lines.index("];", lines.index("pub static REGISTRY: &[&Spec] = &["))
lines.insert(end, f"    &{module}::{spec},")
open(path, "w").write("\n".join(lines))
PYTHON
    if ! grep -q "^mod $1;\$" "$COMMANDS/mod.rs" || ! grep -q "^    &$1::$2,\$" "$COMMANDS/mod.rs"; then
        die "the registry lines for $2 were not added"
    fi
}

# unregister MODULE SPEC: deletes the command's file and its two registry lines.
unregister() {
    git rm --quiet "$COMMANDS/$1.rs"
    sed -i -e "/^mod $1;\$/d" -e "/^    &$1::$2,\$/d" "$COMMANDS/mod.rs"
    if grep -qE "^mod $1;\$|$1::$2" "$COMMANDS/mod.rs"; then die "the registry lines for $2 are still there"; fi
}

# add_upper: in the project in the current directory, the command `UPPER <text>` as the README's
# recipe adds a command: one new file and its two registry lines.
add_upper() {
    cat > "$COMMANDS/upper.rs" <<'RUST'
//! `UPPER <text>`: answered `OK <TEXT>`, the text in upper case. Added by the template's CI.

use super::{Context, Reply, Spec};
use crate::protocol::Response;

pub(super) const UPPER: Spec = Spec {
    name: "UPPER",
    usage: "<text>",
    help: "OK <text in upper case>",
    ends_connection: false,
    pushes: false,
    examples: &[("UPPER hi", "OK HI")],
    start,
};

fn start(argument: Option<&str>, _: &mut Context) -> Result<Reply, Response> {
    Ok(Reply::ready(Response::ok(argument.unwrap_or_default().to_uppercase())))
}

#[cfg(test)]
mod tests {
    use crate::commands::tests::{answer, context};

    #[tokio::test(flavor = "current_thread")]
    async fn answers_in_upper_case() {
        assert_eq!(answer("upper héllo wörld", &mut context()).await, "OK HÉLLO WÖRLD");
    }
}
RUST
    register upper UPPER
}
