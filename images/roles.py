"""The architecture diagram from the code: pyreverse's module import graph folded into roles.

    python images/roles.py packages_framehive.dot > architecture.dot

Each role (top-level package) becomes one box listing its modules; an arrow A -> B means modules of
A import modules of B, labelled with how many imports. Imports inside a role are not drawn. Because
the graph comes from the imports themselves, a role that starts importing another shows up here.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from html import escape

EDGE = re.compile(r'^"([\w.]+)" -> "([\w.]+)"')
NODE = re.compile(r'^"([\w.]+)" \[')
ROLES = {  # role -> what it is, in the order they are drawn
    "sender": "publisher (cameras, files)",
    "receiver": "UDP/imagezmq ingest, file-job server",
    "master": "task store, leases, rules, HTTP",
    "worker": "pull loop, decode, detectors",
    "cluster": "launches roles as processes",
    "common": "shared types, wire formats, client",
}
COLOURS = {"sender": "#f6e7a9", "receiver": "#d9e98b", "master": "#9fdcc4", "worker": "#f7b79e",
           "cluster": "#b5cdea", "common": "#c9ecfb"}


def role(module: str) -> str:
    return module.split(".", 1)[0]


def fold(dot: str) -> tuple[dict[str, list[str]], Counter[tuple[str, str]]]:
    """Modules per role and the number of imports between each pair of distinct roles."""
    modules: dict[str, list[str]] = defaultdict(list)
    edges: Counter[tuple[str, str]] = Counter()
    for line in dot.splitlines():
        if m := EDGE.match(line):
            a, b = role(m[1]), role(m[2])
            if a != b:
                edges[a, b] += 1
        elif m := NODE.match(line):
            if "." in m[1]:
                modules[role(m[1])].append(m[1].split(".", 1)[1])
    return modules, edges


def render(modules: dict[str, list[str]], edges: Counter[tuple[str, str]]) -> str:
    """A Graphviz digraph: one HTML-labelled box per role, counted arrows between roles."""
    out = ['digraph "architecture" {', "rankdir=TB;", 'node [shape=plain, fontname="Helvetica"];',
           'edge [fontname="Helvetica", fontsize=10, color="#555555"];']
    for name in sorted(modules, key=lambda r: list(ROLES).index(r) if r in ROLES else len(ROLES)):
        mods = "<BR/>".join(escape(m) for m in sorted(modules[name]))
        out.append(
            f'"{name}" [label=<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="6" '
            f'BGCOLOR="{COLOURS.get(name, "#eeeeee")}"><TR><TD><B>{escape(name)}/</B></TD></TR>'
            f'<TR><TD><I>{escape(ROLES.get(name, ""))}</I></TD></TR>'
            f'<TR><TD><FONT POINT-SIZE="10">{mods}</FONT></TD></TR></TABLE>>];')
    for (a, b), n in sorted(edges.items()):
        out.append(f'"{a}" -> "{b}" [label="{n} import{"s" if n > 1 else ""}"];')
    out.append("}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        sys.stdout.write(render(*fold(f.read())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
