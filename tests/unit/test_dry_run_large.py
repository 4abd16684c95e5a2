"""dry-run on large inputs: a replay past the table's size prints one plain line per message
and route (a rich table of 50,000 rows took minutes), and a large estate is checked with the
same findings as the all-pairs comparison would give. Timings are in bench/dryrun_scale.py."""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from bridge.commands import app
from bridge.config import load_config_text
from bridge.dryrun.checks import offline_checks
from bridge.dryrun.output import TABLE_ROWS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from dryrun_scale import estate, recorded  # the benchmark's own generators


def test_a_replay_larger_than_the_table_prints_a_line_per_message(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(estate(2))
    lines = TABLE_ROWS + 200
    replay = tmp_path / "r.jsonl"
    replay.write_text(recorded(lines))
    result = CliRunner().invoke(app, ["dry-run", str(mapping), "--input", str(replay)])
    assert result.exit_code == 0, result.output
    rows = [row.split("\t") for row in result.output.splitlines() if row.count("\t") == 5]
    assert rows[0] == ["line", "route", "subject", "Nats-Msg-Id", "bytes", "outcome"]
    assert len(rows) == lines + 1
    last, partition = lines - 1, (lines - 1) % 6
    assert rows[-1][:4] == [str(lines), "svc1/r", f"s1.{partition}", f"svc1/r/t1/{partition}/{last}"]
    assert rows[-1][5] == "publish to S1"


def test_a_large_estate_gets_exactly_the_findings_its_mistakes_call_for() -> None:
    text = estate(300)
    # Two mistakes among 300 streams and routes: a stream overlapping another, and a route
    # whose subjects no stream captures.
    text = text.replace("{name: S7, subjects: ['s7.>']}", "{name: S7, subjects: ['s7.>', 's8.x']}")
    text = text.replace("to: 's11.{partition}'", "to: 'nowhere.{partition}'")
    findings = offline_checks(load_config_text(text, "estate.yaml", {}))
    errors = sorted((f.check, f.subject) for f in findings if f.severity.value == "error")
    assert errors == [("capture", "svc11/r"), ("overlap", "S7, S8")]
