"""``sparsecl report`` (issue 20): every figure is drawn from the run's own records, has axis labels with
units and a legend (or a labelled colour bar); the table is the mean +- std over seeds; the HTML page
renders in headless Chromium with every image loaded; ``train --report`` and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

from sparsecl import cli  # noqa: E402
from sparsecl.report import read_inputs, report  # noqa: E402
from sparsecl.report.figures import RUN_FIGURES, compare_figure  # noqa: E402
from sparsecl.report.table import markdown, settings, table_rows  # noqa: E402

TINY = ["dataset=digits", "model=mlp", "hidden=32", "tasks=2", "epochs=2", "batch_size=64", "lr=0.1",
        "method=derpp", "buffer_size=50", "progress=false"]
SPARCL = ["sparsity.density=0.2", "sparcl.tdm=true", "sparcl.ddr=true", "sparcl.dgm=true"]
UNIT = re.compile(r"\(.+\)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("sparcl-s0", [*SPARCL, "seed=0"]), ("dense-s0", ["seed=0"]), ("dense-s1", ["seed=1"])):
        assert cli.main(["train", *TINY, *extra, "--out", str(root / name)]) == 0
    return root


def records(folder, kind):
    return [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if r["event"] == kind]


def check_axes(fig) -> None:
    """Every plot has x/y labels with a unit in parentheses and a legend, or is an image with a colour bar
    whose label has a unit."""
    colorbars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    plots = [ax for ax in fig.axes if ax not in colorbars]
    assert plots
    for ax in plots:
        assert UNIT.search(ax.get_xlabel()) and UNIT.search(ax.get_ylabel()), (ax.get_xlabel(), ax.get_ylabel())
        assert ax.get_title()
        if ax.images:
            assert colorbars
        else:
            assert ax.get_legend() is not None and ax.get_legend().get_texts()
    for cb in colorbars:
        assert UNIT.search(cb.get_ylabel())


def test_every_figure_of_a_sparcl_run_is_drawn_from_its_records(runs):
    run = read_inputs([runs / "sparcl-s0"]).single[0]
    figs = {name: RUN_FIGURES.get(name)(run) for name in RUN_FIGURES}
    assert all(f is not None for f in figs.values()), [n for n, f in figs.items() if f is None]
    for fig in figs.values():
        check_axes(fig)
    updates, epochs = records(runs / "sparcl-s0", "mask_update"), records(runs / "sparcl-s0", "epoch")
    density, turnover = figs["masks"].axes[:2]
    assert list(density.lines[0].get_ydata())[:-1] == [100 * r["layers"]["hidden.0.weight"] for r in updates]
    assert list(turnover.lines[0].get_xdata()) == [r["step"] for r in updates[1:]]
    ddr, dgm = figs["sparcl"].axes[:2]
    assert [y for line in ddr.lines[: len({r["task"] for r in epochs})] for y in line.get_ydata()] == [r["examples"] for r in epochs]
    assert epochs[1]["examples"] < epochs[0]["examples"]  # DDR removed examples after the first epoch
    assert list(dgm.lines[0].get_ydata()) == [100 * r["grad_density"]["hidden.0.weight"] for r in epochs]
    matrix = figs["acc_matrix"].axes[0].images[0].get_array()
    cil = run.summary["acc_matrix"]["class_il"]
    assert matrix[1, 0] == cil[1][0] and matrix[1, 1] == cil[1][1]


def test_dense_run_has_no_mask_or_sparcl_figure(runs):
    run = read_inputs([runs / "dense-s0"]).single[0]
    assert RUN_FIGURES.get("masks")(run) is None and RUN_FIGURES.get("sparcl")(run) is None


def test_table_and_comparison_fold_seeds(runs):
    inputs = read_inputs([runs / "dense-s0", runs / "dense-s1", runs / "sparcl-s0"])
    rows, labels = settings(inputs.all)
    assert labels == ["dense-s0", "sparcl-s0"] and [len(r.names) for r in rows] == [2, 1]
    entries = table_rows(rows, labels)
    acc = [json.loads((runs / d / "summary.json").read_text())["final_avg_acc"]["class_il"] for d in ("dense-s0", "dense-s1")]
    assert entries[0]["class_il"] == statistics.fmean(acc) and entries[0]["class_il_std"] == statistics.stdev(acc)
    assert entries[0]["seeds"] == [0, 1] and entries[0]["fewer"] == 1.0 and entries[1]["fewer"] > 1.5
    assert f"| {statistics.fmean(acc):.2f} ± {statistics.stdev(acc):.2f} |" in markdown(entries)
    fig = compare_figure(rows, labels)
    check_axes(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["derpp + SparCL (TDM, DDR, DGM)", "dense: dense-s0"]


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = ("<script>window.addEventListener('load', () => { document.getElementById('probe').textContent = "
         "JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])); });"
         "</script><pre id='probe'>not loaded</pre></body>")


def test_html_page_renders_every_image_in_headless_chromium(runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (scripts/setup.sh installs it as root)")
    page, figures = report([runs / "sparcl-s0"], tmp_path / "rep")
    html = page.read_text()
    assert "src='data:image/png;base64," in html and "<img src='" not in html.replace("<img src='data:", "")
    probe = tmp_path / "probe.html"  # the page itself, plus a script that reports each image's size
    probe.write_text(html.replace("</body>", PROBE))
    done = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r"<pre id=\"probe\">(.*?)</pre>", done.stdout)
    assert found, done.stderr[-2000:]
    sizes = json.loads(found.group(1))
    assert len(sizes) == len(figures) == html.count("<img ")
    for (complete, width, height), fig in zip(sizes, figures):
        w, h = fig.figure.get_size_inches() * fig.figure.dpi
        assert complete and (width, height) == (round(w), round(h))


def test_cli_report_and_train_report(runs, tmp_path, capsys):
    # one setting (two seeds): no comparison figure; each run given gets acc_matrix, per_task, training
    assert cli.main(["report", str(runs / "dense-s0"), str(runs / "dense-s1"), "--out", str(tmp_path / "r")]) == 0
    assert "(6 figures, PNGs and table.md beside it)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "r").glob("*.png")) == [
        f"dense-s{s}_{f}.png" for s in (0, 1) for f in ("acc_matrix", "per_task", "training")]
    assert "| dense-s0 | derpp | 0,1 |" in (tmp_path / "r" / "table.md").read_text()
    out = tmp_path / "t"
    assert cli.main(["train", *TINY, "tasks=1", "epochs=1", "--out", str(out), "--report"]) == 0
    assert sorted(p.name for p in (out / "report").iterdir()) == ["report.html", "t_acc_matrix.png", "t_training.png",
                                                                 "table.md"]


def test_report_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert cli.main(["train", *TINY, "--report", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == ("sparsecl train: error: train --report needs the matplotlib package: "
                                       "pip install 'sparsecl[report]'\n")
    assert not (tmp_path / "x").exists()  # refused before anything was written
