#!/usr/bin/env python3
"""Summarises benches/load.sh rounds read from stdin, one result per line:
proxy|requests/s|p99 ms|errors|CPU "user+sys"|cores busy|IPIs|note|round.

Prints each proxy's median over the rounds, then, round by round, the requests/s
and p99 of ecslb (and of each ecslb variant but ecslb-nometrics) against those of
the better other proxy (the one with more requests/s): the target is at least its
requests/s with a p99 no worse than its.
The lowest p99 of the others is shown too. Compared with the lower of two noisy
values, even a proxy with the same p99 distribution wins only about a third of
the rounds.
"""
import statistics
import sys


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


runs = {}  # round -> proxy -> (rps, p99, user, sys)
order = []
for line in sys.stdin:
    fields = line.rstrip("\n").split("|")
    if len(fields) != 9:
        continue
    proxy, rps, p99, _errors, cpu, _busy, _ipis, _note, rnd = fields
    user, _, system = cpu.partition("+")
    values = tuple(number(v) for v in (rps, p99, user, system))
    if values[0] is None or values[1] is None:
        continue  # a failed run
    runs.setdefault(rnd, {})[proxy] = values
    if proxy not in order:
        order.append(proxy)

print(f"median over {len(runs)} rounds")
print(f"{'proxy':<16} {'requests/s':>12} {'p99 (ms)':>10} {'CPU us/req u+s':>16}")
for proxy in order:
    seen = [r[proxy] for r in runs.values() if proxy in r]
    med = [statistics.median(v[i] for v in seen if v[i] is not None) for i in range(4)]
    print(f"{proxy:<16} {med[0]:>12.2f} {med[1]:>10.3f} {med[2]:>8.2f}+{med[3]:.2f}")

# Each ecslb variant (ecslb, ecslb-poll, ...) against the better of the other proxies.
others_of = [p for p in order if not p.startswith("ecslb")]
for variant in [p for p in order if p.startswith("ecslb") and p != "ecslb-nometrics"]:
    if not others_of:
        break
    print()
    print(f"{'round':>5}  {variant + ' / better other, requests/s':<38}  {'p99 difference':<15}"
          f"  {'vs lowest other p99':<27}  target met")
    met = counted = 0
    for rnd, results in runs.items():
        others = {k: v for k, v in results.items() if k in others_of}
        if variant not in results or not others:
            continue
        rps, p99 = results[variant][:2]
        best = max(others, key=lambda k: others[k][0])
        lowest = min(others, key=lambda k: others[k][1])
        ok = rps >= others[best][0] and p99 <= others[best][1]
        met += ok
        counted += 1
        ratio = f"{100 * rps / others[best][0]:.1f} % of {best}"
        diff = f"{p99 - others[best][1]:+.3f} ms"
        low = f"{p99 - others[lowest][1]:+.3f} ms ({lowest})"
        print(f"{rnd:>5}  {ratio:<38}  {diff:<15}  {low:<27}  {'yes' if ok else 'no'}")
    print(f"{variant}: target met in {met} of {counted} rounds")
