"""A griffe extension for the API reference (``mkdocs.yml``): the docstrings' Sphinx roles, such as
``:func:`~r3exp.grpo.functions.importance_weights```, become code spans (``importance_weights``), as Sphinx
shows them; mkdocstrings renders docstrings as Markdown and would print the role itself."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")


def as_code(match: re.Match) -> str:
    """``:role:`~a.b.c``` → ```c```; ``:role:`a.b.c``` → ```a.b.c```."""
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(as_code, obj.docstring.value)
