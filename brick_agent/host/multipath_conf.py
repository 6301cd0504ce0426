"""multipathd's configuration as written in /etc/multipath.conf and
/etc/multipath/conf.d/*.conf (read-only; no ``multipathd show config``).

Only what the health check needs: the top-level sections (``defaults``,
``blacklist``, ``blacklist_exceptions``...) as ``(keyword, value)`` pairs, in
file order, conf.d files after the main file (as multipathd reads them);
nested sections (``devices { device { ... } }``) are skipped.
"""

from __future__ import annotations

import glob
import os
import shlex

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

MAIN_FILE = ("multipath.conf",)
CONF_DIR = ("multipath", "conf.d")

Sections = dict[str, list[tuple[str, str]]]


def config_files(roots: HostRoots = DEFAULT_ROOTS) -> list[str]:
    """The files multipathd reads that exist: the main file, then conf.d/*.conf sorted."""
    main = roots.etcfs(*MAIN_FILE)
    files = [main] if os.path.isfile(main) else []
    return files + sorted(glob.glob(os.path.join(roots.etcfs(*CONF_DIR), "*.conf")))


def _tokens(line: str) -> list[str]:
    try:
        lexer = shlex.shlex(line, posix=True)
        lexer.commenters = "#!"
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:  # an unbalanced quote: take the words as they are
        return line.split("#", 1)[0].split()


def parse(text: str, into: Sections | None = None) -> Sections:
    """Top-level sections of one file's ``text`` added to ``into``."""
    sections: Sections = {} if into is None else into
    stack: list[str] = []
    for raw in text.splitlines():
        words = _tokens(raw)
        if not words:
            continue
        if words[-1] == "{":
            stack.append(words[0])
            if len(stack) == 1:
                sections.setdefault(words[0], [])
        elif words[0] == "}":
            if stack:
                stack.pop()
        elif len(stack) == 1:
            sections[stack[0]].append((words[0], " ".join(words[1:])))
    return sections


def read_sections(roots: HostRoots = DEFAULT_ROOTS) -> Sections:
    """Every file's top-level sections, merged in reading order."""
    sections: Sections = {}
    for path in config_files(roots):
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                parse(fh.read(), sections)
        except OSError:
            continue
    return sections


def setting(sections: Sections, section: str, keyword: str) -> str | None:
    """The last value of ``keyword`` in ``section`` (later files win), None when unset."""
    values = [v for k, v in sections.get(section, []) if k == keyword]
    return values[-1] if values else None
