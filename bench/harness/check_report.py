#!/usr/bin/env python3
"""bench/harness/check_report.py - opens a `cachegate selftest --html` report
in headless Chromium and checks that both plots rendered.

    python3 bench/harness/check_report.py REPORT.html [--screenshot OUT.png]

Two looks, standard library only (no pip install):
1. `chromium --headless --dump-dom`: the DOM Chromium built holds
   svg#latency-histogram with cold and warm bars and svg#throughput with its
   line and points.
2. `chromium --headless --screenshot`: the PNG (decoded here) has the plots'
   colours where the plots are: the cold (#d9622b) and warm (#2b6cd9) bars,
   the throughput line (#1f9d55), each well beyond its 12x12 legend square,
   and the histogram above the throughput plot.

Prints the figures of the report (its embedded JSON) and what it saw; exit 0
when both plots rendered, 1 when not, 2 when Chromium could not be run.
"""

import argparse
import html.parser
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

COLD = (0xD9, 0x62, 0x2B)
WARM = (0x2B, 0x6C, 0xD9)
LINE = (0x1F, 0x9D, 0x55)
LEGEND_PIXELS = 12 * 12
WINDOW = (1000, 1700)


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(binary, args, timeout=90):
    # A throwaway profile; no sandbox (this runs as root in CI); no GPU.
    with tempfile.TemporaryDirectory(prefix="selftest-chromium-") as profile:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
        ] + args
        return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)


class SvgCounter(html.parser.HTMLParser):
    """Counts marks inside each <svg id=...> of the dumped DOM."""

    def __init__(self):
        super().__init__()
        self.current = None
        self.marks = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and a.get("id"):
            self.current = a["id"]
            self.marks.setdefault(self.current, {})
            return
        if self.current is None:
            return
        key = tag
        if a.get("class"):
            key += "." + ".".join(a["class"].split())
        if a.get("id"):
            key += "#" + a["id"]
        counts = self.marks[self.current]
        counts[key] = counts.get(key, 0) + 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self.current = None


def decode_png(data):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {color}, interlace {interlace})")
    bpp = 4 if color == 6 else 3
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        ftype = raw[i]
        line = bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            up = prev[x]
            ul = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + left) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + up) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + ((left + up) >> 1)) & 0xFF
            elif ftype == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                line[x] = (line[x] + pred) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return width, height, rows


def colour_boxes(rows, colours):
    """For each colour: pixel count and bounding box (x0, y0, x1, y1)."""
    found = {c: [0, None] for c in colours}
    for y, row in enumerate(rows):
        for x, px in enumerate(row):
            entry = found.get(px)
            if entry is None:
                continue
            entry[0] += 1
            b = entry[1]
            entry[1] = (x, y, x, y) if b is None else (min(b[0], x), min(b[1], y), max(b[2], x), max(b[3], y))
    return found


def embedded_report(text):
    marker = 'id="selftest-data">'
    start = text.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = text.find("</script>", start)
    return json.loads(text[start:end])


def figures(report):
    out = []
    lat = report.get("latency", {})
    for name in ("cold", "warm", "concurrent"):
        s = lat.get(name)
        if s:
            out.append(
                f"  latency {name:<10} n={s['count']:<6} p50 {s['p50_ms']:.3f} ms  p90 {s['p90_ms']:.3f} ms  "
                f"p99 {s['p99_ms']:.3f} ms  max {s['max_ms']:.3f} ms"
            )
    hm = report.get("hit_miss") or {}
    if hm:
        out.append(
            f"  hit/miss: {hm['cold_misses']}/{hm['cold_requests']} cold fetches missed, "
            f"{hm['warm_hits']}/{hm['warm_requests']} warm fetches hit, p50 speed-up {hm.get('speedup_p50')}x"
        )
    c = report.get("concurrency") or {}
    if c:
        peak = max((s["rps"] for s in c["timeline"]), default=0)
        out.append(
            f"  concurrency: {c['requests']} requests, {c['workers']} workers, {c['elapsed_s']} s, "
            f"{c['throughput_rps']:.0f} req/s (peak slice {peak:.0f}), {c['errors']} errors, hit rate {c['hit_rate'] * 100:.1f}%"
        )
    inv = report.get("invalidation") or {}
    if inv:
        out.append(
            f"  invalidation: {inv['write']} -> {inv['write_status']}; next read {inv['read_cache']}, "
            f"shows new data: {inv['shows_new_data']}"
        )
    for chk in report.get("checks", []):
        out.append(f"  check {chk['name']:<13} {chk['status']:<8} {chk.get('detail') or chk.get('reason') or ''}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--screenshot", help="keep the screenshot here")
    args = ap.parse_args()
    path = os.path.abspath(args.report)
    text = open(path, encoding="utf-8").read()
    url = "file://" + path

    binary = chromium_binary()
    if not binary:
        print("check_report: no chromium binary (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 2
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"browser: {version or binary}")

    report = embedded_report(text)
    if report is None:
        print("check_report: the report has no embedded data", file=sys.stderr)
        return 1
    print(f"report: {path} ({len(text)} bytes), selftest {'passed' if report['ok'] else 'FAILED'}")
    for line in figures(report):
        print(line)

    problems = []

    # 1. The DOM Chromium built.
    dom = chromium(binary, ["--dump-dom", url])
    if dom.returncode != 0 or not dom.stdout:
        print(dom.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
        print("check_report: chromium --dump-dom failed", file=sys.stderr)
        return 2
    counter = SvgCounter()
    counter.feed(dom.stdout.decode("utf-8", errors="replace"))
    hist = counter.marks.get("latency-histogram", {})
    thr = counter.marks.get("throughput", {})
    cold_bars, warm_bars = hist.get("rect.bar.cold", 0), hist.get("rect.bar.warm", 0)
    line = thr.get("polyline.line#throughput-line", 0)
    points = thr.get("circle.point", 0)
    print(
        f"dom: svg#latency-histogram {cold_bars} cold + {warm_bars} warm bars; "
        f"svg#throughput {line} line, {points} points"
    )
    if not (cold_bars and warm_bars):
        problems.append("the histogram has no cold or no warm bars in the DOM")
    if not (line and points):
        problems.append("the throughput plot has no line in the DOM")

    # 2. The pixels Chromium painted.
    with tempfile.TemporaryDirectory(prefix="selftest-shot-") as tmp:
        shot = args.screenshot or os.path.join(tmp, "report.png")
        res = chromium(binary, [f"--screenshot={os.path.abspath(shot)}", url])
        if res.returncode != 0 or not os.path.exists(shot):
            print(res.stderr.decode(errors="replace")[-2000:], file=sys.stderr)
            print("check_report: chromium --screenshot failed", file=sys.stderr)
            return 2
        width, height, rows = decode_png(open(shot, "rb").read())
    boxes = colour_boxes(rows, (COLD, WARM, LINE))
    print(f"screenshot: {width}x{height}" + (f" -> {args.screenshot}" if args.screenshot else ""))
    for name, colour in (("cold bars", COLD), ("warm bars", WARM), ("throughput line", LINE)):
        count, box = boxes[colour]
        print(f"  {name:<16} #{bytes(colour).hex()}: {count:>6} px, box {box}")
        if count <= 3 * LEGEND_PIXELS:
            problems.append(f"{name}: only {count} pixels of #{bytes(colour).hex()} (legend alone is {LEGEND_PIXELS})")
    cold_box, warm_box, line_box = boxes[COLD][1], boxes[WARM][1], boxes[LINE][1]
    if cold_box and warm_box and line_box:
        # Bars sit above the throughput plot, and the line spans most of its width.
        if not max(cold_box[3], warm_box[3]) < line_box[1] + LEGEND_PIXELS:
            problems.append("the histogram is not above the throughput plot")
        if line_box[2] - line_box[0] < width * 0.4:
            problems.append(f"the throughput line spans only {line_box[2] - line_box[0]} px")

    if problems:
        for p in problems:
            print(f"NOT RENDERED: {p}")
        return 1
    print("plots rendered: latency histogram (cold and warm bars) and throughput over time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
