"""The assessor's side: a checklist template per device model, and answers merged back.

A scan cannot observe a documented risk assessment or a disclosure policy; an assessor answers
those clauses in a YAML file, and ``report --answers`` folds the answers into the verdicts.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from profiles.yamldata import DataFileError, line_of, parse_yaml, read_text, validate
from reports.compliance import Framework, load_frameworks
from reports.verdicts import AnswerKey
from scanner.models import ManualAnswer, ScanResult, Verdict

ANSWERABLE = ("PASS", "FAIL", "NOT_APPLICABLE")


class AnswersError(DataFileError):
    """An answers file cannot be used; the message names the file, line and field."""


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: str = Field(pattern="^(PASS|FAIL|NOT_APPLICABLE|UNANSWERED)$")
    justification: str = Field(default="", max_length=4000)
    evidence: list[str] = Field(default_factory=list)


class _Subject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # answers for every device of this model …
    device: str | None = None  # … or for one device address
    answers: dict[str, _Answer]


class _AnswersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    framework: str
    assessor: str = ""
    subjects: list[_Subject]


def load_answers(path: Path) -> dict[AnswerKey, ManualAnswer]:
    text = read_text(path)
    where = str(path)
    try:
        document = validate(_AnswersFile, parse_yaml(text, where), text, where)
    except DataFileError as exc:
        raise AnswersError(str(exc)) from None
    frameworks = {f.id: f for f in load_frameworks()}
    framework = frameworks.get(document.framework)
    if framework is None:
        raise AnswersError(f"{where}: framework: unknown {document.framework!r} "
                           f"(known: {', '.join(sorted(frameworks))})")
    clause_ids = {c.id for c in framework.clauses}
    answers: dict[AnswerKey, ManualAnswer] = {}

    def error(path: tuple[str | int, ...], message: str) -> AnswersError:
        line = line_of(text, path)
        field = ".".join(str(part) for part in path)
        return AnswersError(f"{where}{f':{line}' if line else ''}: {field}: {message}")

    for index, subject in enumerate(document.subjects):
        key = subject.device or subject.model
        if not key or (subject.device and subject.model):
            raise error(("subjects", index), "give exactly one of model or device")
        for clause, answer in subject.answers.items():
            field_path: tuple[str | int, ...] = ("subjects", index, "answers", clause)
            if clause not in clause_ids:
                raise error(field_path, f"no such clause in {framework.id}")
            if answer.verdict == "UNANSWERED":
                continue
            if not answer.justification.strip():
                raise error((*field_path, "justification"), "a verdict needs a justification")
            answers[(framework.id, clause, key)] = ManualAnswer(
                verdict=Verdict(answer.verdict), justification=answer.justification.strip(),
                evidence=answer.evidence, assessor=document.assessor, source=where)
    return answers


def checklist(result: ScanResult, framework: Framework | None = None) -> str:
    """A YAML answers template: one subject per device model, the manual clauses' questions as
    comments, every verdict UNANSWERED until the assessor decides."""
    framework = framework or next(f for f in load_frameworks() if f.id == "iso-iec-27402-2023")
    manual = [c for c in framework.clauses if c.questions]
    subjects: dict[str, dict[str, str | None]] = {}
    for device in result.devices:
        label = device.model or device.address
        if label not in subjects:
            subjects[label] = {"model": device.model, "device": None if device.model
                               else device.address}
    lines = [f"# Assessor answers for {framework.title}",
             "# Set each verdict to PASS, FAIL or NOT_APPLICABLE and justify it; leave",
             "# UNANSWERED what you have not assessed. Then: iotbaseline report SCAN.json "
             "--answers THIS_FILE",
             yaml.safe_dump({"framework": framework.id, "assessor": ""}, sort_keys=False)
             .rstrip(), "subjects:"]
    for subject in subjects.values():
        head = f"model: {yaml.safe_dump(subject['model']).splitlines()[0]}" \
            if subject["model"] else f"device: {subject['device']}"
        lines.append(f"  - {head}")
        lines.append("    answers:")
        for clause in manual:
            lines.append(f"      # {clause.id} {clause.title}")
            lines += [f"      #   - {question}" for question in clause.questions]
            lines.append(f'      "{clause.id}": {{verdict: UNANSWERED, justification: "", '
                         "evidence: []}")
    return "\n".join(lines) + "\n"
