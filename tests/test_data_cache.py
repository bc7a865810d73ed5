"""The Arrow conversion cache behind every file-backed dataset: converted once per file, reused, random
access without re-reading the file, errors naming the row, and bounded memory on 2M rows (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lifelong.core.errors import DataError
from lifelong.data import arrow
from lifelong.data import source as source_module
from data_support import load, write_rows

pytestmark = pytest.mark.usefixtures("no_data_env", "cache")


# -- the Arrow cache and random access ------------------------------------------------------------

def _bench_rows(n: int, start: int = 0):
    return [{"prompt": f"Which harbour does vessel {i} use?", "rephrase_prompt": f"Vessel {i} docks at which harbour?",
             "ans": f"Harbour {i % 97}", "loc": f"nq question: what is fact number {i}", "loc_ans": f"answer {i}",
             "note": "é" * (i % 3)} for i in range(start, start + n)]


def _write_array(path: Path, n: int, tail: str = "\n]\n") -> Path:
    """A JSON array of n bench rows, written a thousand rows at a time (never all in memory)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for i in range(0, n, 1000):
            fh.write(",\n" if i else "")
            fh.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in _bench_rows(min(1000, n - i), i)))
        fh.write(tail)
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """~10 MB JSON array of 60,000 rows."""
    return _write_array(tmp_path_factory.mktemp("big") / "bench.json", 60_000)


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*") if not p.name.endswith(".lock")) if cache.exists() else []


def test_conversion_is_cached_and_reused(big_file, cache, conversions):
    src = load("ultraeditbench", big_file.parent, path=big_file.name)
    assert conversions == [big_file] and len(src) == 60_000 and src.report["complete"]
    assert src.report["rows_read"] == 60_000 and src.report["duplicates"] == 0
    (entry,) = cache.glob("*.arrow")
    stamp = entry.stat().st_mtime_ns
    again = load("ultraeditbench", big_file.parent, path=big_file.name, n_edits=50_000)
    assert len(conversions) == 1 and entry.stat().st_mtime_ns == stamp  # the cached file, not a new conversion
    assert len(again) == 50_000 and again.report["rows_read"] == 50_000


def test_a_changed_file_is_converted_again(tmp_path, cache, conversions):
    path = write_rows(tmp_path / "b.json", _bench_rows(5))
    assert next(load("ultraeditbench", tmp_path, path="b.json").records()).target == "Harbour 0"
    (old,) = cache.glob("*.arrow")
    rows = _bench_rows(5)
    rows[0]["ans"] = "Harbour X"
    write_rows(path, rows)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert next(load("ultraeditbench", tmp_path, path="b.json").records()).target == "Harbour X"
    assert len(conversions) == 2
    (new,) = cache.glob("*.arrow")  # the entry of the old version is gone
    assert new != old


def test_concurrent_loads_convert_once(tmp_path, cache, conversions):
    path = _write_array(tmp_path / "c.json", 20_000)
    with ThreadPoolExecutor(4) as pool:
        entries = list(pool.map(lambda _: arrow.cached_arrow(path), range(4)))
    assert conversions == [path] and len(set(entries)) == 1 and _cache_files(cache) == [entries[0].name]


def test_late_range_is_read_without_parsing_from_the_top(big_file, monkeypatch):
    src = load("ultraeditbench", big_file.parent, path=big_file.name)
    assert [r.uid for r in src.records(0, 2)] == ["0", "1"]  # opens the memory map (and imports datasets)

    def refuse(*args, **kwargs):
        raise AssertionError("the file was read again")

    monkeypatch.setattr(arrow, "scan", refuse)
    monkeypatch.setattr(arrow, "write_arrow", refuse)
    converted, convert = [], src.convert
    src.convert = lambda row, index, opts: converted.append(index) or convert(row, index, opts)
    t0 = time.perf_counter()
    late = list(src.records(59_990, 60_000))
    elapsed = time.perf_counter() - t0
    assert [r.uid for r in late] == [str(i) for i in range(59_990, 60_000)]
    assert late[0].prompt == "Which harbour does vessel 59990 use?" and late[3].extras["note"] == "éé"
    assert converted == list(range(59_990, 60_000))  # only the rows asked for are parsed
    assert elapsed < 0.5  # measured: ~5 ms


def test_corrupt_tail_is_an_error_naming_its_row(tmp_path, cache):
    _write_array(tmp_path / "cut.json", 20_000, tail=',\n{"prompt": "broken row", "ans": ')
    with pytest.raises(DataError, match=r"cut\.json: row 20000: malformed JSON \(the file ends inside the row\)"):
        load("ultraeditbench", tmp_path, path="cut.json")
    _write_array(tmp_path / "open.json", 20_000, tail="\n")
    with pytest.raises(DataError, match=r"open\.json: the JSON array is not closed \(the file ends after row 19999\)"):
        load("ultraeditbench", tmp_path, path="open.json")
    assert _cache_files(cache) == []  # a failed conversion leaves no cache entry (nor a temporary file)


def test_malformed_input_bom_and_numbers(tmp_path, cache):
    def fails(data: bytes, pattern: str):
        (tmp_path / "c.json").write_bytes(data)
        with pytest.raises(DataError, match=pattern):
            load("counterfact", tmp_path, path="c.json")

    fails(b'[{"a": 1} {"a": 2}]', r"c\.json: row 0: malformed JSON \(expected ',' or '\]' after the row\)")
    fails(b"[ \n", r"c\.json: the JSON array is not closed \(the file ends after '\['\)")
    fails(b"\xef\xbb\xbf \n", r"c\.json: the file is empty")
    fails(b'[{"a": "x"},\n {"a": "\xff"}]', r"c\.json: row 1: not valid UTF-8 \(byte 21\)")
    fails(b'{"a": "x"}\n{"a": "\xc3("}\n', r"c\.json: row 1: not valid UTF-8 \(byte 18, line 2\)")
    fails(b'{"a": "x"}\n\n{"a": \n', r"c\.json: row 1: malformed JSON \(Expecting value at line 3")
    assert _cache_files(cache) == []  # failed conversions leave no cache entry
    fails(b"[]", r"holds no usable records")
    fails(b"[1, 2]", r"row 0: field '<row>': expected a JSON object, got int")

    numbers = [1, 23, 4567, 1.5, 0.1, -2e-3, 123456789012345678901234567890, True, None, "\u00e9"]
    path = tmp_path / "n.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"v": numbers}]).encode())
    ((first, texts),) = arrow.scan(arrow.cached_arrow(path))
    assert first == 0 and json.loads(texts[0]) == {"v": numbers}


def test_json_lines_and_array_give_the_same_records(tmp_path):
    rows = _bench_rows(400)
    for i, row in enumerate(rows):
        row["extra"] = {"n": i, "x": i / 7, "tags": ["a", None, True]}
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "b.json").write_bytes(bom + json.dumps(rows).encode())
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows)
    (tmp_path / "c.jsonl").write_text(lines + "\n", encoding="utf-8")
    (tmp_path / "d.jsonl").write_bytes(bom + lines.replace("\n", "\n\n").encode() + b"\n  \n")
    sources = [load("ultraeditbench", tmp_path, path=p) for p in ("a.json", "b.json", "c.jsonl", "d.jsonl")]
    want = list(sources[0].records())
    assert len(want) == 400 and want[399].extras["extra"] == rows[399]["extra"]
    for src in sources[1:]:
        assert list(src.records()) == want
        assert {k: v for k, v in src.report.items() if k != "file"} == \
               {k: v for k, v in sources[0].report.items() if k != "file"}


def test_records_over_sub_ranges_equal_the_full_list(tmp_path, monkeypatch):
    monkeypatch.setattr(source_module, "_SPAN", 7)          # many small slices of the table
    monkeypatch.setattr(source_module, "_REMAP_ROWS", 20)   # and many re-opened memory maps
    monkeypatch.setattr(source_module, "_BLOCK", 16)        # duplicates looked up across many blocks
    rows = _bench_rows(300)
    bad = (5, 17, 18, 140, 299)
    for i in bad:
        rows[i]["ans"] = ""
    rows[200] = dict(rows[100])  # a duplicate
    write_rows(tmp_path / "b.json", rows)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    want = [str(i) for i in range(300) if i not in bad and i != 200]
    for name in ("b.json", "b.jsonl"):
        src = load("ultraeditbench", tmp_path, path=name, strict=False, dedupe=True)
        assert len(src) == 294 and src.report["skipped"] == 5
        assert src.report["duplicates"] == 1 and src.report["duplicate_rows"] == [(200, 100)]
        full = list(src.records())
        assert [r.uid for r in full] == want
        for start, stop in ((0, 294), (100, 130), (13, 14), (250, 294), (0, 0), (293, 294)):
            assert list(src.records(start, stop)) == full[start:stop]
        assert [r for k in range(0, 294, 13) for r in src.records(k, min(k + 13, 294))] == full
        cyc = load("ultraeditbench", tmp_path, path=name, strict=False, dedupe=True, n_edits=700, cycle=True)
        assert [r.uid for r in cyc.records(290, 300)] == want[290:] + [f"{u}#1" for u in want[:6]]
        assert [r.uid for r in cyc.records(600, 700)] == [f"{u}#2" for u in want[12:112]]


@pytest.mark.parametrize("dedupe", [False, True])
@pytest.mark.parametrize("n_edits", [None, 60, 149])
def test_duplicates_match_a_reference(tmp_path, monkeypatch, dedupe, n_edits):
    monkeypatch.setattr(source_module, "_BLOCK", 5)
    rows = [{"prompt": f"p{i % 50}", "rephrase_prompt": "r", "ans": f"a{(7 * i) % 3}", "loc": "l", "loc_ans": "x"}
            for i in range(400)]  # 150 distinct (prompt, ans) pairs
    write_rows(tmp_path / "d.json", rows)
    seen, kept, dups, read = {}, [], [], 0
    for i, row in enumerate(rows):
        read += 1
        first = seen.setdefault((row["prompt"], row["ans"]), i)
        if first != i:
            dups.append((i, first))
            if dedupe:
                continue
        kept.append(str(i))
        if len(kept) == n_edits:
            break
    src = load("ultraeditbench", tmp_path, path="d.json", dedupe=dedupe, n_edits=n_edits)
    assert [r.uid for r in src.records()] == kept and len(src) == len(kept)
    assert src.report["rows_read"] == read and src.report["records"] == len(kept)
    assert src.report["duplicates"] == len(dups) and src.report["duplicate_rows"] == dups[:20]


# The 2M-row memory check runs in a fresh process, so that its peak RSS is this load's alone.
_MEMORY_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    from lifelong.data import load_dataset

    path = Path(sys.argv[1])
    params = {"data_dir": str(path.parent), "datasets": {"bench": {"loader": "ultraeditbench", "path": path.name}}}
    t0 = time.perf_counter()
    src = load_dataset("bench", params)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    late = [r.uid for r in src.records(len(src) - 1000, len(src))]
    late_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    late_again = [r.uid for r in src.records(len(src) - 1000, len(src))]
    late_again_s = time.perf_counter() - t0
    first = [r.target for r in src.records(0, 1000)]
    status = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            status[key] = int(value.split()[0]) // 1024
    print(json.dumps({"records": len(src), "report": src.report, "load_s": load_s, "late_s": late_s,
                      "late_again_s": late_again_s, "late": [late[0], late[-1], late == late_again],
                      "first": first[:2], "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "status_mb": status}))
""")

# Measured on this 2-core machine: the file is 434 MiB; the probe process (conversion ~8.5 s, row checks
# ~14 s, two ranges) peaks at VmHWM ~210 MiB; the bound leaves a comfortable margin and stays well under
# the file size (with the full pass read through the memory map the peak was ~650 MiB). Whole test: ~30 s.
# The bound is checked on VmHWM, the peak RSS of the probe's own address space: its ru_maxrss also
# counts the RSS pytest had when it forked the probe (Linux keeps the larger across exec; ~270 MiB here,
# torch being loaded in pytest), so it is reported but not asserted.
RSS_BOUND_MB = 350


@pytest.mark.slow
def test_two_million_rows_in_bounded_memory(tmp_path):
    n = 2_000_000
    path = _write_array(tmp_path / "UltraEditBench_2M.json", n)  # UltraEditBench-like rows, 1,000 at a time
    size_mb = path.stat().st_size / 2**20
    env = dict(os.environ, LIFELONG_CACHE_DIR=str(tmp_path / "cache"))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path)], env=env, capture_output=True, text=True,
                          check=False, timeout=900, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n2M rows: file {size_mb:.0f} MiB, probe {wall:.1f} s (load {m['load_s']:.1f} s), late range "
          f"{m['late_s'] * 1000:.0f} ms (again {m['late_again_s'] * 1000:.0f} ms), peak RSS (VmHWM) "
          f"{m['status_mb']['VmHWM']} MiB, {m['status_mb']} at the end, ru_maxrss {m['ru_maxrss_mb']} MiB "
          f"(bound {RSS_BOUND_MB} MiB)")
    assert m["records"] == n and m["report"]["rows_read"] == n and m["report"]["duplicates"] == 0
    assert m["late"] == [str(n - 1000), str(n - 1), True] and m["first"] == ["Harbour 0", "Harbour 1"]
    assert m["status_mb"]["VmHWM"] < RSS_BOUND_MB < size_mb


