"""Building the workshop's images into minikube, and choosing the context,
against a fake `minikube` put first on PATH (tests/fake_minikube.py)."""

import asyncio
import textwrap

import kubernetes.config  # noqa: F401  (imported before a test sets $KUBECONFIG, which it reads on import)
import pytest

from fake_minikube import FakeMinikube
from support import ROOT, STAGES
from kube_cluster import VERSION
from workshop import __main__ as cli
from workshop import notebook_setup
from workshop.backends import minikube
from workshop.backends.cluster_job import LOADGEN_IMAGE
from workshop.backends.minikube import ContextRefused, ImageBuildFailed, build_command, build_images


@pytest.fixture
def fake_minikube(tmp_path, monkeypatch):
    return FakeMinikube(tmp_path / "bin", monkeypatch)


STAGE_IMAGE = "cloudnative-echo:04-shutdown"


# -- build_images --

def test_a_failed_build_is_caught_although_minikube_exits_0_and_the_old_image_keeps_the_tag(fake_minikube):
    fake_minikube.add_image(STAGE_IMAGE, "old")
    fake_minikube.update(build_fails=True)
    with pytest.raises(ImageBuildFailed) as failed:
        build_images(["04"], progress=lambda line: None)
    message = str(failed.value)
    assert f"{STAGE_IMAGE} was not built" in message
    by_hand = f"minikube -p minikube image build -t {STAGE_IMAGE} {ROOT}/stages/04-shutdown"
    assert by_hand in message
    assert "ERROR: failed to solve" in message  # the build's last lines


def test_a_successful_build_moves_the_tag_to_the_new_image_and_leaves_no_temporary_tag(fake_minikube):
    fake_minikube.add_image(STAGE_IMAGE, "old")
    build_images(["04"], progress=lambda line: None)
    assert fake_minikube.image_id(STAGE_IMAGE) not in (None, "old")
    assert not [tag for tag in fake_minikube.tags() if "-build-" in tag]
    assert fake_minikube.image_id(LOADGEN_IMAGE) is not None


def test_on_containerd_the_tag_still_ends_on_the_new_image(tmp_path, monkeypatch):
    # ctr will not move an existing tag, and CRI's rm takes every tag of the image with it
    fake = FakeMinikube(tmp_path / "bin", monkeypatch, runtime="containerd")
    fake.add_image(STAGE_IMAGE, "old")
    build_images(["04"], progress=lambda line: None)
    assert fake.image_id(STAGE_IMAGE) not in (None, "old")
    assert not [tag for tag in fake.tags() if "-build-" in tag]


def test_images_are_built_with_the_chapters_commands(fake_minikube):
    build_images(["04"], progress=lambda line: None)
    builds = [call for call in fake_minikube.calls() if call[2:4] == ["image", "build"]]
    assert [call[:5] + call[6:] for call in builds] == [
        ["-p", "minikube", "image", "build", "-t", str(ROOT / "stages" / "04-shutdown")],
        ["-p", "minikube", "image", "build", "-t", "-f", "loadgen-image/Dockerfile", str(ROOT)]]
    assert builds[0][5].startswith(f"{STAGE_IMAGE}-build-")
    assert builds[1][5].startswith(f"{LOADGEN_IMAGE}-build-")
    assert build_command("04", STAGE_IMAGE) == ["minikube", *builds[0][:5], STAGE_IMAGE, *builds[0][6:]]


def test_progress_gets_one_line_per_image(fake_minikube):
    lines = []
    build_images(["01", "04"], progress=lines.append)
    assert [line.split(" in ")[0] for line in lines] == [
        "built cloudnative-echo:01-plain", f"built {STAGE_IMAGE}", f"built {LOADGEN_IMAGE}"]
    assert all(line.endswith(" s") for line in lines)


# -- what is on the node --

def test_images_on_node_lists_normalised_references_and_has_image_finds_a_short_name(fake_minikube):
    fake_minikube.add_image(STAGE_IMAGE, "a")
    listed = minikube.images_on_node("minikube")
    assert listed == {f"docker.io/library/{STAGE_IMAGE}"}
    assert minikube.has_image(STAGE_IMAGE, listed)
    assert not minikube.has_image("cloudnative-echo:05-metrics", listed)


# -- choose_context --

def kubeconfig(tmp_path, monkeypatch, current, server="https://127.0.0.1:6443"):
    path = tmp_path / "kubeconfig"
    path.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        current-context: {current}
        clusters:
        - name: {current}
          cluster: {{server: "{server}"}}
        - name: minikube
          cluster: {{server: "https://192.168.49.2:8443"}}
        users:
        - name: someone
          user: {{token: "not-a-secret"}}
        contexts:
        - name: {current}
          context: {{cluster: {current}, user: someone}}
        - name: minikube
          context: {{cluster: minikube, user: someone}}
        """))
    monkeypatch.setenv("KUBECONFIG", str(path))


def test_choose_context_refuses_a_current_context_that_is_not_a_minikube_profile(
        fake_minikube, tmp_path, monkeypatch):
    kubeconfig(tmp_path, monkeypatch, current="kind-workshop")
    with pytest.raises(ContextRefused) as refused:
        minikube.choose_context()
    assert "kubectl config use-context minikube" in str(refused.value)
    assert "'kind-workshop'" in str(refused.value)


def test_choose_context_takes_the_current_minikube_context_or_an_explicit_one(
        fake_minikube, tmp_path, monkeypatch):
    kubeconfig(tmp_path, monkeypatch, current="kind-workshop")
    assert minikube.choose_context("kind-workshop") == "kind-workshop"
    kubeconfig(tmp_path, monkeypatch, current="minikube")
    assert minikube.choose_context() == "minikube"


# -- python -m workshop images --

def test_images_command_builds_every_stage_and_the_load_generator(fake_minikube, capsys):
    assert cli.main(["images", "--context", "minikube"]) == 0
    printed = capsys.readouterr().out
    for image in [f"cloudnative-echo:{stage}" for stage in STAGES] + [LOADGEN_IMAGE]:
        assert fake_minikube.image_id(image) is not None, image
        assert f"built {image} in " in printed


def test_images_command_exits_2_with_the_failure(fake_minikube, capsys):
    fake_minikube.update(build_fails=True)
    assert cli.main(["images", "--context", "minikube"]) == 2
    assert "cloudnative-echo:01-plain was not built" in capsys.readouterr().err


def test_images_command_refuses_a_context_that_is_not_a_minikube_profile(fake_minikube, capsys):
    assert cli.main(["images", "--context", "kind-workshop"]) == 2
    assert "not a minikube profile" in capsys.readouterr().err


async def test_auto_picks_a_cluster_that_answers_only_if_it_is_a_minikube_profile(kmock, tmp_path, monkeypatch,
                                                                                fake_minikube):
    """Notebook 00's BACKEND = "auto" never applies the workshop to whatever
    cluster the kubeconfig happens to point at."""
    kmock["get"]["/version/"] << VERSION
    kubeconfig(tmp_path, monkeypatch, "work-cluster", server=str(kmock.url).rstrip("/"))
    assert await asyncio.to_thread(notebook_setup.cluster_answers)
    assert await asyncio.to_thread(notebook_setup.choose_backend, "auto") == "local"
    fake_minikube.update(profiles=["work-cluster"])
    assert await asyncio.to_thread(notebook_setup.choose_backend, "auto") == "kube"


# -- asking minikube once, lightly; several nodes; what has not changed --

def test_a_demo_asks_for_the_profiles_once_and_lightly(fake_minikube, capsys):
    args = cli.parse_args(["demo", "--backend", "kube", "--context", "minikube"])
    options = cli.backend_options(args, ["04"])
    assert options == {"context": "minikube", "build_images": False}
    listings = [call for call in fake_minikube.calls() if call[:2] == ["profile", "list"]]
    assert listings == [["profile", "list", "-o", "json", "--light"]]


def test_a_profile_list_that_times_out_is_one_clear_line(fake_minikube, monkeypatch, capsys):
    monkeypatch.setattr(minikube, "PROFILE_LIST_TIMEOUT_S", 1)
    fake_minikube.update(profile_list_s=5)
    assert cli.main(["images", "--context", "minikube"]) == 2
    err = capsys.readouterr().err
    assert "did not answer within 1 s" in err and "minikube status" in err and "Traceback" not in err


def test_on_several_nodes_every_image_is_built_on_every_node(fake_minikube):
    fake_minikube.update(nodes=2)
    assert minikube.profiles() == {"minikube": 2}
    build_images(["04"], progress=lambda line: None, nodes=minikube.profiles()["minikube"])
    for image in (STAGE_IMAGE, LOADGEN_IMAGE):
        assert fake_minikube.nodes_with(image) == [0, 1], image  # not the control plane only
    builds = [call for call in fake_minikube.calls() if call[2:4] == ["image", "build"]]
    assert all("--all" in call for call in builds)


def test_an_image_whose_sources_have_not_changed_is_not_built_again(fake_minikube):
    lines = []
    build_images(["04"], progress=lines.append)
    builds = fake_minikube.read()["builds"]
    build_images(["04"], progress=lines.append)
    assert fake_minikube.read()["builds"] == builds  # nothing built the second time
    assert lines[-2:] == [f"{STAGE_IMAGE} is up to date (built from these sources already)",
                          f"{LOADGEN_IMAGE} is up to date (built from these sources already)"]


def test_a_changed_source_builds_its_image_again(fake_minikube, monkeypatch):
    build_images(["04"], progress=lambda line: None)
    before = fake_minikube.image_id(STAGE_IMAGE)
    real_hash = minikube.source_hash
    monkeypatch.setattr(minikube, "source_hash", lambda stage: real_hash(stage) + ("x" if stage else ""))
    build_images(["04"], progress=lambda line: None)
    assert fake_minikube.image_id(STAGE_IMAGE) != before  # the stage's sources changed: rebuilt
    assert minikube.source_hash("04") != minikube.source_hash("05")
