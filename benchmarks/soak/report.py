"""The soak's figures, the checks that must hold, and the markdown printed at the end. Pure.

Loss is counted against the ledger (:mod:`benchmarks.soak.ledger`): a
reading produced and not in InfluxDB is lost. A lost reading written to its
port within ``autosave_interval + LATENCY_S`` before a Mosquitto SIGKILL is
counted apart, as loss the broker's persistence allows (it had acknowledged
the reading, so the bridge deleted it, and had neither saved it nor handed
it to the hub). Any other loss, and any duplicate point, fails the soak.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchmarks.bench_harness import cell, machine_summary

Key = tuple[str, int, int]

LATENCY_S = 2.0  # port to broker, at most, in steady state: widens the SIGKILL window
RSS_GROWTH_MAX_PCT = 10.0
FD_SLACK = 5  # end may exceed warm-up by this many descriptors (a reconnect in progress)
THREAD_SLACK = 2


# ------------------------------------------------------------------ counts


def count_loss(
    produced: dict[Key, float], stored: list[Key], kills: Sequence[float], autosave_s: float
) -> dict[str, Any]:
    counts = Counter(stored)
    lost = sorted((k for k in produced if k not in counts), key=lambda k: produced[k])
    window = autosave_s + LATENCY_S
    bounded = [k for k in lost if any(kill - window <= produced[k] <= kill + 0.5 for kill in kills)]
    exposed = sum(1 for t in produced.values() if any(kill - window <= t <= kill + 0.5 for kill in kills))
    return {
        "produced": len(produced),
        "stored_points": len(stored),
        "stored_distinct": len(counts),
        "lost": len(lost) - len(bounded),
        "lost_to_broker_sigkill": len(bounded),
        "readings_in_sigkill_windows": exposed,
        "sigkill_window_s": window,
        "duplicates": sum(n - 1 for n in counts.values()),
        "unexpected": len(set(counts) - set(produced)),
        "lost_examples": [[*k, round(produced[k], 3)] for k in lost[:20]],
    }


# --------------------------------------------------------------- processes


def process_figures(samples: list[dict[str, Any]], name: str, warmup_s: float) -> dict[str, Any]:
    """RSS, descriptors, threads and CPU of one process: first sample, end of warm-up, end of the run."""
    rows = [(s["t_s"], s[name]) for s in samples if s.get(name) and s["phase"] in ("warmup", "run")]
    if not rows:
        return {}
    after = [(t, p) for t, p in rows if t >= warmup_s] or rows[-1:]
    first, warm, end = rows[0][1], after[0][1], after[-1][1]
    mib = [(t, p["rss_kb"] / 1024) for t, p in after]
    slope = None
    if len(mib) >= 3 and len({t for t, _ in mib}) > 1:
        slope = statistics.linear_regression([t for t, _ in mib], [m for _, m in mib]).slope * 3600
    span = rows[-1][0] - rows[0][0]
    cpu = (end["cpu_s"] or 0) - (first["cpu_s"] or 0)
    return {
        "rss_mib": {
            "first": round(first["rss_kb"] / 1024, 1),
            "warm": round(warm["rss_kb"] / 1024, 1),
            "end": round(end["rss_kb"] / 1024, 1),
            "max_after_warm": round(max(m for _, m in mib), 1),
        },
        "rss_growth_pct": round((end["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"] * 100, 2),
        "rss_slope_mib_per_h": None if slope is None else round(slope, 2),
        "fds": _series(rows, after, "fds"),
        "threads": _series(rows, after, "threads"),
        "cpu_s": round(cpu, 1),
        "cores": round(cpu / span, 3) if span > 0 else None,
        "warm_at_s": after[0][0],
        "end_at_s": after[-1][0],
    }


def _series(
    rows: list[tuple[float, dict[str, Any]]], after: list[tuple[float, dict[str, Any]]], key: str
) -> dict[str, int]:
    values = [p[key] for _, p in after]
    return {
        "first": rows[0][1][key],
        "warm": after[0][1][key],
        "end": after[-1][1][key],
        "min_after_warm": min(values),
        "max_after_warm": max(values),
    }


# ------------------------------------------------------------------ checks


def checks(
    counts: dict[str, Any],
    processes: dict[str, dict[str, Any]],
    faults: Sequence[Any],
    exits: dict[str, int | None],
    failures: Sequence[str],
) -> list[dict[str, Any]]:
    out = []

    def check(name: str, value: Any, must: str, ok: bool) -> None:
        out.append({"name": name, "value": value, "must": must, "ok": bool(ok)})

    check("readings lost", counts["lost"], "0", counts["lost"] == 0)
    check("duplicate points", counts["duplicates"], "0", counts["duplicates"] == 0)
    for name in ("bridge", "hub"):
        p = processes.get(name) or {}
        growth = p.get("rss_growth_pct")
        ok = growth is not None and growth < RSS_GROWTH_MAX_PCT
        shown = None if growth is None else f"{growth:+.1f}"
        check(f"{name} RSS growth after warm-up (%)", shown, f"< {RSS_GROWTH_MAX_PCT:g}", ok)
        for key, slack in (("fds", FD_SLACK), ("threads", THREAD_SLACK)):
            seen = p.get(key) or {}
            value = f"{seen.get('warm')} -> {seen.get('end')}"
            check(
                f"{name} {key}, warm-up -> end",
                value,
                f"end <= warm-up + {slack}",
                bool(seen) and seen["end"] <= seen["warm"] + slack,
            )
        check(f"{name} exit status on SIGTERM", exits.get(name), "0", exits.get(name) == 0)
    kinds = Counter(f.kind for f in faults)
    for kind in ("influx_kill", "broker_term", "broker_kill", "link_cut", "unplug"):
        check(f"{kind} injected", kinds[kind], ">= 1", kinds[kind] >= 1)
    unrecovered = [f"{f.n} {f.kind}" for f in faults if not f.recovered]
    check("faults not recovered from", ", ".join(unrecovered) or "none", "none", not unrecovered)
    check("other failures", "; ".join(failures) or "none", "none", not failures)
    return out


# ---------------------------------------------------------------- markdown


def _mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def _fault_text(f: dict[str, Any]) -> tuple[str, str]:
    d, r = f["details"], f["recovery"]

    def s(value: Any) -> str:
        return "-" if value is None else f"{value:g} s"

    kind = f["kind"]
    if kind == "influx_kill":
        what = (
            f"InfluxDB SIGKILL, down {s(d.get('down_s'))}; {d.get('readings_meanwhile')} readings meanwhile; "
            f"hub noticed after {s(d.get('hub_noticed_s'))}"
        )
        rec = f"hub backlog drained {s(r.get('backlog_drained_s'))} after InfluxDB was back"
    elif kind.startswith("broker_"):
        what = (
            f"Mosquitto {d.get('signal')}, restarted (down {s(d.get('down_s'))}); "
            f"hub session present: {d.get('hub_session_present')}"
        )
        rec = (
            f"bridge reconnected {s(r.get('bridge_reconnect_s'))}, hub {s(r.get('hub_reconnect_s'))} after; "
            f"all stored {s(r.get('caught_up_s'))} after"
        )
    elif kind == "link_cut":
        what = (
            f"bridge link cut {f['duration_s']:g} s; {d.get('readings_meanwhile')} readings meanwhile; "
            f"bridge noticed after {s(d.get('bridge_noticed_s'))}"
        )
        rec = (
            f"bridge reconnected {s(r.get('bridge_reconnect_s'))} after restore; its spool drained and "
            f"all stored {s(r.get('caught_up_s'))} after"
        )
    else:
        nodes = d.get("nodes", [])
        what = (
            f"{len(nodes)} ports gone {f['duration_s']:g} s ({', '.join(nodes)}); "
            f"{d.get('taken_back_by_unplug')} readings lost in the ptys"
        )
        rec = (
            f"bridge reopened the new ptys within {s(r.get('bridge_reopened_s'))}; "
            f"first new reading stored within {s(r.get('first_new_reading_stored_s'))}"
        )
    if f.get("note"):
        rec += f" **{f['note']}**"
    return what, rec


def markdown(results: dict[str, Any], info: dict[str, Any]) -> str:
    st, c = results["settings"], results["counts"]
    lines = [
        f"### Soak: {st['nodes']} nodes at {st['speed']:g}x, interval {st['interval_s']} s "
        f"({st['readings_per_s']:g} readings/s), {st['minutes']:g} min"
        + ("" if st.get("hub_watch", True) else ", hub without its watch (--hub-no-watch)"),
        "",
        machine_summary(info) + f"; Mosquitto autosave_interval {st['broker_autosave_interval_s']} s",
        "",
        "| figure | value | must |",
        "|---|---:|---|",
        f"| readings produced (the ledger, less {results['ledger']['taken_back_by_unplug']} taken by unplugs) "
        f"| {cell(c['produced'])} | |",
        f"| points stored (`soil_moisture`) | {cell(c['stored_points'])} | |",
    ]
    handled = results["final_status"].get("hub", {}).get("counters", {}).get("readings")
    if handled is not None:
        lines.append(
            f"| readings the hub wrote more than once (redelivered by the broker; the point is overwritten) "
            f"| {cell(handled - c['stored_distinct'])} | |"
        )
    for ch in results["checks"]:
        if ch["name"] == "readings lost":
            lines.append(
                f"| lost to a Mosquitto SIGKILL (written in the {c['sigkill_window_s']:g} s before one; "
                f"{c['readings_in_sigkill_windows']} readings were) | {c['lost_to_broker_sigkill']} | reported |"
            )
        mark = "" if ch["ok"] else " **FAILED**"
        lines.append(f"| {ch['name']} | {cell(ch['value'])} | {ch['must']}{mark} |")
    lines += [
        "",
        "| process | RSS MiB warm-up -> end (max) | growth | slope MiB/h | fds first -> warm-up -> end (min-max) "
        "| threads first -> warm-up -> end (min-max) | CPU-s (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in results["processes"].items():
        if not p or name not in ("bridge", "hub"):
            continue
        r, fd, th = p["rss_mib"], p["fds"], p["threads"]
        lines.append(
            f"| {name} | {r['warm']} -> {r['end']} ({r['max_after_warm']}) | {p['rss_growth_pct']:+.1f} % | "
            f"{cell(p['rss_slope_mib_per_h'])} | {fd['first']} -> {fd['warm']} -> {fd['end']} "
            f"({fd['min_after_warm']}-{fd['max_after_warm']}) | {th['first']} -> {th['warm']} -> {th['end']} "
            f"({th['min_after_warm']}-{th['max_after_warm']}) | {p['cpu_s']} ({p['cores']}) |"
        )
    others = [f"{name} {p['cores']}" for name, p in results["processes"].items() if p and name not in ("bridge", "hub")]
    lines += [
        "",
        "CPU, cores busy over the run: " + ", ".join(others) + " (Mosquitto and influxd restart, so not shown).",
    ]
    lines += ["", "| # | at | fault | what happened | recovery |", "|---:|---:|---|---|---|"]
    for f in results["faults"]:
        what, rec = _fault_text(f)
        lines.append(f"| {f['n']} | {_mmss(f['at_s'])} | {f['kind']} | {what} | {rec} |")
    samples = [s for s in results["samples"] if s["phase"] in ("warmup", "run", "drained")]
    if samples:
        step = max(1, round(len(samples) / 7))
        picked = samples[::step]
        if picked[-1] is not samples[-1]:
            picked.append(samples[-1])
        lines += [
            "",
            "| t | produced | stored | bridge MiB / fds / threads | hub MiB / fds / threads | bridge spool "
            "| hub backlog | load |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in picked:
            b, h = s.get("bridge") or {}, s.get("hub") or {}
            lines.append(
                f"| {_mmss(s['t_s'])}{' (drained)' if s['phase'] == 'drained' else ''} | {cell(s['produced'])} | "
                f"{cell(s['stored'])} | {_proc(b)} | {_proc(h)} | {cell(s['bridge_spool'])} | "
                f"{cell(s['hub_backlog'])} | {s['load_1m']} |"
            )
    lines += [
        "",
        f"Last readings stored {results['drain_at_end_s']} s after the garden stopped. "
        f"Result: **{'all must-hold figures hold' if results['ok'] else 'FAILED'}**.",
    ]
    return "\n".join(lines)


def _proc(p: dict[str, Any]) -> str:
    if not p:
        return "-"
    return f"{p['rss_kb'] / 1024:.1f} / {p['fds']} / {p['threads']}"
