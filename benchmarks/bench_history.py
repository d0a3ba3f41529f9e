#!/usr/bin/env python3
"""A year of history: seed it, then time ``garden status``, ``garden readings`` and every dashboard query.

Run on demand (not part of the test suite)::

    .venv/bin/python benchmarks/bench_history.py --data-dir /tmp/garden-history [--reuse] [--runs 7] [--json out.json]

One private influxd 1.6 (free loopback port; its files in ``--data-dir``, or
a temp dir removed at the end). The database is made as ``garden hub init``
makes it (``garden.schema.ensure_schema``: ``raw`` 400 days, the default;
``hourly``; ``daily``), then seeded with a year of five-minute readings:
``--nodes`` (50) nodes over ``--beds`` (25) beds, six sensors each (soil
moisture, soil and air temperature, humidity, light, tank; docs/schema.md's
measurements and fields), diurnal and seasonal values with drydowns,
waterings and rain, about 31.5 million raw points; and the ``hourly`` and
``daily`` rollups, computed here while generating, as garden/rollups.py
defines them (mean under the field's name, ``<field>_min``, ``<field>_max``).
Besides the readings (``--no-extras`` leaves them out): each bed's
``water_need`` every 5 minutes (the hub writes one a minute), each node's
``node_status`` every 15 minutes, two bridge ports, watering and harvest
events and alert changes, so the dashboards' other panels have something to
read. With ``--reuse`` a data dir seeded before with the same arguments is
used as it is (seeding takes many minutes).

Honesty checks after seeding (exit 1 on a mismatch): the seeded lines equal
``garden.points.line``'s for the same point; the number of raw points per
measurement is what was generated; and for a sample of hours and days,
``garden.rollups.roll_up`` run over the seeded raw points writes the same
rollup values (within 1e-9) as were seeded.

Then, once influxd is quiet (compactions done), ``--runs`` times each:

* ``python -c "import garden.cli.app"`` (the CLI's start-up, for context);
* ``garden status`` and ``garden status --json``, the real CLI process with
  ``GARDEN_INFLUX_URL`` and ``GARDEN_GARDEN`` set, start-up included;
* ``garden readings <bed> --since 365d`` (and ``--json``; and ``--since 24h``,
  ``30d`` for context);
* every panel target and annotation query of every dashboard in
  dashboards/json (read now, not copied), with Grafana's expansion
  (tests/dashboards/grafana_queries.py: variables, ``$timeFilter``,
  ``$__interval`` for a 1920-pixel screen) over the last 24 h, 7 d and 365 d,
  through ``/query``. Template variables take their saved value, else the
  first option their own query finds (All where the board saves All),
  resolved again for each range as Grafana does (``$rp``: raw, hourly, daily).

Targets: status < 1 s, readings ``--since 365d`` < 2 s, each dashboard query
< 1 s (medians). Prints markdown tables; ``--json PATH`` writes everything.
Exit status: 0 when every target is met, 1 when a check failed or a target
was missed, 2 when the benchmark cannot be set up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_harness import BenchError, Influxd, load_1m, log, machine_info, machine_summary
from bench_harness import write_results as write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from garden.influx import Influx, InfluxSettings  # noqa: E402
from garden.points import line as point_line  # noqa: E402
from garden.rollups import DAILY, FIELDS, HOURLY, Period, roll_up  # noqa: E402
from garden.schema import ensure_schema  # noqa: E402
from tests.dashboards import grafana_queries as gq  # noqa: E402
from tests.dashboards import yaml_subset  # noqa: E402

DATABASE = "garden"
SLOT_MS = 300_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
SLOTS = DAY_MS // SLOT_MS  # 288
GARDEN_CLI = ROOT / ".venv" / "bin" / "garden"
PYTHON = ROOT / ".venv" / "bin" / "python"
DASHBOARDS = ROOT / "dashboards" / "json"
DATASOURCE_YAML = ROOT / "dashboards" / "provisioning" / "datasources" / "garden.yaml"
MARKER = "bench_history.json"

TARGET_STATUS_S = 1.0
TARGET_READINGS_S = 2.0
TARGET_QUERY_S = 1.0

# sensor, measurement, fields (in the order the hub writes them); docs/schema.md
SENSORS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sm0", "soil_moisture", ("raw", "vwc_pct")),
    ("st0", "soil_temperature", ("raw", "temp_c")),
    ("at0", "air_temperature", ("raw", "temp_c")),
    ("rh0", "air_humidity", ("raw", "rh_pct")),
    ("lx0", "light", ("raw", "lux")),
    ("tk0", "tank", ("raw", "distance_cm", "level_cm", "litres")),
)
TANK_DEPTH_CM = 120.0
LITRES_PER_CM = 10.0


# ================================================================ influxd


class HistoryInfluxd(Influxd):
    """influxd 1.6 on a free loopback port, its files under ``workdir/influxdb`` (kept between runs)."""

    def __init__(self, workdir: Path, index: str) -> None:
        # Opening a year of shards takes a while; so does flushing them at the stop.
        super().__init__(workdir, index=index, start_timeout_s=300, stop_timeout_s=60)

    def rss_mb(self) -> float | None:
        if self.proc is None:
            return None
        with contextlib.suppress(OSError), open(f"/proc/{self.proc.pid}/status") as handle:
            for text in handle:
                if text.startswith("VmRSS:"):
                    return round(int(text.split()[1]) / 1024, 1)
        return None

    def cpu_s(self) -> float:
        from bench_harness import cpu_seconds

        return cpu_seconds(self.proc.pid if self.proc else None) or 0.0


def disk_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return round(total / 1e6, 1)


# ================================================================ the garden


@dataclass
class NodeState:
    name: str
    bed: str
    index: int
    vwc: float
    trigger: float
    fc: float
    litres: float
    air_offset: float
    light_gain: float


@dataclass
class Aggregates:
    """The rollup points of the readings generated so far (line protocol), until written."""

    hourly: list[str] = field(default_factory=list)
    daily: list[str] = field(default_factory=list)


def noise_table(rng: random.Random, n: int = 10_007) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(n)]


def fmt(value: float) -> str:
    """A value rounded to one decimal, as line protocol (and ``repr``) writes it."""
    return f"{value:.1f}"


class Garden:
    """Deterministic year of readings for ``nodes`` nodes on ``beds`` beds."""

    def __init__(self, garden: str, nodes: int, beds: int, start_ms: int, end_ms: int, seed: int = 7) -> None:
        self.garden = garden
        self.start_ms = start_ms  # a UTC midnight
        self.end_ms = end_ms  # a five-minute mark; the last slot
        self.rng = random.Random(seed)
        self.noise = noise_table(self.rng)
        per_bed = max(1, math.ceil(nodes / beds))
        self.nodes = []
        for i in range(nodes):
            bed = f"bed-{i // per_bed + 1}"
            name = f"{bed}{chr(ord('a') + i % per_bed)}"
            self.nodes.append(
                NodeState(name, bed, i, vwc=30.0 + self.rng.uniform(-3, 3), trigger=self.rng.uniform(17, 22),
                          fc=self.rng.uniform(33, 38), litres=self.rng.uniform(600, 1000),
                          air_offset=self.rng.uniform(-0.8, 0.8), light_gain=self.rng.uniform(0.7, 1.0))
            )  # fmt: skip
        self.beds = sorted({n.bed for n in self.nodes}, key=lambda b: int(b.split("-")[1]))
        self.days = (end_ms - start_ms) // DAY_MS + 1
        self.waterings: list[tuple[int, str, str, float]] = []  # (ms, bed, node, litres)
        self.heads = {
            (n.name, sensor): f"{m},bed={n.bed},garden={garden},node={n.name},sensor={sensor} "
            for n in self.nodes
            for sensor, m, _f in SENSORS
        }

    def slots_of(self, day: int) -> int:
        day_start = self.start_ms + day * DAY_MS
        return min(SLOTS, (self.end_ms - day_start) // SLOT_MS + 1)

    def weather(self, day: int) -> tuple[float, float, float]:
        """(mean air temperature, cloud factor, rain mm) of a day, shared by the garden."""
        day_ms = self.start_ms + day * DAY_MS
        doy = time.gmtime(day_ms / 1000).tm_yday
        r = random.Random(day_ms)
        season = math.sin(2 * math.pi * (doy - 110) / 365)
        mean = 11.0 + 8.0 * season + r.gauss(0, 2.0)
        cloud = min(1.0, max(0.15, r.uniform(0.3, 1.1)))
        rain = r.uniform(3, 15) if r.random() < 0.25 else 0.0
        return mean, cloud, rain

    def day_lines(self, day: int, agg: Aggregates | None) -> Iterator[list[str]]:
        """The raw lines of one day, a list per node; the day's aggregates into ``agg``."""
        day_start = self.start_ms + day * DAY_MS
        n_slots = self.slots_of(day)
        doy = time.gmtime(day_start / 1000).tm_yday
        mean_air, cloud, rain = self.weather(day)
        daylen = 12.0 + 4.0 * math.sin(2 * math.pi * (doy - 80) / 365)
        sunrise = 12.0 - daylen / 2
        peak_lux = (40_000 + 40_000 * math.sin(2 * math.pi * (doy - 80) / 365) / 2 + 20_000) * cloud
        hours = [s * SLOT_MS / HOUR_MS for s in range(n_slots)]
        sun = [max(0.0, math.sin(math.pi * (h - sunrise) / daylen)) if sunrise < h < sunrise + daylen else 0.0
               for h in hours]  # fmt: skip
        diurnal = [math.sin(2 * math.pi * (h - 9) / 24) for h in hours]
        lagged = [math.sin(2 * math.pi * (h - 11) / 24) for h in hours]
        total_sun = sum(sun) or 1.0
        et_day = max(0.4, 1.2 + 0.25 * (mean_air - 8)) * (0.6 + 0.4 * cloud)  # % VWC lost per day
        rain_slot = 14 * 12 if rain else -1
        times = [day_start + s * SLOT_MS for s in range(n_slots)]
        noise = self.noise
        nn = len(noise)
        for node in self.nodes:
            k = (node.index * 7919 + day * 577) % nn
            heads = self.heads
            water_slot = 7 * 12 if node.vwc < node.trigger else -1
            lines: list[str] = []
            vwc_l: list[float] = []
            st_l: list[float] = []
            at_l: list[float] = []
            rh_l: list[float] = []
            lx_l: list[float] = []
            tk_l: list[float] = []
            vwc = node.vwc
            litres = node.litres
            seq0 = day * SLOTS
            for s in range(n_slots):
                z = noise[(k + s) % nn]
                z2 = noise[(k + 3 * s + 11) % nn]
                if s == water_slot:
                    vwc = node.fc
                    litres = max(0.0, litres - 25.0)
                    self.waterings.append((times[s], node.bed, node.name, 25.0))
                if s == rain_slot:
                    vwc = min(node.fc + 3, vwc + rain * 0.8)
                    litres = min(TANK_DEPTH_CM * LITRES_PER_CM * 0.95, litres + rain * 15)
                vwc -= et_day * sun[s] / total_sun
                vwc_l.append(round(max(5.0, vwc + 0.15 * z), 1))
                air = mean_air + node.air_offset + 5.5 * diurnal[s] * (0.5 + cloud / 2) + 0.3 * z2
                at_l.append(round(air, 1))
                st_l.append(round(mean_air - 1.0 + 1.8 * lagged[s] + 0.1 * z, 1))
                rh_l.append(round(min(100.0, max(20.0, 72 - 22 * diurnal[s] + 10 * (1 - cloud) * -1 + 2 * z2)), 1))
                lx_l.append(round(max(0.0, peak_lux * node.light_gain * sun[s] * (1 + 0.05 * z)), 0))
                distance = TANK_DEPTH_CM - litres / LITRES_PER_CM + 0.2 * z2
                tk_l.append(round(distance, 1))
            node.vwc, node.litres = vwc, litres
            h_sm, h_st, h_at = heads[(node.name, "sm0")], heads[(node.name, "st0")], heads[(node.name, "at0")]
            h_rh, h_lx, h_tk = heads[(node.name, "rh0")], heads[(node.name, "lx0")], heads[(node.name, "tk0")]
            columns: dict[str, dict[str, list[float]]] = {
                "sm0": {"raw": [], "vwc_pct": vwc_l}, "st0": {"raw": [], "temp_c": st_l},
                "at0": {"raw": [], "temp_c": at_l}, "rh0": {"raw": [], "rh_pct": rh_l},
                "lx0": {"raw": [], "lux": lx_l},
                "tk0": {"raw": tk_l, "distance_cm": tk_l, "level_cm": [], "litres": []},
            }  # fmt: skip
            sm_raw, st_raw, at_raw = columns["sm0"]["raw"], columns["st0"]["raw"], columns["at0"]["raw"]
            rh_raw, lx_raw = columns["rh0"]["raw"], columns["lx0"]["raw"]
            level_l, litres_l = columns["tk0"]["level_cm"], columns["tk0"]["litres"]
            for s in range(n_slots):
                t = times[s]
                tail = f",seq={seq0 + s + 1}i,boot=1i {t}"
                v = vwc_l[s]
                r = round(900.0 - 12.0 * v, 0)
                sm_raw.append(r)
                lines.append(f"{h_sm}raw={r:.1f},vwc_pct={v:.1f}{tail}")
                v = st_l[s]
                r = round(v * 16, 0)
                st_raw.append(r)
                lines.append(f"{h_st}raw={r:.1f},temp_c={v:.1f}{tail}")
                v = at_l[s]
                r = round(v * 16, 0)
                at_raw.append(r)
                lines.append(f"{h_at}raw={r:.1f},temp_c={v:.1f}{tail}")
                v = rh_l[s]
                r = round(v * 10, 0)
                rh_raw.append(r)
                lines.append(f"{h_rh}raw={r:.1f},rh_pct={v:.1f}{tail}")
                v = lx_l[s]
                r = round(v / 2, 0)
                lx_raw.append(r)
                lines.append(f"{h_lx}raw={r:.1f},lux={v:.1f}{tail}")
                d = tk_l[s]
                level = round(TANK_DEPTH_CM - d, 1)
                lit = round(level * LITRES_PER_CM, 1)
                level_l.append(level)
                litres_l.append(lit)
                lines.append(f"{h_tk}raw={d:.1f},distance_cm={d:.1f},level_cm={level:.1f},litres={lit:.1f}{tail}")
            if agg is not None:
                self._aggregate(agg, node, day, n_slots, columns)
            yield lines

    def _aggregate(self, agg: Aggregates, node: NodeState, day: int, n_slots: int,
                   columns: Mapping[str, Mapping[str, list[float]]]) -> None:  # fmt: skip
        """The node's hourly rollups of whole hours and, for a whole day, its daily rollups, as
        garden/rollups.py makes them: per field its mean under its name, <field>_min, <field>_max."""
        day_start = self.start_ms + day * DAY_MS
        for sensor, measurement, fields in SENSORS:
            cols = columns[sensor]
            tags = {"garden": self.garden, "bed": node.bed, "node": node.name, "sensor": sensor}
            for h in range(n_slots // 12):
                agg.hourly.append(point_line(measurement, tags, _rollup_fields(cols, fields, h * 12, (h + 1) * 12),
                                             day_start + h * HOUR_MS))  # fmt: skip
            if n_slots == SLOTS:
                agg.daily.append(point_line(measurement, tags, _rollup_fields(cols, fields, 0, SLOTS), day_start))

    # ------------------------------------------------------------ extras

    def extra_lines(self, day: int) -> list[str]:
        """water_need every 5 min per bed, node_status every 15 min per node, bridge ports, events, alerts."""
        day_start = self.start_ms + day * DAY_MS
        n_slots = self.slots_of(day)
        g = self.garden
        out = []
        r = random.Random(day_start)
        for b, bed in enumerate(self.beds):
            vwc = 12.0 + (b * 3.7 + day * 1.3) % 22
            for s in range(n_slots):
                t = day_start + s * SLOT_MS
                v = round(vwc - 0.01 * s, 1)
                level = 0 if v >= 20 else (1 if v >= 17 else (2 if v >= 14 else 3))
                state = ("ok", "soon", "needs_water", "critical")[level]
                hours_left = round(max(0.0, (v - 19.4) * 6), 1)
                out.append(
                    f'water_need,bed={bed},garden={g} state="{state}",level={level}i,vwc_pct={v:.1f},'
                    f"trigger_vwc=19.4,critical_vwc=15.7,fc_vwc=25.0,wp_vwc=12.0,hours_left={hours_left:.1f},"
                    f"hours_low={hours_left * 0.7:.1f},hours_high={hours_left * 1.5:.1f},et0_mm=3.1,kc=1.05,p=0.4 {t}"
                )
        for node in self.nodes:
            for s in range(0, n_slots, 3):
                t = day_start + s * SLOT_MS
                seq = day * SLOTS + s + 1
                out.append(
                    f"node_status,bed={node.bed},garden={g},node={node.name} online=true,interval_s=300i,"
                    f"last_seen={t}i,boot=1i,seq={seq}i,lost={seq // 5000}i,reboots=0i,readings={seq}i,"
                    f"battery_v=3900i {t}"
                )
        for port in ("ttyUSB0", "ttyUSB1"):
            for s in range(0, n_slots, 3):
                t = day_start + s * SLOT_MS
                frames = day * SLOTS * 25 + s * 25
                out.append(
                    f"bridge_port,bridge=shed,garden={g},port={port} open=true,frames={frames}i,opens=1i,"
                    f"rejected={frames // 2000}i,rejects_crc={frames // 2000}i {t}"
                )
        for t, bed, node_name, litres in self.waterings:
            if day_start <= t < day_start + DAY_MS:
                out.append(f'event,bed={bed},garden={g},node={node_name},type=watering text="{bed} watered",'
                           f'who="ana",litres={litres:.1f} {t}')  # fmt: skip
        if r.random() < 0.3:
            bed = r.choice(self.beds)
            t = day_start + 17 * HOUR_MS
            if t <= self.end_ms:
                out.append(f'event,bed={bed},garden={g},type=harvest text="3 kg courgette",who="ben",kg=3.0 {t}')
        if r.random() < 0.2:
            bed = r.choice(self.beds)
            for i, state in enumerate(("raised", "escalated", "resolved")):
                t = day_start + (10 + i * 3) * HOUR_MS
                if t <= self.end_ms:
                    out.append(f'alert,bed={bed},garden={g},kind=water,state={state},subject={bed} '
                               f'text="{bed} needs water",severity="warning" {t}')  # fmt: skip
        return out


def _rollup_fields(columns: Mapping[str, Sequence[float]], fields: Sequence[str], i: int, j: int) -> dict[str, float]:
    out = {}
    for f in fields:
        values = columns[f][i:j]
        total = 0.0
        for v in values:  # summed in time order, as InfluxDB does
            total += v
        out[f] = total / len(values)
        out[f"{f}_min"] = min(values)
        out[f"{f}_max"] = max(values)
    return out


# ================================================================ writing


class Writer:
    """POSTs line-protocol batches from a queue in a thread, while the generator makes the next ones."""

    def __init__(self, url: str, batch: int) -> None:
        import urllib3

        self.url = url
        self.batch = batch
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=300))
        self.q: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=6)
        self.error: str | None = None
        self.points = 0
        self.bytes = 0
        self.posts = 0
        self.retries = 0
        self.pending: dict[str, list[str]] = {}
        self.thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self.thread.start()

    def add(self, lines: Sequence[str], rp: str = "raw") -> None:
        buf = self.pending.setdefault(rp, [])
        buf.extend(lines)
        while len(buf) >= self.batch:
            chunk, self.pending[rp] = buf[: self.batch], buf[self.batch :]
            buf = self.pending[rp]
            self._put(rp, chunk)

    def _put(self, rp: str, chunk: Sequence[str]) -> None:
        if self.error:
            raise BenchError(self.error)
        self.points += len(chunk)
        self.q.put((rp, ("\n".join(chunk) + "\n").encode()))

    def flush(self) -> None:
        for rp, buf in self.pending.items():
            if buf:
                self._put(rp, buf)
        self.pending = {}

    def close(self) -> None:
        self.flush()
        self.q.put(None)
        self.thread.join()
        if self.error:
            raise BenchError(self.error)

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error:
                continue
            rp, body = item
            for attempt in range(30):
                try:
                    response = self.http.request(
                        "POST", f"{self.url}/write?db={DATABASE}&rp={rp}&precision=ms", body=body
                    )
                except Exception as err:  # reported, then the run stops
                    status, text = 0, str(err)
                else:
                    status, text = response.status, response.data.decode(errors="replace")[:300]
                if status == 204:
                    self.posts += 1
                    self.bytes += len(body)
                    break
                if status in (0, 500, 503) and attempt < 29:  # e.g. "cache-max-memory-size exceeded": wait
                    self.retries += 1
                    time.sleep(min(5.0, 0.2 * (attempt + 1)))
                    continue
                self.error = f"write to {rp} failed: HTTP {status}: {text}"
                break


# ================================================================ seeding


@dataclass
class SeedResult:
    raw_points: int = 0
    extra_points: int = 0
    hourly_points: int = 0
    daily_points: int = 0
    seconds: float = 0.0
    points_per_s: float = 0.0
    generate_cpu_s: float = 0.0
    influxd_cpu_s: float = 0.0
    influxd_rss_mb_max: float = 0.0
    write_retries: int = 0
    disk_mb: float = 0.0
    expected_counts: dict[str, int] = field(default_factory=dict)


def seed(server: HistoryInfluxd, garden: Garden, args: argparse.Namespace) -> SeedResult:
    res = SeedResult()
    agg = Aggregates()
    writer = Writer(server.url, args.batch)
    started, cpu0, icpu0 = time.monotonic(), time.process_time(), server.cpu_s()
    last_report = started
    for day in range(garden.days):
        for lines in garden.day_lines(day, agg):
            writer.add(lines)
        res.hourly_points += len(agg.hourly)
        res.daily_points += len(agg.daily)
        writer.add(agg.hourly, "hourly")
        writer.add(agg.daily, "daily")
        agg.hourly, agg.daily = [], []
        if args.extras:
            extra = garden.extra_lines(day)
            res.extra_points += len(extra)
            writer.add(extra)
        rss = server.rss_mb() or 0.0
        res.influxd_rss_mb_max = max(res.influxd_rss_mb_max, rss)
        now = time.monotonic()
        if now - last_report > 10 or day == garden.days - 1:
            last_report = now
            done = writer.points
            rate = done / (now - started)
            eta = (garden.days - day - 1) * (now - started) / (day + 1)
            log(f"seeding: day {day + 1}/{garden.days}, {done:,} points queued, {rate:,.0f} points/s, "
                f"influxd RSS {rss:,.0f} MB, about {eta:.0f} s left")  # fmt: skip
    writer.close()
    res.raw_points = writer.points - res.extra_points - res.hourly_points - res.daily_points
    res.expected_counts = {m: sum(garden.slots_of(d) for d in range(garden.days)) * len(garden.nodes)
                           for _s, m, _f in SENSORS}  # fmt: skip
    res.seconds = round(time.monotonic() - started, 1)
    total = res.raw_points + res.extra_points + res.hourly_points + res.daily_points
    res.points_per_s = round(total / res.seconds)
    res.generate_cpu_s = round(time.process_time() - cpu0, 1)
    res.influxd_cpu_s = round(server.cpu_s() - icpu0, 1)
    res.write_retries = writer.retries
    log(f"seeded {total:,} points in {res.seconds:.0f} s ({res.points_per_s:,} points/s), {writer.retries} retries")
    return res


# ================================================================ checks


def check_line_format(garden: Garden) -> list[str]:
    """Our fast f-strings must write exactly what garden.points.line writes."""
    problems = []
    probe = Garden(garden.garden, 2, 1, garden.start_ms, garden.start_ms + 2 * SLOT_MS)
    for lines in probe.day_lines(0, None):
        for text in lines:
            head, body, ts = text.rsplit(" ", 2)
            measurement, *tag_parts = head.split(",")
            tags = dict(p.split("=", 1) for p in tag_parts)
            fields: dict[str, float | int] = {}
            for part in body.split(","):
                k, v = part.split("=", 1)
                fields[k] = int(v[:-1]) if v.endswith("i") else float(v)
            again = point_line(measurement, tags, fields, int(ts))
            if again != text:
                problems.append(f"line format: ours {text!r}, garden.points.line {again!r}")
    return problems


def check_counts(influx: Influx, expected: Mapping[str, int]) -> list[str]:
    problems = []
    for measurement, count in expected.items():
        got = influx.query(f'SELECT count("raw") FROM "raw"."{measurement}"')
        n = got[0].values[0][1] if got and got[0].values else 0
        if n != count:
            problems.append(f"{measurement}: {n:,} raw points stored, {count:,} generated")
    return problems


def _rollup_snapshot(influx: Influx, period: Period, start: int, end: int) -> dict[tuple[Any, ...], float]:
    out: dict[tuple[Any, ...], float] = {}
    for measurement in FIELDS:
        series = influx.query(
            f'SELECT * FROM "{period.name}"."{measurement}" WHERE time >= $start AND time < $end',
            {"start": start * 1_000_000, "end": end * 1_000_000},
        )
        for s in series:
            for rec in s.records():
                for k, v in rec.items():
                    if isinstance(v, int | float) and k != "time":
                        out[(measurement, rec.get("node"), rec.get("sensor"), rec["time"], k)] = float(v)
    return out


def check_rollups(influx: Influx, garden: Garden, samples: int) -> tuple[list[str], int]:
    """For sample hours and days: garden.rollups.roll_up over the seeded raw points must
    write what was seeded (it overwrites the same points; within 1e-9)."""
    r = random.Random(11)
    last_hour = garden.end_ms - garden.end_ms % HOUR_MS  # the current hour is not rolled up
    windows: list[tuple[Period, int]] = []
    for _ in range(samples):
        h = r.randrange(garden.start_ms // HOUR_MS, last_hour // HOUR_MS) * HOUR_MS
        windows.append((HOURLY, h))
    full_days = (garden.end_ms - garden.start_ms) // DAY_MS
    for _ in range(max(1, samples // 3)):
        windows.append((DAILY, garden.start_ms + r.randrange(0, full_days) * DAY_MS))
    problems: list[str] = []
    compared = 0
    for period, start in windows:
        end = start + period.ms
        before = _rollup_snapshot(influx, period, start, end)
        roll_up(influx, period, start, end)
        after = _rollup_snapshot(influx, period, start, end)
        if set(before) != set(after):
            problems.append(f"{period.name} {start}: seeded {len(before)} values, roll_up {len(after)}")
            continue
        for key, seeded_value in before.items():
            compared += 1
            value = after[key]
            if not math.isclose(seeded_value, value, rel_tol=1e-9, abs_tol=1e-9):
                problems.append(f"{period.name} {key}: seeded {seeded_value!r}, roll_up wrote {value!r}")
    return problems[:20], compared


# ================================================================ timing


@dataclass
class Timing:
    what: str
    runs: list[float]
    target_s: float | None = None
    detail: str = ""
    failures: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def ok(self) -> bool:
        return self.failures == 0 and (self.target_s is None or self.median < self.target_s)

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "median_s": round(self.median, 4), "min_s": round(min(self.runs), 4),
                "max_s": round(max(self.runs), 4), "runs_s": [round(x, 4) for x in self.runs],
                "target_s": self.target_s, "ok": self.ok, "failures": self.failures,
                "detail": self.detail}  # fmt: skip


def time_process(what: str, argv: Sequence[str], env: Mapping[str, str], runs: int, target: float | None,
                 check: Callable[[str], str] | None = None, *, cwd: Path) -> Timing:  # fmt: skip
    t = Timing(what, [], target)
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(list(argv), env=dict(env), capture_output=True, text=True, timeout=120, cwd=cwd)
        t.runs.append(time.perf_counter() - started)
        if done.returncode != 0:
            t.failures += 1
            t.detail = (done.stderr or done.stdout).strip()[:300]
        elif check is not None:
            t.detail = check(done.stdout)
    return t


def time_query(http: Any, url: str, q: str, runs: int) -> tuple[list[float], int, str]:
    times = []
    rows, error = 0, ""
    for _ in range(runs):
        started = time.perf_counter()
        response = http.request("POST", f"{url}/query", fields={"q": q, "db": DATABASE, "epoch": "ms"})
        body = response.data
        times.append(time.perf_counter() - started)
        doc = json.loads(body)
        rows = 0
        for result in doc.get("results", []):
            if "error" in result:
                error = result["error"]
            for s in result.get("series", []):
                rows += len(s.get("values", []))
        if response.status != 200:
            error = body.decode(errors="replace")[:200]
    return times, rows, error


def datasource_min_interval() -> str | None:
    doc = yaml_subset.loads(DATASOURCE_YAML.read_text(), str(DATASOURCE_YAML))
    value: str | None = doc["datasources"][0]["jsonData"].get("timeInterval")
    return value


def walk_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


RANGES = (("24h", DAY_MS), ("7d", 7 * DAY_MS), ("365d", 365 * DAY_MS))


def dashboard_timings(url: str, now_ms: int, runs: int) -> list[dict[str, Any]]:
    import urllib3

    from garden.influx import Influx, InfluxSettings, Series

    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=5, read=600))
    reader = Influx(InfluxSettings(url=url, database=DATABASE, timeout_s=600))
    min_interval = datasource_min_interval()
    out: list[dict[str, Any]] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        variables: dict[str, gq.Variable] = {}
        probe_ctx = gq.Context(gq.TimeRange(now_ms - DAY_MS, now_ms), 300_000, {})
        for model in board.get("templating", {}).get("list", []):  # in order: a later one may use an earlier one
            ctx = gq.Context(probe_ctx.time_range, probe_ctx.interval_ms, dict(variables))
            q = gq.expand_query(model["query"], ctx)
            times, _rows, error = time_query(http, url, q, runs)
            response = http.request("POST", f"{url}/query", fields={"q": q, "db": DATABASE, "epoch": "ms"})
            series = [Series(s.get("name", ""), s.get("tags") or {}, tuple(s["columns"]),
                             tuple(tuple(v) for v in s.get("values", [])))
                      for r in json.loads(response.data).get("results", []) for s in r.get("series", [])]  # fmt: skip
            options = gq.metric_find_values(series)
            variables[model["name"]] = gq.Variable.from_model(model, options)
            out.append({"dashboard": path.name, "panel": f"variable ${model['name']}", "ref": "", "range": "-",
                        "query": q, "times": times, "rows": len(options), "error": error})  # fmt: skip
        queries: list[tuple[str, str, str, Mapping[str, Any] | None, bool]] = []
        for panel in walk_panels(board):
            for target in panel.get("targets", []):
                queries.append((f"{panel['id']} {panel.get('title', '')}", target["refId"], target["query"], panel,
                                False))  # fmt: skip
        for a in board.get("annotations", {}).get("list", []):
            if not a.get("builtIn") and a.get("query"):
                queries.append((f"annotation {a['name']}", "", a["query"], None, True))
        for label, span in RANGES:
            rng = gq.TimeRange(now_ms - span, now_ms)
            # As Grafana refreshes them on a time-range change: $rp picks raw, hourly or daily.
            variables = gq.resolve_variables(board, rng, lambda q: reader.query(q))
            for title, ref, text, model, is_annotation in queries:
                interval = gq.panel_interval_ms(model, rng, min_interval) if model else 300_000
                ctx = gq.Context(rng, interval, variables)
                q = gq.expand_annotation(text, ctx) if is_annotation else gq.expand_query(text, ctx)
                times, rows, error = time_query(http, url, q, runs)
                out.append({"dashboard": path.name, "panel": title, "ref": ref, "range": label, "query": q,
                            "times": times, "rows": rows, "error": error})  # fmt: skip
                log(f"  {path.name} {title} {ref} {label}: median {statistics.median(times):.3f} s, {rows} rows")
    return out


def wait_quiet(server: HistoryInfluxd, most_s: float) -> float:
    """Until influxd uses under 5 % of a core over 5 s (its compactions are done); the wait."""
    started = time.monotonic()
    while time.monotonic() - started < most_s:
        before = server.cpu_s()
        time.sleep(5)
        if (server.cpu_s() - before) / 5 < 0.05:
            break
    return round(time.monotonic() - started, 1)


# ================================================================ main


def markdown(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    text = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    text += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="influxd's files; kept (default: a temp dir, removed)")
    parser.add_argument("--reuse", action="store_true", help="use a data dir seeded before with the same arguments")
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--beds", type=int, default=25)
    parser.add_argument("--days", type=int, default=365, help="days of history before today")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command and query")
    parser.add_argument("--batch", type=int, default=10_000, help="lines per /write")
    parser.add_argument(
        "--index",
        choices=("inmem", "tsi1"),
        default="inmem",
        help="influxd's index-version (inmem: 1.6's default, as scripts/run.sh runs it)",
    )
    parser.add_argument(
        "--no-extras",
        dest="extras",
        action="store_false",
        help="readings and rollups only (no water_need, node_status, events, alerts)",
    )
    parser.add_argument("--rollup-samples", type=int, default=12, help="hours checked against roll_up (days: a third)")
    parser.add_argument("--no-dashboards", dest="dashboards", action="store_false")
    parser.add_argument("--garden", default="bench")
    parser.add_argument("--seed-only", action="store_true", help="seed (or --reuse) and check, then stop")
    parser.add_argument(
        "--pythonpath",
        type=Path,
        help="run the CLI from this copy of the code (e.g. `git archive HEAD` unpacked), for before/after",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    info = machine_info(load_1m(), influxd=True)
    workdir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-history-"))
    workdir.mkdir(parents=True, exist_ok=True)
    marker = workdir / MARKER
    shape = {k: getattr(args, k) for k in ("nodes", "beds", "days", "garden", "extras")}
    previous = json.loads(marker.read_text()) if marker.exists() else None
    reuse = bool(args.reuse and previous and previous.get("shape") == shape and previous.get("complete"))
    if args.reuse and not reuse:
        log("--reuse: no complete dataset with these arguments in the data dir; seeding")
    if not reuse and (workdir / "influxdb").exists():
        shutil.rmtree(workdir / "influxdb")
    server = HistoryInfluxd(workdir, args.index)
    problems: list[str] = []
    try:
        log(f"df {workdir}: {shutil.disk_usage(workdir).free / 1e9:.1f} GB free")
        server.start()
        influx = Influx(InfluxSettings(url=server.url, database=DATABASE, timeout_s=600))
        if reuse and previous is not None:
            seed_info = previous["seed"]
            end_ms = int(previous["end_ms"])
            garden = Garden(args.garden, args.nodes, args.beds, int(previous["start_ms"]), end_ms)
            log(f"reusing the dataset seeded {time.strftime('%Y-%m-%d %H:%M', time.gmtime(end_ms / 1000))} UTC")
            log("schema: " + ("; ".join(ensure_schema(influx)) or "as it was"))  # what a newer hub init adds
        else:
            now = int(time.time() * 1000)
            end_ms = now - now % SLOT_MS
            start_ms = end_ms - end_ms % DAY_MS - args.days * DAY_MS
            garden = Garden(args.garden, args.nodes, args.beds, start_ms, end_ms)
            influx.execute(f'DROP DATABASE "{DATABASE}"')
            done = ensure_schema(influx)
            log("schema: " + "; ".join(done))
            problems += check_line_format(garden)
            if problems:
                raise BenchError("; ".join(problems))
            marker.write_text(json.dumps({"shape": shape, "complete": False}))
            result = seed(server, garden, args)
            seed_info = {k: v for k, v in vars(result).items()}
            log("checking the stored counts")
            problems += check_counts(influx, result.expected_counts)
            seed_info["disk_mb"] = disk_mb(workdir / "influxdb")
            marker.write_text(json.dumps({"shape": shape, "complete": not problems, "start_ms": start_ms,
                                          "end_ms": end_ms, "seed": seed_info}))  # fmt: skip
        log("waiting for influxd to be quiet (compactions)")
        waited = wait_quiet(server, 900)
        log(f"quiet after {waited} s; influxd RSS {server.rss_mb()} MB")
        rollup_problems, compared = check_rollups(influx, garden, args.rollup_samples)
        problems += rollup_problems
        log(f"rollup check: {compared} values compared, {len(rollup_problems)} mismatches")

        if args.seed_only:
            return 1 if problems else 0
        env = {**os.environ, "GARDEN_INFLUX_URL": server.url, "GARDEN_GARDEN": args.garden,
               "GARDEN_INFLUX_DATABASE": DATABASE, "COLUMNS": "140"}  # fmt: skip
        for name in ("GARDEN_CONFIG", "GARDEN_INFLUX_TOKEN", "GARDEN_INFLUX_USERNAME", "GARDEN_INFLUX_READ_TOKEN",
                     "GARDEN_INFLUX_READ_USERNAME"):  # fmt: skip
            env.pop(name, None)
        if args.pythonpath:
            env["PYTHONPATH"] = str(args.pythonpath.resolve())
        bed = garden.beds[len(garden.beds) // 2]
        cwd = workdir / "cli-cwd"  # empty, so no ./garden.toml is read: the environment says it all
        cwd.mkdir(exist_ok=True)

        def readings_note(stdout: str) -> str:
            first = next((s for s in stdout.splitlines() if "Readings of" in s or "resolution" in s), "")
            return first.strip()[:160]

        timings = [
            time_process("python -c 'import garden.cli.app'", [str(PYTHON), "-c", "import garden.cli.app"], env,
                         args.runs, None, cwd=cwd),
            time_process("garden status", [str(GARDEN_CLI), "status"], env, args.runs, TARGET_STATUS_S, cwd=cwd),
            time_process("garden status --json", [str(GARDEN_CLI), "status", "--json"], env, args.runs,
                         TARGET_STATUS_S, cwd=cwd),
        ]  # fmt: skip
        for since in ("24h", "30d", "365d"):
            target = TARGET_READINGS_S if since == "365d" else None
            timings.append(time_process(f"garden readings {bed} --since {since}",
                                        [str(GARDEN_CLI), "readings", bed, "--since", since], env, args.runs, target,
                                        readings_note, cwd=cwd))  # fmt: skip
        timings.append(time_process(f"garden readings {bed} --since 365d --json",
                                    [str(GARDEN_CLI), "readings", bed, "--since", "365d", "--json"], env, args.runs,
                                    TARGET_READINGS_S, cwd=cwd))  # fmt: skip
        for t in timings:
            log(f"{t.what}: median {t.median:.3f} s{f' ({t.failures} failed: {t.detail})' if t.failures else ''}")
            if t.failures:
                problems.append(f"{t.what}: {t.failures} runs failed: {t.detail}")
        queries = dashboard_timings(server.url, end_ms + SLOT_MS, args.runs) if args.dashboards else []
        for q in queries:
            if q["error"]:
                problems.append(f"{q['dashboard']} {q['panel']} {q['range']}: {q['error']}")
        rss = server.rss_mb()
    finally:
        server.stop()
        if args.data_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    # ------------------------------------------------------------ report
    points = seed_info["raw_points"]
    print(f"\n## bench_history: {args.nodes} nodes x 6 sensors on {args.beds} beds, {args.days} days\n")
    print(machine_summary(info) + f"; influxd {info.get('influxd', '?')} (index {args.index}), runs {args.runs}\n")
    print(markdown([
        ["raw readings", f"{points:,}"],
        ["other raw points (water_need, node_status, ...)", f"{seed_info['extra_points']:,}"],
        ["hourly rollup points", f"{seed_info['hourly_points']:,}"],
        ["daily rollup points", f"{seed_info['daily_points']:,}"],
        ["seeding time", f"{seed_info['seconds']:,.0f} s"],
        ["points/s (all, written)", f"{seed_info['points_per_s']:,}"],
        ["generator CPU / influxd CPU", f"{seed_info['generate_cpu_s']:,} s / {seed_info['influxd_cpu_s']:,} s"],
        ["influxd RSS, max while seeding / at the end", f"{seed_info['influxd_rss_mb_max']:,} MB / {rss} MB"],
        ["influxd files", f"{seed_info['disk_mb']:,} MB"],
        ["rollup values checked against roll_up", f"{compared:,} ({len(rollup_problems)} mismatches)"],
    ], ("seeding", "")) + "\n")  # fmt: skip
    rows = [[t.what, f"{t.median:.3f}", f"{min(t.runs):.3f}", f"{max(t.runs):.3f}",
             "" if t.target_s is None else f"< {t.target_s:g} s",
             "-" if t.target_s is None else ("yes" if t.ok else "**NO**"),
             t.detail.replace("|", "/")] for t in timings]  # fmt: skip
    print(markdown(rows, ("command", "median s", "min s", "max s", "target", "met", "note")) + "\n")
    if queries:
        qrows = []
        for q in queries:
            med = statistics.median(q["times"])
            qrows.append([q["dashboard"], q["panel"].replace("|", "/"), q["ref"], q["range"], f"{med:.3f}",
                          f"{min(q['times']):.3f}", f"{max(q['times']):.3f}", q["rows"],
                          "yes" if med < TARGET_QUERY_S and not q["error"] else "**NO**"])  # fmt: skip
        print(markdown(qrows, ("dashboard", "panel", "ref", "range", "median s", "min s", "max s", "rows", "< 1 s")))
        slow = [q for q in queries if statistics.median(q["times"]) >= TARGET_QUERY_S]
        if slow:
            print("\nSlow dashboard queries (median >= 1 s):\n")
            for q in slow:
                print(f"- {q['dashboard']} {q['panel']} {q['ref']} {q['range']}: "
                      f"{statistics.median(q['times']):.2f} s\n  `{q['query']}`")  # fmt: skip
    missed = [t.what for t in timings if not t.ok] + [
        f"{q['dashboard']} {q['panel']} {q['range']}"
        for q in queries
        if statistics.median(q["times"]) >= TARGET_QUERY_S
    ]
    write_json(args.json, info, args, seed=seed_info, rollup_check={"compared": compared, "problems": rollup_problems},
               commands=[t.to_json() for t in timings],
               dashboards=[{**q, "median_s": round(statistics.median(q["times"]), 4),
                            "times": [round(x, 4) for x in q["times"]]} for q in queries],
               problems=problems, missed=missed)  # fmt: skip
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in problems))
        return 1
    if missed:
        print("\nTargets missed:\n" + "\n".join(f"- {m}" for m in missed))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        log(f"cannot run: {err}")
        sys.exit(2)
