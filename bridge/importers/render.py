"""A generated mapping file: plain data plus comments for people, written as YAML.

Importers are pure: they return a `MappingDocument` (the mapping as plain dicts and lists,
and comments keyed by the path of the item they concern) so tests can inspect both without
parsing YAML. Only `render` knows about ruamel.yaml, and it puts each comment on the lines
just above its stream, service or route, where the person reviewing the import will read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

Path = tuple[str | int, ...]
INDENT = 2  # spaces per nesting level in the rendered YAML; comments are indented to match


@dataclass
class MappingDocument:
    """A mapping file in the making.

    `data` must load with `bridge.config.load_config`; `comments` maps a key path such as
    `("streams", 0)` or `("services", "orders", "routes", 1)` to lines shown above that item;
    `header` is the file's opening comment.
    """

    data: dict[str, Any]
    header: list[str] = field(default_factory=list)
    comments: dict[Path, list[str]] = field(default_factory=dict)

    def note(self, path: Path, line: str) -> None:
        """Add a comment line above the item at `path` (once: importers may reach a fact twice)."""
        lines = self.comments.setdefault(path, [])
        if line not in lines:
            lines.append(line)

    def all_comments(self) -> str:
        """Every comment as one text: what tests search for a feature's mention."""
        parts = [*self.header]
        for lines in self.comments.values():
            parts.extend(lines)
        return "\n".join(parts)


def _tree(value: Any, path: Path, comments: Mapping[Path, Sequence[str]], depth: int) -> Any:
    """Plain data -> ruamel round-trip nodes, with comments attached before their items."""
    if isinstance(value, Mapping):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _tree(item, (*path, key), comments, depth + 1)
            lines = comments.get((*path, key))
            if lines:
                node.yaml_set_comment_before_after_key(key, before="\n".join(lines), indent=depth * INDENT)
        return node
    if isinstance(value, list) and any(isinstance(item, Mapping | list) for item in value):
        seq = CommentedSeq()
        for index, item in enumerate(value):
            seq.append(_tree(item, (*path, index), comments, depth + 1))
            lines = comments.get((*path, index))
            if lines:
                seq.yaml_set_comment_before_after_key(index, before="\n".join(lines), indent=depth * INDENT)
        return seq
    if isinstance(value, list):
        flow = CommentedSeq(value)
        flow.fa.set_flow_style()  # short lists of scalars (subjects, bindings) read best inline
        return flow
    return value


def render(document: MappingDocument) -> str:
    """The document as YAML text, header comment first, each comment above its item."""
    tree = _tree(document.data, (), document.comments, 0)
    if document.header:
        tree.yaml_set_start_comment("\n".join(document.header))
    yaml = YAML(typ="rt")
    yaml.indent(mapping=INDENT, sequence=INDENT * 2, offset=INDENT)
    yaml.width = 4096  # never fold a subject template or a regex onto two lines
    out = StringIO()
    yaml.dump(tree, out)
    return out.getvalue()
