"""Where subject shapes lived before dry-run became a package: names kept for two importers.

`bridge.jetstream.checkpoints` and `bridge.durability_probe` still import from here; they are
being moved by other work in progress. To go once they import `bridge.routing.shapes` and
`bridge.route_shapes` themselves.
"""

from bridge.route_shapes import SubjectFit
from bridge.routing.shapes import binding_words, intersects

__all__ = ["SubjectFit", "binding_words", "intersects"]
