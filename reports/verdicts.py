"""Findings, check runs and assessor answers into a verdict per device × clause.

This is the only place that evaluates; renderers read the verdicts it stores in the result.
Rules (also in README and each report's methodology section):

- automated part, from the checks a framework maps to the clause: FAIL if any of them found
  something on the device; else INCONCLUSIVE if any errored or was cut short; else PASS if any
  ran ("no counterexample found" — a black-box PASS is not proof); else NOT_APPLICABLE (no
  service they test was found).
- manual part, for clauses with assessor questions: the answer's verdict, or unanswered.
- the clause: FAIL if either part fails; else INCONCLUSIVE if the automated part is inconclusive,
  or it passed while questions remain unanswered; MANUAL if only unanswered questions remain;
  else the answer or the automated result (NOT_APPLICABLE only when every part is).
- a device: any FAIL → FAIL; else any INCONCLUSIVE or MANUAL → INCONCLUSIVE; else PASS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from reports.compliance import Framework, Requirement, select_frameworks
from scanner.models import (
    CheckStatus,
    ClauseVerdict,
    DeviceVerdict,
    Finding,
    ManualAnswer,
    ScanResult,
    Severity,
    Verdict,
)

AnswerKey = tuple[str, str, str]  # (framework id, clause id, device address or model)

ORDER = [Verdict.FAIL, Verdict.INCONCLUSIVE, Verdict.MANUAL, Verdict.PASS,
         Verdict.NOT_APPLICABLE]


class FindingLike(Protocol):
    """A finding as verdicts see it: a full Finding, or the store's index entry for one."""

    @property
    def id(self) -> str: ...
    @property
    def check_id(self) -> str: ...
    @property
    def severity(self) -> Severity: ...


def _automated(requirement: Requirement, findings_here: Sequence[FindingLike],
               runs_here: Sequence[tuple[str, CheckStatus]],
               ) -> tuple[Verdict | None, str, list[str], list[str]]:
    """The automated part from one device's own findings and check runs."""
    mapped = {check.id for check in requirement.checks}
    if not mapped:
        return None, "", [], []
    findings = [f for f in findings_here if f.check_id in mapped]
    runs = [(check, status) for check, status in runs_here if check in mapped]
    ran = sorted({check for check, _ in runs})
    # Informational findings (no security.txt, a version banner) are shown with the clause but
    # do not fail it: they are facts for the assessor, not counterexamples.
    failing = [f for f in findings if f.severity is not Severity.INFO]
    if failing:
        checks = sorted({f.check_id for f in failing})
        return (Verdict.FAIL, f"{len(failing)} finding(s) from {', '.join(checks)}.", ran,
                [f.id for f in findings])
    noted = f" {len(findings)} informational finding(s) to review." if findings else ""
    errored = sorted({check for check, status in runs if status is CheckStatus.ERROR})
    if errored:
        return (Verdict.INCONCLUSIVE, f"check(s) {', '.join(errored)} could not complete "
                f"(error, timeout or cut short); see the probe errors.{noted}", ran,
                [f.id for f in findings])
    if ran:
        return (Verdict.PASS, f"No counterexample found by {len(ran)} check(s) "
                f"({', '.join(ran)}); a black-box scan cannot prove the clause is met.{noted}",
                ran, [f.id for f in findings])
    return (Verdict.NOT_APPLICABLE, "None of the mapped checks applied: the device exposes no "
            "service they test.", [], [])


def _combine(requirement: Requirement, automated: Verdict | None, automated_reason: str,
             answer: ManualAnswer | None) -> tuple[Verdict, str]:
    asks = bool(requirement.questions)
    if automated is Verdict.FAIL or (answer is not None and answer.verdict is Verdict.FAIL):
        reason = automated_reason if automated is Verdict.FAIL else \
            f"Assessor: {answer.justification if answer else ''}"
        return Verdict.FAIL, reason
    if automated is Verdict.INCONCLUSIVE:
        return Verdict.INCONCLUSIVE, automated_reason
    if asks and answer is None:
        if automated is None:
            return Verdict.MANUAL, "Not observable from the network: answer the assessor " \
                                   "questions in the checklist."
        if automated is Verdict.PASS:
            return Verdict.INCONCLUSIVE, f"{automated_reason} The assessor questions for this " \
                                         "clause are unanswered."
        return Verdict.MANUAL, f"{automated_reason} The assessor questions are unanswered."
    parts = [v for v in (automated, answer.verdict if answer else None) if v is not None]
    if not parts:
        return Verdict.MANUAL, "No check maps to this clause and it has no questions."
    verdict = min(parts, key=ORDER.index)
    if verdict is Verdict.NOT_APPLICABLE and any(p is not Verdict.NOT_APPLICABLE for p in parts):
        verdict = next(p for p in parts if p is not Verdict.NOT_APPLICABLE)
    reasons = [r for r in (automated_reason,
                           f"Assessor: {answer.justification}" if answer else "") if r]
    return verdict, " ".join(reasons)


def find_answer(answers: Mapping[AnswerKey, ManualAnswer], framework: str, clause: str,
                address: str, model: str | None) -> ManualAnswer | None:
    """A device's own answer wins over its model's."""
    for key in (address, model or ""):
        if key and (framework, clause, key) in answers:
            return answers[(framework, clause, key)]
    return None


def device_verdicts(framework: Framework, address: str, model: str | None,
                    findings_here: Sequence[FindingLike],
                    runs_here: Sequence[tuple[str, CheckStatus]],
                    answers: Mapping[AnswerKey, ManualAnswer]) -> list[ClauseVerdict]:
    """Every clause of ``framework`` on one device, from that device's findings and runs."""
    verdicts = []
    for requirement in framework.clauses:
        automated, why, ran, finding_ids = _automated(requirement, findings_here, runs_here)
        answer = find_answer(answers, framework.id, requirement.id, address, model)
        verdict, reason = _combine(requirement, automated, why, answer)
        coverage = "full" if any(c.coverage == "full" for c in requirement.checks) \
            else ("partial" if requirement.checks else "")
        verdicts.append(ClauseVerdict(
            framework=framework.id, clause=requirement.id, title=requirement.title,
            device=address, verdict=verdict, reason=reason[:2000], automated=automated,
            coverage=coverage, checks=ran, findings=finding_ids, answer=answer))
    return verdicts


def assess(result: ScanResult, answers: Mapping[AnswerKey, ManualAnswer] | None = None,
           frameworks: Iterable[Framework] | None = None) -> ScanResult:
    """The result with a verdict for every clause of the chosen frameworks (the primary one
    by default) on every device."""
    # Indexed by device once: a scan of thousands of devices must stay linear in their number.
    runs_by_device: dict[str, list[tuple[str, CheckStatus]]] = defaultdict(list)
    for run in result.check_runs:
        runs_by_device[run.device].append((run.check_id, run.status))
    findings_by_device: dict[str, list[Finding]] = defaultdict(list)
    for finding in result.findings:
        findings_by_device[finding.device].append(finding)
    verdicts: list[ClauseVerdict] = []
    rollups: list[DeviceVerdict] = []
    for framework in frameworks if frameworks is not None else select_frameworks(None):
        for device in result.devices:
            mine = device_verdicts(framework, device.address, device.model,
                                   findings_by_device.get(device.address, []),
                                   runs_by_device.get(device.address, []), answers or {})
            verdicts += mine
            if mine:
                rollups.append(DeviceVerdict(framework=framework.id, device=device.address,
                                             verdict=device_rollup(mine)))
    return result.model_copy(update={"verdicts": verdicts, "device_verdicts": rollups})


def device_rollup(verdicts: Iterable[ClauseVerdict]) -> Verdict:
    """Any FAIL → FAIL; else any INCONCLUSIVE or MANUAL → INCONCLUSIVE; else PASS (or N/A)."""
    seen = {v.verdict for v in verdicts}
    if Verdict.FAIL in seen:
        return Verdict.FAIL
    if seen & {Verdict.INCONCLUSIVE, Verdict.MANUAL}:
        return Verdict.INCONCLUSIVE
    if Verdict.PASS in seen:
        return Verdict.PASS
    return Verdict.NOT_APPLICABLE
