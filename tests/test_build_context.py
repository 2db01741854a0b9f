"""The build context `minikube image build` sends holds the Dockerfile and
everything it copies. minikube packs the folder itself and forces in only
.dockerignore and the -f file, so a missing Dockerfile fails the build inside
the node while minikube exits 0; these tests catch it first. The model of
minikube's packing is in build_context.py."""

import shutil

import pytest

from build_context import PatternMatcher, copy_sources, go_clean, packed_files, read_dockerignore
from support import ROOT, STAGES, STAGES_DIR

LOADGEN = "loadgen-image/Dockerfile"


def in_context(source, packed):
    """A COPY source is there as itself, or as a folder with something in it."""
    name = go_clean(source)
    return name in packed or any(path.startswith(name + "/") for path in packed)


# --- The matcher, on cases from moby/patternmatcher v0.6.0's patternmatcher_test.go

@pytest.mark.parametrize("patterns, path, excluded", [
    (["*"], "fileutils.go", True),                              # TestWildcardMatches
    (["!fileutils.go", "*.go"], "fileutils.go", True),          # TestExclusionPatternMatchesPatternBefore
    (["*.go", "!fileutils.go"], "fileutils.go", False),         # TestExclusionPatternMatchesPatternAfter
    (["docs", "!docs/README.md"], "docs/README.md", False),     # TestPatternMatchesFolderExclusions
    (["docs/", "!docs/README.md"], "docs/README.md", False),    # TestPatternMatchesFolderWithSlashExclusions
])
def test_exceptions_and_their_order(patterns, path, excluded):
    matcher = PatternMatcher(patterns)
    assert matcher.matches_one_parent(path) == excluded  # these Go tests call Matches
    assert matcher.matches(path)[0] == excluded


@pytest.mark.parametrize("patterns, path, excluded", [     # all from TestMatches
    (["**/dir2/*"], "dir/dir2/file", True),
    (["**/dir"], "dir/file", True),                         # a matching parent excludes its content
    (["**/.foo"], "bar.foo", False),
    (["abc/**"], "abc", False),
    (["a/*.txt"], "a/dir/file.txt", False),                 # * never crosses "/"
    (["a**/*.txt"], "a/dir/dir/file.txt", True),
    (["a[^b-d]e"], "aze", True),
    (["abc?def"], "abcdef", False),
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
])
def test_wildcards_and_parent_folders(patterns, path, excluded):
    matcher = PatternMatcher(patterns)
    assert matcher.matches(path)[0] == excluded
    # ...and as the walk asks: each parent folder first, its MatchInfo passed
    # down (TestMatches' MatchesUsingParentResults subtest).
    info, parts = None, path.split("/")
    for depth in range(1, len(parts)):
        _, info = matcher.matches("/".join(parts[:depth]), info)
    assert matcher.matches(path, info)[0] == excluded


@pytest.mark.parametrize("bad", ["[", "!"])  # TestMatchesWithMalformedPatterns, TestSingleExclamationError
def test_a_bad_pattern_is_an_error(bad):
    with pytest.raises(ValueError):
        PatternMatcher([bad])


def test_minikube_reads_dockerignore_lines_as_they_are(tmp_path):
    (tmp_path / ".dockerignore").write_text("# a comment\n/Dockerfile\n\n  !x  \n")
    matcher = PatternMatcher(read_dockerignore(tmp_path))
    # Blank lines go (TestCleanPatternsStripEmptyPatterns), spaces are trimmed
    # (TestCleanPatternsLeadingSpaceTrimmed); the comment stays a pattern and
    # "/" stays in front, so "/Dockerfile" leaves the Dockerfile in.
    assert [(p.cleaned, p.exclusion) for p in matcher.patterns] == [
        ("# a comment", False), ("/Dockerfile", False), ("x", True)]
    assert not matcher.matches("Dockerfile")[0]


# --- The repository's build contexts -------------------------------------------

@pytest.mark.parametrize("stage", STAGES)
def test_stage_context_holds_the_dockerfile_and_what_it_copies(stage):
    folder = STAGES_DIR / stage
    packed = packed_files(folder)  # minikube image build -t ... stages/<stage>: no -f
    sources = copy_sources(folder / "Dockerfile")
    assert "Dockerfile" in packed
    assert sources and all(in_context(source, packed) for source in sources)
    assert packed == {".dockerignore", "Dockerfile", *sources}  # and nothing else


def test_loadgen_context_holds_the_dockerfile_and_the_driver_package():
    packed = packed_files(ROOT, dockerfile=LOADGEN)  # -f loadgen-image/Dockerfile .
    assert LOADGEN in packed
    assert all(in_context(source, packed) for source in copy_sources(ROOT / LOADGEN))
    assert {"workshop/__init__.py", "workshop/backends/cluster_job.py"} <= packed
    assert not [path for path in packed if "__pycache__" in path.split("/")]


def test_root_dockerignore_admits_the_loadgen_dockerfile_by_itself():
    assert LOADGEN in packed_files(ROOT)  # nothing forced in


def test_root_dockerignore_leaves_out_bytecode(tmp_path):
    shutil.copy(ROOT / ".dockerignore", tmp_path)
    for folder in ("workshop", "workshop/backends"):
        (tmp_path / folder / "__pycache__").mkdir(parents=True)
        (tmp_path / folder / "__pycache__" / "m.cpython-312.pyc").write_bytes(b"")
        (tmp_path / folder / "m.py").write_text("")
    packed = packed_files(tmp_path)
    assert {"workshop/m.py", "workshop/backends/m.py"} <= packed
    assert not [path for path in packed if "__pycache__" in path]


def test_model_catches_a_dockerignore_that_leaves_out_the_dockerfile(tmp_path):
    # The stage 01 .dockerignore before the fix: no !Dockerfile.
    for name in ("Dockerfile", "echo_server.py", "requirements.txt"):
        shutil.copy(STAGES_DIR / "01-plain" / name, tmp_path)
    (tmp_path / ".dockerignore").write_text(
        "# Only the service code and its requirements go into the image.\n"
        "*\n!echo_server.py\n!requirements.txt\n")
    assert "Dockerfile" not in packed_files(tmp_path)  # minikube image build <folder>
    assert "Dockerfile" in packed_files(tmp_path, dockerfile="Dockerfile")  # ... -f Dockerfile
