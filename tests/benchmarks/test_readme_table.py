"""The README's performance table is generated from a ``bench e2e --modality all`` JSON (no bench runs here)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from linewatch.benchmarks.e2e_all import MODALITIES, RATE_KEYS, SUMMARY_KEYS, print_table, run_all
from linewatch.benchmarks.readme_table import END, START, main, render_table, replace_table
from linewatch.config import Settings
from linewatch.errors import ConfigError

SAMPLE = {
    "spc": {"modality": "spc", "records_per_s": 2224.4, "bare_faust_per_s": 4488.0, "bare_kafka_per_s": 19637.2,
            "ratio_vs_bare_faust": 0.496, "latency_p50_s": 0.312, "latency_p99_s": 0.734,
            "latency_rate_per_s": 1112.0, "peak_rss_mb": 493.2},
    "signals": {"modality": "signals", "samples_per_s": 5_310_000.0, "windows_per_s": 1315.0,
                "samples_per_window": 4038.0, "bare_faust_per_s": 4142.0, "bare_kafka_per_s": 9000.0,
                "ratio_vs_bare_faust": 0.317, "latency_p50_s": 0.2, "latency_p99_s": 0.41, "peak_rss_mb": 523.0},
    "frames": {"modality": "frames", "frames_per_s": 75.7, "size": 256, "encoding": "png",
               "bare_faust_per_s": 1100.0, "bare_kafka_per_s": 400.0, "ratio_vs_bare_faust": 0.069,
               "ratio_vs_detector": 0.78,
               "latency_p50_s": 0.25, "latency_p99_s": 0.45, "peak_rss_mb": 986.0},
    "machine": {"cpu_count": 2, "started": "2026-12-01T23:40:00+00:00", "load_before": [1.5, 1.2, 1.0],
                "load_after": [2.25, 1.5, 1.0]},
}
README = f"# x\n\n## Performance\n\n{START}\nold figures\n{END}\n\nmore text\n"


def test_table_has_a_row_per_modality_with_every_figure() -> None:
    table = render_table(SAMPLE)
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["SPC", "signals (4,038 samples a window)",
                                                         "frames 256x256 PNG"]
    assert rows[0] == "| SPC | 2,224 records/s | 4,488 | 19,637 | 0.50 of bare Faust | 0.31 s / 0.73 s | 493 MB |"
    assert "5.31 M samples/s" in rows[1] and "0.20 s / 0.41 s" in rows[1]
    assert "75.7 frames/s" in rows[2] and "0.78 of the detector alone" in rows[2] and "986 MB" in rows[2]
    assert "on 2 cores, load average 1.5 at the start and 2.2 at the end" in table


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("key", ["rate", *SUMMARY_KEYS])
def test_a_missing_figure_fails_naming_it(modality: str, key: str) -> None:
    figures = copy.deepcopy(SAMPLE)
    name = RATE_KEYS[modality] if key == "rate" else key
    del figures[modality][name]
    with pytest.raises(ConfigError, match=f"{modality} figures lack {name}"):
        render_table(figures)


def test_no_modality_at_all_fails() -> None:
    with pytest.raises(ConfigError, match="no modality"):
        render_table({"machine": SAMPLE["machine"]})


def test_replace_keeps_the_rest_and_is_idempotent() -> None:
    once = replace_table(README, render_table(SAMPLE))
    assert "old figures" not in once and once.startswith("# x\n") and once.endswith(f"{END}\n\nmore text\n")
    assert replace_table(once, render_table(SAMPLE)) == once


def test_readme_without_markers_fails() -> None:
    with pytest.raises(ConfigError, match="marker"):
        replace_table("# no table here\n", render_table(SAMPLE))


def test_main_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme, figures = tmp_path / "README.md", tmp_path / "e2e.json"
    readme.write_text(README)
    figures.write_text(json.dumps(SAMPLE))
    assert main(["--json", str(figures), "--readme", str(readme), "--check"]) == 1
    assert main(["--json", str(figures), "--readme", str(readme)]) == 0
    assert "2,224 records/s" in readme.read_text()
    assert main(["--json", str(figures), "--readme", str(readme), "--check"]) == 0
    broken = copy.deepcopy(SAMPLE)
    del broken["frames"]["peak_rss_mb"]
    figures.write_text(json.dumps(broken))
    assert main(["--json", str(figures), "--readme", str(readme)]) == 2
    assert "frames figures lack peak_rss_mb" in capsys.readouterr().err


def test_run_all_runs_every_modality_in_order_and_prints_one_table() -> None:
    seen: list[str] = []

    def fake_run(modality: str, settings: Settings, **_: object) -> dict[str, object]:
        seen.append(modality)
        return SAMPLE[modality]

    console = Console(record=True, width=200)
    out = run_all(Settings(), seconds=1.0, console=console, run=fake_run)
    assert seen == list(MODALITIES) and set(out) == {*MODALITIES, "machine"}
    assert len(out["machine"]["load_before"]) == 3
    print_table(console, out)
    text = console.export_text()
    assert "5,310,000 samples" in text and "0.31 / 0.73" in text


def test_readme_table_is_the_committed_run() -> None:
    """The README's table is what the generator makes of docs/benchmarks-e2e.json: never edited by hand."""
    root = Path(__file__).resolve().parents[2]
    assert main(["--json", str(root / "docs" / "benchmarks-e2e.json"), "--readme", str(root / "README.md"),
                 "--check"]) == 0


def test_cli_runs_the_generator(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from linewatch.cli import app

    readme, figures = tmp_path / "README.md", tmp_path / "e2e.json"
    readme.write_text(README)
    figures.write_text(json.dumps(SAMPLE))
    result = CliRunner().invoke(app, ["bench", "readme-table", "--json", str(figures), "--readme", str(readme)])
    assert result.exit_code == 0, result.output
    assert "75.7 frames/s" in readme.read_text()
