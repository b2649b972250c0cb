"""Radiology report sections: FINDINGS / IMPRESSION extraction and the choice of the training text.

MedViLL trains on the longer of Findings and Impression; R2Gen-style report generation uses Findings;
summarisation uses Impression.
"""
from __future__ import annotations

import re

SECTIONS = ("longer", "findings", "impression", "both")
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ,&/()'-]*?)[ \t]*:", re.MULTILINE)
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Collapse runs of whitespace (line breaks in the free-text reports) to single spaces."""
    return _SPACES.sub(" ", text).strip()


def extract_sections(report: str) -> dict[str, str]:
    """Map each upper-case header at a line start ('FINDINGS:') to the text up to the next header."""
    headers = list(_HEADER.finditer(report))
    sections = {}
    for header, following in zip(headers, headers[1:] + [None]):
        end = following.start() if following is not None else len(report)
        body = clean_text(report[header.end():end])
        name = clean_text(header.group(1))
        sections[name] = f"{sections[name]} {body}".strip() if name in sections else body
    return sections


def check_section(section: str) -> str:
    if section not in SECTIONS:
        raise ValueError(f"section={section!r}; choose one of {SECTIONS}")
    return section


def select_report_text(findings: str, impression: str, section: str = "longer") -> str:
    """The text a model trains on: 'longer' (MedViLL), 'findings', 'impression' or 'both' joined."""
    check_section(section)
    if section == "longer":
        return findings if len(findings) >= len(impression) else impression
    if section == "findings":
        return findings
    if section == "impression":
        return impression
    return " ".join(part for part in (findings, impression) if part)
