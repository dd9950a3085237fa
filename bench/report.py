"""Results as JSON, a markdown table with the targets, and PNG plots (matplotlib, the ``bench`` extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Issue 19's goals: each scenario's rate as a share of the reference server's on the same store.
REFERENCE_GOALS = {"post-state": 0.8, "create": 0.8, "get-build": 0.6, "auth-ping": 0.6}


def pacing(load: dict[str, Any]) -> str:
    """How a paced load was sent: open loop (``bench/lua/paced.lua``, latency from the scheduled send time)
    or, in results of older benches, wrk's ``delay()`` (closed loop: a slow answer holds the next send)."""
    return "open loop" if load.get("open_loop") else "closed-loop (wrk delay)"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, where we stand, met?) for each goal of the performance issue that this run measured."""
    rows: list[tuple[str, str, bool | None]] = []
    scenarios = results.get("scenarios", {})
    for kind, goal in (("postgresql", "pg-one-statement"), ("sqlite", "sqlite-transaction")):
        found = scenarios.get(f"post-state/{kind}")
        if found and found.get("ratio") is not None:
            rows.append(
                (f"POST state on {kind} >= 50% of {goal}", f"{found['ratio']:.0%}", found["ratio"] >= 0.5)
            )
    for kind in ("postgresql", "sqlite"):
        for name, share in REFERENCE_GOALS.items():
            found = scenarios.get(f"{name}-vs-reference/{kind}")
            if found and found.get("ratio") is not None:
                rows.append(
                    (f"{name} on {kind} >= {share}x the reference server", f"{found['ratio']:.2f}x",
                     found["ratio"] >= share)
                )  # fmt: skip
        for name in REFERENCE_GOALS:
            found = scenarios.get(f"{name}-vs-reference/{kind}")
            if found and found.get("p99_at_half_ms") is not None:
                half = found["at_half"]
                rows.append(
                    (f"p99 < 50 ms at half of max, {pacing(half)} ({name}, {kind})",
                     f"{half['p99_ms']:.1f} ms at {half['rps']:.0f} req/s", half["p99_ms"] < 50)
                )  # fmt: skip
                rows.append(
                    (f"no 200 ms tail at saturation ({name}, {kind})",
                     f"p99 {found['p99_at_max_ms']:.1f} ms at {found['rps']:.0f} req/s",
                     found["p99_at_max_ms"] < 200)
                )  # fmt: skip
    for kind in ("postgresql", "sqlite"):
        found = scenarios.get(f"auth-ping/{kind}")
        if found:
            cost = found["middleware_cost"]
            rows.append((f"middleware cost, authenticated GET ({kind}) <= 25%", f"{cost:.0%}", cost <= 0.25))
    for kind, curves in results.get("curves", {}).items():
        for name, points in curves.items():
            half = next((p for p in points if p["fraction"] == 0.5), None)
            if half:
                rows.append(
                    (
                        f"p99 < 50 ms at half of max, {pacing(half)} ({name}, {kind})",
                        f"{half['p99_ms']:.1f} ms at {half['rps']:.0f} req/s",
                        half["p99_ms"] < 50,
                    )
                )
    for kind, sizes in results.get("scale", {}).items():
        if len(sizes) < 2:
            continue
        ordered = sorted(sizes, key=int)
        small, large = sizes[ordered[0]], sizes[ordered[-1]]
        for query in large["queries"]:
            ratio = large["queries"][query]["median_ms"] / max(small["queries"][query]["median_ms"], 1e-6)
            label = f"{query} at {int(ordered[-1]):,} builds within 2x of {int(ordered[0]):,} ({kind})"
            rows.append((label, f"{ratio:.2f}x", ratio <= 2))
    res = results.get("resource")
    if res:
        over = res["check"]["over_bare_ms"]
        rows.append(("check within 150 ms of bare python start-up", f"+{over} ms", over <= 150))
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Bench results ({results.get('started')})", ""]
    m = results.get("machine", {})
    lines += [
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), {m.get('memory_gib', '?')} GiB, "
        f"Python {m.get('python')}, SQLite {m.get('sqlite')}, {m.get('postgresql_client', '')}. "
        f"{results['settings']['seconds']} s per measurement.",
        "",
    ]
    lines += ["## Targets", "", "| target | now | met |", "|---|---|---|"]
    for target, now, met in targets(results):
        lines.append(f"| {target} | {now} | {'yes' if met else 'no'} |")
    lines += ["", "## Ceilings", "", "| ceiling | per second | p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, c in results.get("ceilings", {}).items():
        rate = c.get("rps", c.get("tps"))
        lines.append(f"| {name} | {rate:.0f} | {c['p50_ms']} | {c['p99_ms']} |")
    for variant, points in results.get("sweeps", {}).items():
        lines += [
            "",
            f"## Sweep: {variant} (2 processes)",
            "",
            "| tasks x pool per process | tx/s | p99 ms |",
        ]
        lines.append("|---|---|---|")
        for point, c in points.items():
            lines.append(f"| {point} | {c['tps']:.0f} | {c['p99_ms']} |")
    lines += [
        "",
        "## Scenarios (through the service, real API key, 2 workers)",
        "",
        "| scenario | req/s | p50 ms | p95 ms | p99 ms | errors | ratio | to ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in results.get("scenarios", {}).items():
        lines.append(
            f"| {name} | {s['rps']:.0f} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['errors']} "
            f"| {s['ratio']} | {s['ceiling']} |"
        )
    lines += before_after(results) + at_half(results)
    for kind, curves in results.get("curves", {}).items():
        lines += [
            "",
            f"## Latency against offered load ({kind})",
            "",
            "| scenario | offered | achieved req/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        for name, points in curves.items():
            for p in sorted(points, key=lambda p: p["fraction"]):
                offered = (
                    "max"
                    if p["fraction"] == 1.0
                    else f"{p['fraction']:.0%} ({p['offered_rate']:.0f}/s, {pacing(p)})"
                )
                lines.append(f"| {name} | {offered} | {p['rps']:.0f} | {p['p50_ms']} | {p['p99_ms']} |")
    for kind, sizes in results.get("scale", {}).items():
        queries = list(next(iter(sizes.values()))["queries"])
        lines += [
            "",
            f"## Scale ({kind}): median ms",
            "",
            "| builds | events | artifacts | load s | " + " | ".join(queries) + " |",
            "|---|---|---|---|" + "---|" * len(queries),
        ]
        for size, r in sorted(sizes.items(), key=lambda x: int(x[0])):
            cells = " | ".join(str(r["queries"][q]["median_ms"]) for q in queries)
            lines.append(
                f"| {int(size):,} | {r['events']:,} | {r.get('artifacts', 0):,} | {r['load_seconds']} "
                f"| {cells} |"
            )
        for size, r in sorted(sizes.items(), key=lambda x: int(x[0])):
            for query, plan in r.get("plans", {}).items():
                lines += ["", f"<details><summary>plan: {query}, {int(size):,} builds ({kind})</summary>", ""]
                lines += ["```", plan, "```", "", "</details>"]
    res = results.get("resource")
    if res:
        lines += [
            "",
            f"## Resource scripts as processes ({res['interpreter']}, {res['runs']} runs)",
            "",
            "| script | median ms | p90 ms | over bare | peak RSS MiB |",
            "|---|---|---|---|---|",
        ]
        for name in ("bare", "check", "in", "out"):
            r = res[name]
            lines.append(
                f"| {name} | {r['median_ms']} | {r['p90_ms']} | +{r['over_bare_ms']} | {r['peak_rss_mib']} |"
            )
    return "\n".join(lines) + "\n"


def before_after(results: dict[str, Any]) -> list[str]:
    """The ``reference`` scenario with ``--before``: both checkouts and the reference, in the same rounds."""
    found = results.get("before_after", {})
    if not found:
        return []
    checkouts = results.get("settings", {}).get("checkouts", {})
    lines = ["", "## Before / after / reference (measured in the same rounds)", ""]
    lines += [
        f"- {side}: `{checkouts[side]['root']}` ({checkouts[side]['commit']})"
        for side in ("before", "after")
        if side in checkouts
    ]
    lines += [
        "",
        "| scenario | reference req/s | before req/s | after req/s | before / ref | after / ref (goal) "
        "| after / before (rounds) | p99 max, half: before | p99 max, half: after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    old = pacing({})  # the pacing of results from before the open-loop pacer
    for name, row in found.items():
        before, after = row["before"], row["after"]
        goal = REFERENCE_GOALS.get(name.split("/")[0])
        rounds = ", ".join(str(r) for r in row["round_after_over_before"])
        lines.append(
            f"| {name} | {row['reference_rps']:.0f} | {before['rps']:.0f} | {after['rps']:.0f} "
            f"| {before['ratio']:.2f} | {after['ratio']:.2f} ({goal}) "
            f"| {row['after_over_before']:.2f} ({rounds}) "
            f"| {before['p99_at_max_ms']}, {before['p99_at_half_ms']} ms ({before.get('half_pacing', old)}) "
            f"| {after['p99_at_max_ms']}, {after['p99_at_half_ms']} ms ({after.get('half_pacing', old)}) |"
        )
    return lines


def at_half(results: dict[str, Any]) -> list[str]:
    """p99 at saturation and paced at half of the maximum, for every scenario that measured both."""
    rows = {n: s for n, s in results.get("scenarios", {}).items() if s.get("p99_at_half_ms") is not None}
    if not rows:
        return []
    lines = [
        "",
        "## p99 at saturation and at half of the maximum",
        "",
        "Paced open loop unless the pacing column says otherwise: each connection sends on a fixed schedule "
        "and each latency counts from the request's scheduled send time (`bench/lua/paced.lua`).",
        "",
        "| scenario | max req/s | p99 at max ms | max ms | offered at half | pacing | achieved req/s "
        "| p99 at half ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        half = s["at_half"]
        lines.append(
            f"| {name} | {s['rps']:.0f} | {s['p99_at_max_ms']} | {s['max_ms']} "
            f"| {half['offered_rate']:.0f}/s | {pacing(half)} "
            f"| {half['rps']:.0f} | {half['p99_ms']} |"
        )
    return lines


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib  # noqa: PLC0415 - optional: the bench extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    written = []
    if results.get("curves"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for kind, curves in results["curves"].items():
            for name, points in curves.items():
                ordered = sorted(points, key=lambda p: p["rps"])
                xs = [p["rps"] for p in ordered]
                ax.plot(xs, [p["p99_ms"] for p in ordered], marker="o", label=f"{name} {kind} p99")
                ax.plot(
                    xs, [p["p50_ms"] for p in ordered], marker=".", linestyle="--", label=f"{name} {kind} p50"
                )
        ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("achieved load (req/s; paced at 10-90% of the maximum, then unpaced)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.set_title("Latency against offered load (2 workers)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "latency_vs_load.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if results.get("scale"):
        fig, ax = plt.subplots(figsize=(8, 5))
        for kind, sizes in results["scale"].items():
            ordered = sorted(sizes, key=int)
            for query in sizes[ordered[0]]["queries"]:
                ax.plot(
                    [int(s) for s in ordered],
                    [sizes[s]["queries"][query]["median_ms"] for s in ordered],
                    marker="o",
                    label=f"{query} ({kind})",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("builds (about 8 events each)")
        ax.set_ylabel("median query time, ms (decoding included)")
        ax.set_title("Read paths against data size")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "query_vs_size.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    # A run of a few scenarios updates those and keeps the rest of the last full picture.
    merged = {**previous, **{k: v for k, v in results.items() if not isinstance(v, dict)}}
    for key, value in results.items():
        if isinstance(value, dict):
            merged[key] = {**previous.get(key, {}), **value}
    json_path.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    md = out / "results.md"
    md.write_text(markdown(merged))
    return [json_path, md, *plots(merged, out)]
