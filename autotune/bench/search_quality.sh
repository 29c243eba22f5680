#!/usr/bin/env bash
# Search-quality benchmark: tunes the shapes of search_quality.toml exhaustively and with the
# guided strategy, then compares, per shape, the guided winner's time *as measured in the
# exhaustive run* (so run-to-run noise does not decide the comparison) with the exhaustive best,
# and the fraction of legal candidates the guided search measured.
#
# Usage: bash autotune/bench/search_quality.sh [OUT_DIR]   (takes minutes; holds the bench lock)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
cargo build --release --quiet --bin autotune
shapes=autotune/bench/search_quality.toml
rm -f "$out/exhaustive.toml" "$out/guided.toml"
# --stop-at 2: never stop early on the roofline, so the comparison is about the search itself.
flock /tmp/kiln-bench.lock ./target/release/autotune --shapes "$shapes" --strategy exhaustive --budget 100000 \
    --db "$out/exhaustive.toml" | tee "$out/exhaustive.txt"
flock /tmp/kiln-bench.lock ./target/release/autotune --shapes "$shapes" --strategy guided --stop-at 2 --budget 100000 \
    --db "$out/guided.toml" | tee "$out/guided.txt"
python3 - "$out" <<'PY'
import sys, tomllib, collections
out = sys.argv[1]
load = lambda name: tomllib.load(open(f"{out}/{name}.toml", "rb"))["record"]
ex, gu = load("exhaustive"), load("guided")
by_shape = lambda recs: collections.defaultdict(list, {})
E, G = collections.defaultdict(list), collections.defaultdict(list)
for r in ex: E[(r["kernel"], r["shape"])].append(r)
for r in gu: G[(r["kernel"], r["shape"])].append(r)
ok = lambda rs: [r for r in rs if r["status"] == "ok"]
worst = 0.0
print(f"{'kernel':24} {'shape':75} {'legal':>5} {'guided':>6} {'frac':>5} {'ex best us':>10} {'guided pick us':>14} {'ratio':>6}")
passed = True
for key in E:
    e = {r["config"]: r for r in E[key]}
    best = min(ok(E[key]), key=lambda r: (r["median_us"], r["config"]))
    pick = min(ok(G[key]), key=lambda r: (r["median_us"], r["config"]))
    t_pick = e[pick["config"]]["median_us"] if pick["config"] in e and e[pick["config"]]["status"] == "ok" else float("nan")
    ratio = t_pick / best["median_us"]
    frac = len(G[key]) / len(E[key])
    passed &= ratio <= 1.05 and frac <= 0.25
    print(f"{key[0]:24} {key[1]:75} {len(E[key]):5} {len(G[key]):6} {frac:5.2f} {best['median_us']:10.1f} {t_pick:14.1f} {ratio:6.3f}")
print("criterion (ratio <= 1.05, frac <= 0.25):", "met" if passed else "NOT met")
PY
