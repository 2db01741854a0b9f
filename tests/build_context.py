"""What `minikube image build` puts in the build context, modelled in Python.

minikube packs the build folder itself, before anything reaches the node, and
the node builds only from what was packed. It forces in `.dockerignore` and the
`-f` file, nothing else: without -f, a .dockerignore that leaves out the
Dockerfile makes the build fail inside the node, and minikube still exits 0.
The docker SDK's packer (docker.utils.build) always adds the Dockerfile, so it
would hide exactly that bug; hence this model, ported from the Go source read:

  minikube  third_party/go-dockerclient/tar.go   CreateTarStream, parseDockerignore
  moby/go-archive v0.1.0  archive.go             Tarballer.Do (the walk)
  moby/patternmatcher v0.6.0  patternmatcher.go  New, Matches*, Pattern.compile/match
"""

import json
import os
import posixpath
import re
from pathlib import Path

# --- minikube: third_party/go-dockerclient/tar.go ---------------------------

def read_dockerignore(folder):
    """parseDockerignore: the file split on "\\n", nothing more. Unlike the docker
    CLI (patternmatcher/ignorefile.ReadAll), `#` comment lines are NOT dropped
    (each becomes a literal pattern) and a leading `/` is NOT removed (so
    `/Dockerfile` matches nothing). A missing file means no patterns."""
    path = Path(folder) / ".dockerignore"
    # Bytes, not read_text(): Python would turn a lone "\r" into a line break.
    return path.read_bytes().decode("utf-8").split("\n") if path.exists() else []


def packed_files(folder, dockerfile=None):
    """CreateTarStream(folder, dockerfile): every path in the context tar
    (folders too), relative to `folder`, with "/" separators. `dockerfile` is
    the -f value as typed, relative to the folder; None when -f is not given."""
    folder = Path(folder).absolute()  # filepath.Abs
    matcher = PatternMatcher(read_dockerignore(folder))
    includes = ["."]
    # forceIncludeFiles: added as extra walk roots, and only if the patterns
    # exclude them (asked with the deprecated Matches, as minikube does).
    for forced in (".dockerignore", dockerfile):
        if forced and matcher.matches_one_parent(forced):
            includes.append(forced)
    packed = set()
    for include in includes:
        _tar_walk(folder, include, matcher, packed)
    return packed


# --- moby/go-archive: Tarballer.Do -------------------------------------------

def _tar_walk(folder, include, matcher, packed):
    """One filepath.WalkDir of Tarballer.Do, rooted at folder/include.

    An include is exempt from the patterns only when it is literally the
    cleaned relative path: `-f ./Dockerfile` is NOT exempt (Rel gives
    "Dockerfile"), so an excluded Dockerfile stays out even with that -f."""

    def visit(path, parent_info):
        rel = os.path.relpath(path, folder).replace(os.sep, "/")  # filepath.Rel
        is_dir = path.is_dir() and not path.is_symlink()  # WalkDir does not follow links
        if rel == "." and is_dir:  # the folder itself is not an entry
            info, skip = None, False
        elif include == rel:  # the explicit include: in, whatever the patterns say
            info, skip = parent_info, False
            packed.add(rel)
        else:
            # MatchesUsingParentResults with the parent folder's MatchInfo
            # (go-archive keeps them on a stack; recursion does the same).
            skip, info = matcher.matches(rel, parent_info)
            if not skip:
                packed.add(rel)
        if not is_dir or (skip and not matcher.exception_could_reinclude_under(rel)):
            return  # a file is done; an excluded folder is filepath.SkipDir
        for child in sorted(path.iterdir()):
            visit(child, info)

    root = folder / include
    if root.exists() or root.is_symlink():  # a missing root is only logged
        visit(root, None)


# --- moby/patternmatcher v0.6.0 ------------------------------------------------

def go_clean(path):
    """filepath.Clean on Unix: posixpath.normpath, except that Go keeps one
    leading "/" where POSIX keeps "//"."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


class PatternMatcher:
    def __init__(self, lines):
        """New: trim each line (strings.TrimSpace; Python's strip() differs only
        on a few exotic control characters), skip empty ones, filepath.Clean the
        rest, THEN take off a leading "!" (so "!/x" stays rooted and "!a/../b"
        becomes "b"). A bad pattern is an error: the whole build fails."""
        self.patterns = []
        for line in lines:
            text = line.strip()
            if not text:
                continue
            text = go_clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if text == "!":
                    raise ValueError('illegal exclusion pattern: "!"')
                text = text[1:]
            if _bad_syntax(text):  # New calls filepath.Match(p, ".") for its error
                raise ValueError(f"syntax error in pattern: {text!r}")
            self.patterns.append(Pattern(text, exclusion))

    def matches(self, path, parent_info=None):
        """MatchesUsingParentResults -> (excluded, MatchInfo). The walk passes the
        parent folder's MatchInfo: a pattern that matched the parent matches
        here too. With no MatchInfo it is MatchesOrParentMatches: a pattern
        also matches when it matches any parent folder of `path`."""
        excluded, info = False, []
        for i, pattern in enumerate(self.patterns):
            hit = parent_info[i] if parent_info else False
            if not hit:
                # Later patterns override earlier ones; a pattern that cannot
                # change the answer (an exception while not excluded, or an
                # exclusion while excluded) is not evaluated.
                if pattern.exclusion != excluded:
                    info.append(False)
                    continue
                hit = pattern.match(path)
                if not hit and not parent_info:
                    hit = any(pattern.match(parent) for parent in _parents(path))
            info.append(hit)
            if hit:
                excluded = not pattern.exclusion
        return excluded, info

    def matches_one_parent(self, path):
        """The deprecated package-level Matches, which minikube still uses to
        decide what to force in: besides `path`, it tries only the ONE parent
        folder as deep as the pattern (so `**/c` misses a/b/c/d/Dockerfile)."""
        path = go_clean(path)
        if path == ".":
            return False
        parents = path.split("/")[:-1]
        excluded = False
        for pattern in self.patterns:
            if pattern.exclusion != excluded:
                continue
            hit = pattern.match(path)
            depth = len(pattern.cleaned.split("/"))
            if not hit and parents and depth <= len(parents):
                hit = pattern.match("/".join(parents[:depth]))
            if hit:
                excluded = not pattern.exclusion
        return excluded

    def exception_could_reinclude_under(self, folder):
        """Tarballer.Do's test before filepath.SkipDir: descend into an excluded
        folder only if some exception pattern, read as text, starts with
        "folder/" (so `!**/*.py` does not stop a skip, `!workshop/x.py` does)."""
        return any(p.exclusion and (p.cleaned + "/").startswith(folder + "/")
                   for p in self.patterns)


def _parents(path):
    """a/b/c -> a, a/b (filepath.Dir, then every prefix of it)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class Pattern:
    def __init__(self, cleaned, exclusion):
        self.cleaned, self.exclusion = cleaned, exclusion
        self.kind, self.regexp = _compile(cleaned)

    def match(self, path):
        """Pattern.match: the cheap kinds avoid a regexp."""
        if self.kind == "exact":
            return path == self.cleaned
        if self.kind == "prefix":  # "dir/**": drop the trailing **
            return path.startswith(self.cleaned[:-2])
        if self.kind == "suffix":  # "**/foo": drop the leading **; also matches "foo"
            suffix = self.cleaned[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        return self.regexp.fullmatch(path) is not None  # Go anchors with ^...$


def _compile(pattern):
    """Pattern.compile: `*` and `?` never cross "/", `**` crosses any number of
    folders (`**/` too), `[...]` classes go to the regexp as they are, `\\`
    escapes the next character. Returns (kind, compiled regexp or None)."""
    regex, kind, pos, i = "^", "exact", 0, 0
    while pos < len(pattern):
        ch = pattern[pos]
        pos += 1
        if ch == "*" and pattern[pos:pos + 1] == "*":
            pos += 1
            if pattern[pos:pos + 1] == "/":  # treat **/ as **
                pos += 1
            if pos == len(pattern):  # ** at the end: accept everything below
                if kind == "exact":
                    kind = "prefix"
                else:
                    regex, kind = regex + ".*", "regexp"
            else:
                regex, kind = regex + "(.*/)?", "regexp"
            if i == 0:
                kind = "suffix"
        elif ch == "*":
            regex, kind = regex + "[^/]*", "regexp"
        elif ch == "?":
            regex, kind = regex + "[^/]", "regexp"
        elif ch in ".+()|{}$":  # shouldEscape
            regex += "\\" + ch
        elif ch == "\\":
            if pos < len(pattern):
                regex, kind = regex + "\\" + pattern[pos], "regexp"
                pos += 1
            else:
                regex += "\\"
        elif ch in "[]":
            regex, kind = regex + ch, "regexp"
        else:
            regex += ch
        i += 1
    return kind, (re.compile(regex) if kind == "regexp" else None)


def _bad_syntax(pattern):
    """Where Go's filepath.Match returns ErrBadPattern: a trailing `\\`, or a
    `[class]` that is unterminated, empty, or has a range end missing."""
    pos = 0
    while pos < len(pattern):
        if pattern[pos] == "\\":
            if pos + 1 == len(pattern):
                return True
            pos += 2
        elif pattern[pos] == "[":
            pos += 2 if pattern[pos + 1:pos + 2] == "^" else 1
            ranges = 0
            while not (pattern[pos:pos + 1] == "]" and ranges):
                pos = _class_char(pattern, pos)
                if pos is not None and pattern[pos] == "-":
                    pos = _class_char(pattern, pos + 1)
                if pos is None:
                    return True
                ranges += 1
            pos += 1
        else:
            pos += 1
    return False


def _class_char(pattern, pos):
    """getEsc: one character of a class, maybe `\\`-escaped; something must follow."""
    if pos >= len(pattern) or pattern[pos] in "-]":
        return None
    if pattern[pos] == "\\":
        pos += 1
    pos += 1
    return pos if pos < len(pattern) else None


# --- Dockerfile -----------------------------------------------------------------

def copy_sources(dockerfile_path):
    """The sources of every COPY/ADD that reads the build context, in order:
    copies `--from=` a stage or image are skipped, other flags dropped."""
    sources = []
    for line in _instructions(Path(dockerfile_path).read_text()):
        word, _, rest = line.partition(" ")
        if word.upper() not in ("COPY", "ADD"):
            continue
        args = rest.split()
        flags = []
        while args and args[0].startswith("--"):
            flags.append(args.pop(0))
        if any(flag.startswith("--from=") for flag in flags):
            continue
        if args and args[0].startswith("["):  # exec form: COPY ["a b", "dest/"]
            args = json.loads(" ".join(args))
        sources += args[:-1]
    return sources


def _instructions(text):
    """Logical lines: `\\` continues a line; comment and blank lines are
    dropped, even inside a continuation (the `# escape=` directive is not)."""
    pending = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending
