"""Findings to clause verdicts to report files; renderers read one immutable ScanResult."""
