"""The HTML reports: pure crop math, a real export's report.html and a real run's, rendered in
headless Chromium (skipped, saying why, where no Chromium is installed), and `python -m
qdukd.report` driven as a hostile user would.

Expected values never come from the report code: tables are checked against report.json (the
gate wrote it) and log.csv / val.csv (the trainer wrote them), crops against arrays sliced here.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DEMO
from headless import Browser, find_chromium
from qdukd.checkpoint import load_checkpoint, student_from_checkpoint
from qdukd.images import to_tensor, to_uint8
from qdukd.models import build_model
from qdukd.quant import freeze
from qdukd.report import panels
from qdukd.report.__main__ import main as report_main
from qdukd.report.export_page import node_module
from qdukd.resize import imresize
from qdukd.train import main as train_main
from test_export_pipeline import _export, write_student

SCALE = 4


# -- pure image math ---------------------------------------------------------------------------
def test_lr_panel_and_crops_cover_the_same_pixels():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (10, 13, 3), dtype=np.uint8)
    box = panels.Box(8, 20, 16)
    assert np.array_equal(panels.crop(hr, box), hr[8:24, 20:36])
    got = panels.lr_panel(lr, box, SCALE)
    assert got.shape == (16, 16, 3)
    for y in range(16):  # every HR pixel of the panel shows the LR pixel it lies in
        for x in range(16):
            assert np.array_equal(got[y, x], lr[(8 + y) // 4, (20 + x) // 4])
    with pytest.raises(ValueError):
        panels.crop(hr, panels.Box(32, 0, 16))


def test_worst_box_is_scale_aligned_and_finds_the_error():
    error = np.zeros((48, 64), np.int32)
    error[21:27, 41:47] = 5  # straddles the 4-pixel grid
    box = panels.worst_box(error, 8, SCALE)
    assert (box.top % 4, box.left % 4, box.size) == (0, 0, 8)
    assert error[box.top:box.top + 8, box.left:box.left + 8].sum() == error.sum()  # all of it inside
    assert panels.worst_box(np.zeros((48, 64)), 64, SCALE) == panels.Box(0, 0, 48)  # shrunk to fit, top-left
    assert panels.worst_box(np.zeros((30, 30)), 64, 3).size == 30
    assert panels.worst_box(np.zeros((31, 33)), 64, 4).size == 28


def test_difference_maps_state_their_amplification_truthfully():
    a = np.full((2, 2, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0] = (99, 101, 97)  # a - b = +1, -1, +3
    for levels in (0, 1, 2, 3, 5, 37, 127, 200):
        gain = panels.amplification(levels)
        assert gain in (1, 2, 4, 8, 16, 32, 64)
        assert gain == 64 or gain * levels <= 127 < 2 * gain * levels or (gain == 1 and levels > 63)
    gain = panels.amplification(3)
    assert gain == 32
    got = panels.difference_map(a, b, gain)
    assert got.dtype == np.uint8 and got[0, 0].tolist() == [128 + 32, 128 - 32, 128 + 96] and (got[1:] == 128).all()
    assert panels.difference_map(a, b, 64)[0, 0].tolist() == [192, 64, 255]  # +3 x 64 saturates
    assert panels.saturation(32) == 4 and 128 + 32 * 4 > 255 and 128 + 32 * 3 <= 255


def test_exported_node_names_map_to_module_paths():
    assert node_module("/body/body.0/conv1/Conv") == "body.0.conv1"
    assert node_module("/conv_after_body/act/Clip") == "conv_after_body.act"
    assert node_module("/upsample/upsample.0/Conv") == "upsample.0"
    assert node_module("/Sub") == ""


# -- a real export -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """The default target's export of a tiny W4A4 student (ONNX Runtime runs; CUDA is skipped here)."""
    root = tmp_path_factory.mktemp("export")
    ckpt = write_student(root / "w4a4.pt", "w4a4,head_tail=int8,quantize_adds=true")
    assert _export(ckpt, root / "exp") == 0
    return root / "exp"


class _Page(HTMLParser):
    """The figures (image data, caption) and headings of a report, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[tuple[str, str, str]] = []  # (kind, text, src)
        self.imgs: list[str] = []
        self._open: str | None = None
        self._src = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
            self._src = a.get("src") or ""
        if tag in ("h3", "figcaption") or (tag == "p" and a.get("class") == "note"):
            self._open, self._text = tag, ""

    def handle_data(self, data: str) -> None:
        if self._open:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self.items.append((tag, self._text, self._src if tag == "figcaption" else ""))
            self._open = None


class _Tables(HTMLParser):
    """Every table of a page as rows of cell texts, by id (the HTML as written, no browser)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._rows: list[list[str]] | None = None
        self._cell: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._rows = self.tables.setdefault(dict(attrs).get("id") or "", [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._rows is not None and self._cell is not None:
            self._rows[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._rows = None


def _decode(src: str) -> np.ndarray:
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def _sections(html: str) -> list[dict]:
    """Each cropped image: its heading, region and {caption: pixels}."""
    page = _Page()
    page.feed(html)
    out: list[dict] = []
    for kind, text, src in page.items:
        if kind == "h3" and ": largest" in text:
            out.append({"title": text, "where": None, "panels": {}})
        elif out and kind == "p" and out[-1]["where"] is None:
            out[-1]["where"] = text
        elif out and kind == "figcaption":
            out[-1]["panels"][text] = _decode(src)
    return out


def _deviation(row: dict, backends: list[str]) -> tuple[float, int]:
    return (max(abs(row["psnr_y"][b] - row["psnr_y"]["pytorch"]) for b in backends),
            max(row["max_abs_diff_levels"][b] for b in backends))


def test_export_report_is_one_self_contained_file_listed_in_the_manifest(export):
    html = (export / "report.html").read_text(encoding="utf-8")
    manifest = json.loads((export / "manifest.json").read_text())
    assert "report.html" in manifest["files"] and manifest["files"]["report.html"]["bytes"] == len(html.encode())
    page = _Page()
    page.feed(html)
    assert page.imgs and all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) and "@import" not in html
    assert "<script" not in html and "image-rendering: pixelated" in html
    assert not list(export.glob(".report.html*")) and not list(export.parent.glob(".exp.tmp-*"))


def test_export_report_crops_are_the_same_region_pixel_exact(export):
    report = json.loads((export / "report.json").read_text())
    sections = _sections((export / "report.html").read_text(encoding="utf-8"))
    backends = [b["name"] for b in report["backends"] if b["ran"]]
    rows = report["images"]
    assert len(rows) == 3 and sections
    most = max(rows, key=lambda r: _deviation(r, backends))
    if _deviation(most, backends)[1]:
        assert sections[0]["title"].startswith(f"val/{most['name']}: largest backend deviation")
    worst = min(rows, key=lambda r: r["psnr_y"]["pytorch"])
    assert any(s["title"].startswith(f"val/{worst['name']}:") and "largest loss against HR" in s["title"]
               for s in sections)

    model = freeze(student_from_checkpoint(load_checkpoint(export.parent / "w4a4.pt")))
    for section in sections:
        name = section["title"].split(":")[0].split("/")[1]
        top, bottom, left, right = map(int, re.match(r"rows (\d+)-(\d+), columns (\d+)-(\d+)",
                                                     section["where"]).groups())
        size = bottom - top + 1
        assert size == right - left + 1 and top % SCALE == 0 and left % SCALE == 0 and size % SCALE == 0
        hr = np.asarray(Image.open(DEMO / "val" / f"{name}.png").convert("RGB"))
        hr = hr[:hr.shape[0] - hr.shape[0] % SCALE, :hr.shape[1] - hr.shape[1] % SCALE]
        lr = imresize(hr, 1 / SCALE)
        with torch.no_grad():
            sr = to_uint8(model(to_tensor(lr)))
        p = section["panels"]
        want_hr, want_sr = hr[top:bottom + 1, left:right + 1], sr[top:bottom + 1, left:right + 1]
        assert np.array_equal(p["HR"], want_hr)
        student = next(v for k, v in p.items() if k.startswith("PyTorch student"))
        assert np.array_equal(student, want_sr)
        lr_crop = lr[top // SCALE:(bottom + 1) // SCALE, left // SCALE:(right + 1) // SCALE]
        assert np.array_equal(p[f"LR (nearest, x{SCALE})"], np.kron(lr_crop, np.ones((SCALE, SCALE, 1), np.uint8)))
        for b in backends:  # every backend panel: the same region, within the gate's level difference
            got = next(v for k, v in p.items() if k.startswith(f"{b}:"))
            assert got.shape == want_sr.shape
            assert np.abs(got.astype(int) - want_sr).max() <= report["images"][
                [r["name"] for r in rows].index(name)]["max_abs_diff_levels"][b]
        caption, diff = next((k, v) for k, v in p.items() if k.startswith("student \u2212 HR"))
        gain = int(re.search(r", x(\d+) ", caption).group(1))
        want = np.clip(128 + gain * (want_sr.astype(int) - want_hr.astype(int)), 0, 255)
        assert np.array_equal(diff, want), caption


def test_a_failed_gate_still_gets_its_report_saying_why(tmp_path):
    def overflow(model):
        with torch.no_grad():
            model.conv_last.weight.mul_(1e37)  # finite weights, an infinite output

    ckpt = write_student(tmp_path / "inf.pt", "w8a8", edit=overflow)
    assert _export(ckpt, tmp_path / "exp") == 1
    html = (tmp_path / "exp" / "report.html").read_text(encoding="utf-8")
    failure = json.loads((tmp_path / "exp" / "report.json").read_text())["quality_floor"]["failure"]
    assert "parity gate FAILED" in html and failure.startswith("PyTorch reference")
    gate = {row["backend"]: row for row in _by_header(_Tables(html).tables["gate"])}
    assert gate["pytorch (reference)"]["result"] == f"FAIL: {failure}"
    assert "No per-image scores" in html and not _sections(html)


def test_with_no_backend_run_the_report_says_so_and_shows_the_student(tmp_path):
    profile = tmp_path / "trt-only.toml"
    profile.write_text('[tensorrt]\nbuild = false\n[verify]\nbackends = ["tensorrt"]\n')
    ckpt = write_student(tmp_path / "s.pt", "w8a8")
    assert _export(ckpt, tmp_path / "exp", "--target", str(profile)) == 0
    html = (tmp_path / "exp" / "report.html").read_text(encoding="utf-8")
    reason = json.loads((tmp_path / "exp" / "report.json").read_text())["backends"][0]["skipped_reason"]
    assert {row["backend"]: row for row in _by_header(_Tables(html).tables["gate"])}["tensorrt"]["result"] == \
        f"skipped: {reason}"
    assert "No backend ran here" in html and "bit for bit" not in html
    sections = _sections(html)
    assert sections and all("largest loss against HR" in s["title"] for s in sections)
    assert all(set(s["panels"]) == {f"LR (nearest, x{SCALE})", "HR", *[k for k in s["panels"] if
                                    k.startswith(("bicubic:", "PyTorch student:", "student \u2212 HR"))]}
               and len(s["panels"]) == 5 for s in sections)


# -- headless Chromium -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        pytest.skip("no headless Chromium found (apt-get install chromium-headless-shell; .ci/run installs it): "
                    "the reports were not rendered")
    with Browser(binary) as b:
        yield b


def _rendered(browser: Browser, page: Path) -> None:
    """Load ``page``; every image decoded, and the screenshot is not blank."""
    browser.open(page)
    count = browser.evaluate("document.images.length")
    assert count == len(_parsed_imgs(page)) and count > 0
    assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    shot = np.asarray(Image.open(io.BytesIO(browser.screenshot(max_height=4000))).convert("L"), np.float64)
    assert shot.shape[0] > 300 and shot.std() > 20  # text, tables and pictures, not an empty page
    assert (shot < 128).mean() > 0.01 and (shot > 200).mean() > 0.2


def _parsed_imgs(page: Path) -> list[str]:
    p = _Page()
    p.feed(page.read_text(encoding="utf-8"))
    return p.imgs


def _by_header(table: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(table[0], row)) for row in table[1:]]


def _check_export_tables(table, export: Path) -> None:
    """The page's tables (``table(id)`` -> rows of cell texts) hold the numbers of report.json
    and manifest.json, as the page formats them."""
    report = json.loads((export / "report.json").read_text())
    gate = {row["backend"]: row for row in _by_header(table("gate"))}
    assert gate["pytorch (reference)"]["PSNR_Y (dB)"] == f"{report['reference']['psnr_y']:.4f}"
    bicubic = report["quality_floor"]["bicubic_psnr_y"]["val"]
    assert gate["bicubic"]["PSNR_Y (dB)"] == f"{bicubic:.4f}"
    assert len(gate) == 2 + len(report["backends"])
    for b in report["backends"]:
        row = gate[b["name"]]
        if not b["ran"]:
            assert row["result"] == f"skipped: {b['skipped_reason']}" and row["PSNR_Y (dB)"] == ""
            continue
        assert row["PSNR_Y (dB)"] == f"{b['psnr_y']:.4f}"
        assert row["\u0394 PSNR_Y vs PyTorch (dB)"] == f"{b['delta_psnr_y']:+.4f}"
        assert row["max |\u0394| (levels)"] == str(b["max_abs_diff_levels"])
        assert row["seconds"] == f"{b['seconds']:.2f}"
        assert row["result"] == ("ok" if b["passed"] else row["result"]) and row["result"].startswith(
            "ok" if b["passed"] else "FAIL")
    assert any(not b["ran"] for b in report["backends"])  # CUDA is not here: the page says so

    backends = [b["name"] for b in report["backends"] if b["ran"]]
    shown = _by_header(table("images"))
    by_name = {r["name"]: r for r in report["images"]}
    assert sorted(r["image"] for r in shown) == sorted(by_name) and all(r["set"] == "val" for r in shown)
    want = [by_name[r["image"]] for r in shown]
    keys = [_deviation(r, backends) for r in want]
    assert keys == sorted(keys, reverse=True)  # largest backend deviation first
    for row, r in zip(shown, want):
        p = r["psnr_y"]
        assert (row["bicubic"], row["pytorch"]) == (f"{p['bicubic']:.4f}", f"{p['pytorch']:.4f}")
        for b in backends:
            assert row[b] == f"{p[b]:.4f}" and row[f"{b} \u0394"] == f"{p[b] - p['pytorch']:+.4f}"
            assert row[f"{b} max |\u0394| (levels)"] == str(r["max_abs_diff_levels"][b])

    layers = _by_header(table("layers"))
    manifest = json.loads((export / "manifest.json").read_text())
    bits = {row["layer"]: row["weights"] for row in layers}
    for layer in manifest["layers"]:
        assert bits[layer["name"]] == (f"{layer['w_bits']}-bit" if layer["w_bits"] else "\u2013")
    fused = [row["layer"] for row in layers if row["ONNX Runtime CPU"] == "integer (fused)"]
    floats = {node_module(op["node"]) for op in report["onnxruntime_float_ops"]}
    assert all(not any(f == n or f.startswith(n + ".") for f in floats) for n in fused)
    files = {row["file"]: row for row in _by_header(table("files"))}
    assert set(files) == {"model.onnx", "model_fp32.onnx"}
    assert files["model.onnx"]["vs FP32 ONNX"] == \
        f"{manifest['files']['model.onnx']['bytes'] / manifest['files']['model_fp32.onnx']['bytes']:.2f}x"


def test_export_report_tables_hold_the_numbers_of_report_json(export):
    _check_export_tables(_Tables((export / "report.html").read_text(encoding="utf-8")).tables.__getitem__, export)


def test_export_report_renders_with_the_numbers_of_report_json(browser, export):
    _rendered(browser, export / "report.html")
    _check_export_tables(lambda name: browser.table(f"table#{name}"), export)


# -- a real training run -----------------------------------------------------------------------
RECIPE = """
[data]
patch = 12
batch = 4
[teacher]
model = "edsr"
weights = "{teacher}"
args = {{num_feat = 8, num_block = 1}}
[student]
model = "edsr"
args = {{num_feat = 8, num_block = 1}}
[quant]
w_bits = 4
a_bits = 4
[dukd]
mode = "kd"
[train]
iters = 4
log_every = 1
val_every = 2
calib_batches = 1
[eval]
sets = ["demo:val"]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 4-step KD run through `python -m qdukd.train` (validated at steps 2 and 4)."""
    root = tmp_path_factory.mktemp("train")
    torch.manual_seed(0)
    torch.save(build_model("edsr", 4, num_feat=8, num_block=1).state_dict(), root / "teacher.pth")
    (root / "tiny.toml").write_text(RECIPE.format(teacher=root / "teacher.pth"))
    assert train_main([str(root / "tiny.toml"), "--out", str(root / "kd"), "--no-progress"]) == 0
    return root / "kd"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _check_runs_table(table: list[list[str]], run: Path) -> None:
    """The summary row holds the last numbers of the run's log.csv and val.csv."""
    log, val = _csv(run / "log.csv"), _csv(run / "val.csv")
    [row] = _by_header(table)
    assert row["run"] == "kd" and row["method"] == "kd" and row["bits"] == "W4A4"
    assert row["step / iters"] == f"{log[-1]['step']} / 4"
    assert row["final total loss"] == f"{float(log[-1]['total']):.5f}"
    assert row["median it/s"] == f"{statistics.median(float(r['it_per_s']) for r in log):.3f}"
    assert row["last PSNR_Y val (dB)"] == f"{float(val[-1]['psnr_y/val']):.4f}"


def test_training_writes_its_report_with_the_logged_numbers(run):
    assert (run / "report.html").is_file()  # written by qdukd.train itself
    assert not list(run.glob(".report.html*"))
    html = (run / "report.html").read_text(encoding="utf-8")
    _check_runs_table(_Tables(html).tables["runs"], run)
    assert "<script" not in html
    assert all(src.startswith("data:image/png;base64,") for src in _parsed_imgs(run / "report.html"))


def test_training_report_renders(browser, run):
    _rendered(browser, run / "report.html")
    _check_runs_table(browser.table("table#runs"), run)
    assert browser.evaluate("document.querySelector('img.plot').naturalWidth") > 600


def test_several_runs_are_overlaid_on_one_page(run, tmp_path, capsys):
    other = tmp_path / "gt"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("*.pt", "report.html"))
    rows = _csv(other / "log.csv")
    for r in rows:
        r["total"] = str(float(r["total"]) * 2)
    with (other / "log.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "compare" / "both.html"
    assert report_main([str(run), str(other), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    table = _by_header(_Tables(out.read_text(encoding="utf-8")).tables["runs"])
    assert [r["run"] for r in table] == ["kd", "gt"]
    assert table[1]["final total loss"] == f"{float(rows[-1]['total']):.5f}" and table[1]["method"] == "\u2013"
    assert len(_parsed_imgs(out)) == 1


# -- python -m qdukd.report as a hostile user --------------------------------------------------
def _one_error(capsys, code: int, *words: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0] and all(w in err[0] for w in words), err[0]


@pytest.mark.parametrize("content, words", [
    (b"", ["is empty"]),
    (b"step,lr,total\n", ["no rows yet"]),
    (b"step,lr,total\n1,0.1,0.5\n2,0.1,oops\n", ["line 3", "total", "not a number"]),
    (b"lr,total\n0.1,0.5\n", ["no 'step' column"]),
    (b"step,lr\n1.5,0.1\n", ["not a whole number"]),
    (b"step,lr\n1,0.1,7,8\n", ["line 2", "corrupt"]),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00", ["not a text CSV"]),
])
def test_broken_logs_exit_2_with_one_line(content, words, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.csv").write_bytes(content)
    _one_error(capsys, report_main([str(tmp_path / "run")]), "log.csv", *words)
    assert not (tmp_path / "run" / "report.html").exists()


def test_bad_report_arguments_exit_2_and_leave_inputs_alone(run, tmp_path, capsys):
    log = (run / "log.csv").read_bytes()
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cases = [
        ([str(tmp_path / "nope")], ["run folder", "missing"]),
        ([str(tmp_path / "file")], ["is a file"]),
        ([str(tmp_path / "empty")], ["has no log.csv"]),
        ([str(run), str(tmp_path / "empty")], ["--out"]),
        ([str(run), str(run)], ["given twice"]),
        ([str(run), "--out", str(run / "log.csv")], ["not an .html file"]),
        ([str(run), "--out", str(tmp_path / "file" / "r.html")], ["is a file, not a folder"]),
        ([str(run), "--out", str(tmp_path)], ["is a folder"]),
        ([str(run), "--bogus"], ["unrecognized arguments"]),
    ]
    for args, words in cases:
        try:
            code = report_main(args)
        except SystemExit as e:  # argparse usage errors
            code = e.code
        _one_error(capsys, code, *words)
    assert (run / "log.csv").read_bytes() == log


def test_an_unwritable_report_location_exits_2_before_any_work(run, tmp_path, capsys):
    if os.geteuid() == 0:
        target = Path("/proc/qdukd-report.html")  # root writes anywhere but here
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = tmp_path / "ro" / "r.html"
    _one_error(capsys, report_main([str(run), "--out", str(target)]), "cannot write")
