#!/usr/bin/env python3
"""Checks every relative link in the repository's Markdown files (the file exists and, for
`file#anchor` or `#anchor`, a heading with that GitHub anchor exists in it) and every
citation of a section by title in any tracked text file (`docs/reference.md, "Exit codes"`:
that file has that heading), and every test docs/threat-model.md names as a proof (`tests/x.rs`:
`a_test`: a function of that name in that file; any other long snake_case name: a function or
a corpus case somewhere in the code). Prints one line per broken one and exits 1 if any; run by
scripts/test.sh."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
# `path/file.md, "Section title"` (or `path/file.md "Section title"`), repository-relative.
CITATION = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md),? \"([^\"]+)\"")
CITING = ("*.md", "*.rs", "*.sh", "*.py", "*.yaml", "*.toml", "*.tpl", "*.txt", "Dockerfile",
          "*/Dockerfile")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, found, fenced = {}, set(), False
        for line in path.read_text(encoding="utf-8").splitlines():
            if FENCE.match(line):
                fenced = not fenced
            if fenced or not line.startswith("#"):
                continue
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        cache[path] = found
    return cache[path]


def titles(path, cache={}):
    if path not in cache:
        cache[path] = {re.sub(r"`", "", line.lstrip("#").strip())
                       for line in path.read_text(encoding="utf-8").splitlines()
                       if line.startswith("#")}
    return cache[path]


def check_citations():
    """Every `file.md, "Title"` in a tracked text file names a heading of that file."""
    names = subprocess.run(["git", "ls-files", *CITING], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    broken = 0
    for name in sorted(set(names)):
        path = ROOT / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                      .splitlines(), 1):
            for cited, title in CITATION.findall(line):
                dest = ROOT / cited
                if not dest.is_file():
                    continue  # a file of another repository, or a relative mention
                if title not in titles(dest):
                    print(f"{name}:{number}: {cited}, \"{title}\": no such heading")
                    broken += 1
    return broken


# `tests/a.rs` and `src/b.rs`: `name` (aside), `name`, … ; `proof/` is crates/proof/tests/.
PROOF_FILES = re.compile(r"((?:`[\w./-]+\.rs`(?:,? (?:and )?)?)+):((?:\s*`[a-z0-9_]+`(?:\s*\([^)]*\))?,?)+)")
PROOF_NAME = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+){3,})`")


def defined(name, paths):
    pattern = re.compile(rf"\bfn {re.escape(name)}\b")
    return any(pattern.search(p.read_text(encoding="utf-8")) for p in paths)


def check_proofs(name="docs/threat-model.md"):
    """Every test the threat model cites exists where it says (renames break no line silently)."""
    code = [ROOT / f for f in subprocess.run(["git", "ls-files", "*.rs"], cwd=ROOT,
                                             capture_output=True, text=True,
                                             check=True).stdout.split()]
    broken = 0
    for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
        for files, names in PROOF_FILES.findall(line):
            paths = []
            for cited in re.findall(r"`([^`]+)`", files):
                path = ROOT / re.sub(r"^proof/", "crates/proof/tests/", cited)
                if not path.is_file():
                    print(f"{name}:{number}: {cited}: no such file")
                    broken += 1
                paths.append(path)
            paths = [p for p in paths if p.is_file()]
            for test in re.findall(r"`([a-z0-9_]+)`", re.sub(r"\([^)]*\)", "", names)):
                if paths and not defined(test, paths):
                    print(f"{name}:{number}: {test}: not a function in {', '.join(re.findall(r'`([^`]+)`', files))}")
                    broken += 1
        for test in PROOF_NAME.findall(line):
            if not any(re.search(rf"\b{test}\b", p.read_text(encoding="utf-8")) for p in code):
                print(f"{name}:{number}: {test}: no such function in the code")
                broken += 1
    return broken


def main():
    files = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    # Files not yet committed count too (the check runs before a commit).
    files += subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "*.md"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    broken = 0
    for name in sorted(set(files)):
        md = ROOT / name
        if not md.exists():
            continue
        # Fenced code blanked out, line count kept: links may span lines.
        lines, fenced = [], False
        for line in md.read_text(encoding="utf-8").splitlines():
            if FENCE.match(line):
                fenced = not fenced
                line = ""
            lines.append("" if fenced else line)
        text = "\n".join(lines)
        for match in LINK.finditer(text):
            target = match.group(1)
            number = text.count("\n", 0, match.start(1)) + 1
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (md.parent / file_part).resolve() if file_part else md
            problem = None
            if not dest.exists():
                problem = "no such file"
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problem = f"no heading #{anchor} in {dest.relative_to(ROOT)}"
            if problem:
                print(f"{name}:{number}: {target}: {problem}")
                broken += 1
    broken += check_citations()
    broken += check_proofs()
    if broken:
        print(f"{broken} broken link(s) or citation(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
