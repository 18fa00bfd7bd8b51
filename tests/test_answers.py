"""Assessor answers: the checklist template round-trips, answers change verdicts, and bad
answer files are refused with file:line: field messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reports.answers import AnswersError, checklist, load_answers
from reports.verdicts import assess
from scanner.cli import main
from scanner.models import Verdict
from tests.helpers import validate_report
from tests.report_fixtures import sample_result


def verdict(result, device: str, clause: str) -> Verdict:  # type: ignore[no-untyped-def]
    return next(v.verdict for v in result.verdicts
                if v.device == device and v.clause == clause
                and v.framework == "iso-iec-27402-2023")


def test_checklist_template_loads_and_answers_change_verdicts(tmp_path: Path) -> None:
    result = sample_result()
    template = checklist(result)
    assert "# 5.1.1 Risk management" in template and "model: CAM-9000" in template
    path = tmp_path / "answers.yaml"
    path.write_text(template)
    assert load_answers(path) == {}  # everything UNANSWERED
    document = yaml.safe_load(template)
    document["assessor"] = "A. Assessor"
    answers = document["subjects"][0]["answers"]
    answers["5.1.1"] = {"verdict": "PASS", "justification": "Dated risk assessment v3 seen.",
                        "evidence": ["RA-2026-03.pdf"]}
    answers["5.2.5"] = {"verdict": "PASS", "justification": "Secrets encrypted at rest."}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    merged = assess(result.model_copy(update={"verdicts": []}), load_answers(path))
    assert verdict(merged, "192.0.2.5", "5.1.1") is Verdict.PASS
    assert verdict(merged, "192.0.2.5", "5.2.5") is Verdict.FAIL  # the finding still wins
    assert verdict(merged, "192.0.2.7", "5.1.1") is Verdict.MANUAL  # another model
    answered = next(v for v in merged.verdicts if v.clause == "5.1.1"
                    and v.device == "192.0.2.5")
    assert answered.answer and answered.answer.assessor == "A. Assessor"


@pytest.mark.parametrize("text, expected", [
    ("framework: nope\nsubjects: []\n", "unknown 'nope'"),
    ("framework: iso-iec-27402-2023\nsubjects:\n  - model: X\n    answers:\n"
     "      \"9.9\": {verdict: PASS, justification: j}\n",
     r"answers\.yaml:5: subjects\.0\.answers\.9\.9: no such clause"),
    ("framework: iso-iec-27402-2023\nsubjects:\n  - model: X\n    answers:\n"
     "      \"5.1.1\": {verdict: PASS, justification: \"\"}\n",
     r"answers\.yaml:5: subjects\.0\.answers\.5\.1\.1\.justification: a verdict needs"),
    ("framework: iso-iec-27402-2023\nsubjects:\n  - model: X\n    answers:\n"
     "      \"5.1.1\": {verdict: MAYBE, justification: j}\n",
     r"answers\.yaml:5: subjects\.0\.answers\.5\.1\.1\.verdict"),
    ("framework: iso-iec-27402-2023\nsubjects:\n  - {model: X, device: 1.2.3.4, answers: {}}\n",
     r"answers\.yaml:3: subjects\.0: give exactly one"),
    ("framework: [\n", r"answers\.yaml:\d+: not valid YAML"),
])
def test_bad_answers_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    with pytest.raises(AnswersError, match=expected) as caught:
        load_answers(path)
    assert "\n" not in str(caught.value)


def test_report_command_merges_answers(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    scan = tmp_path / "scan"
    scan.mkdir()
    (scan / "report.json").write_text(sample_result().model_copy(
        update={"verdicts": [], "device_verdicts": []}).model_dump_json())
    assert main(["checklist", str(scan / "report.json")]) == 0
    template = yaml.safe_load(capsys.readouterr().out)
    template["subjects"][0]["answers"]["5.1.2"] = {"verdict": "NOT_APPLICABLE",
                                                   "justification": "Lab-only prototype."}
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump(template))
    out = tmp_path / "rendered"
    assert main(["report", str(scan / "report.json"), "--answers", str(answers),
                 "--out", str(out), "--format", "html,markdown"]) == 0
    document = validate_report(out / "report.json")
    answered = [v for v in document["verdicts"] if v["clause"] == "5.1.2"
                and v["device"] == "192.0.2.5" and v["framework"] == "iso-iec-27402-2023"]
    assert answered[0]["verdict"] == "NOT_APPLICABLE"
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["report", str(tmp_path / "junk.json")]) == 2
