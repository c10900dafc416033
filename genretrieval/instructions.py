"""Named instruction presets: the text prepended to queries and documents for each task."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GenRetError

QUERY_DEFAULT = "Generate a relevant document that answers this query:"
DOCUMENT_DEFAULT = "Summarize the following passage:"
SYMMETRIC = "Generate text that is semantically similar to this text:"


@dataclass(frozen=True)
class Task:
    """Instructions for one task. ``query`` goes before queries, ``document`` before documents."""

    name: str
    query: str
    document: str


def _bright(name: str, query: str) -> Task:
    return Task(f"bright-{name}", query, DOCUMENT_DEFAULT)


_STACKEXCHANGE = [
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
]
BRIGHT_SUBSETS: tuple[str, ...] = (
    *_STACKEXCHANGE,
    "leetcode",
    "pony",
    "aops",
    "theoremqa_theorems",
    "theoremqa_questions",
)

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("retrieval", QUERY_DEFAULT, DOCUMENT_DEFAULT),
        Task("advbench-ir", QUERY_DEFAULT, DOCUMENT_DEFAULT),
        Task("similarity", SYMMETRIC, SYMMETRIC),
        *[
            _bright(s, f"Given a {s.replace('_', ' ')} post, retrieve relevant passages that help answer the post:")
            for s in _STACKEXCHANGE
        ],
        _bright("leetcode", "Given a coding problem, retrieve relevant examples that help answer the problem:"),
        _bright(
            "pony",
            "Given a question about the Pony programming language, retrieve relevant passages "
            "that help answer the question:",
        ),
        _bright("aops", "Given a math problem, retrieve relevant examples that help answer the problem:"),
        _bright("theoremqa_theorems", "Given a math problem, retrieve relevant theorems that help answer the problem:"),
        _bright(
            "theoremqa_questions", "Given a math problem, retrieve relevant examples that help answer the problem:"
        ),
    ]
}


def get_task(name: str) -> Task:
    """Look up a preset by name; raises ``GenRetError`` listing the known names."""
    try:
        return TASKS[name]
    except KeyError:
        raise GenRetError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None
