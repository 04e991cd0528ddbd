"""Benchmark commands (``python -m bench.<name>``) and their shared reporting helpers.

Benchmarks print their tables and write them into ``docs/benchmarks.md``, one ``## `` section
per benchmark, replaced in place on a rerun so other sections are left as they are.
"""

from __future__ import annotations

from pathlib import Path

BENCHMARKS_TITLE = "# Benchmarks"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _section_end(lines: list[str], start: int) -> int:
    return next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))


def write_section(path: str | Path, heading: str, body: str, *, after: str | None = None) -> Path:
    """Put ``## heading`` with ``body`` into a markdown file, replacing that section if present.

    A section runs from its ``## `` heading to the next ``## `` heading (or the end). A new
    section goes right after the section ``## after`` when that exists, else at the end.
    The file is created with a ``# Benchmarks`` title if missing.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else BENCHMARKS_TITLE + "\n"
    lines = text.splitlines()
    title = f"## {heading}"
    section = [title, "", *body.strip("\n").splitlines(), ""]
    if title in lines:
        start = lines.index(title)
        lines[start : _section_end(lines, start)] = section
    elif after is not None and f"## {after}" in lines:
        end = _section_end(lines, lines.index(f"## {after}"))
        lines[end:end] = section
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines += section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    return path
