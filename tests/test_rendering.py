"""Rendering a kustomization without a cluster: kubectl (the venv's, PATH's,
or `minikube kubectl --`), else a built-in reader that renders what our
kustomizations use — nested folders included — or says it cannot."""

import sys

import pytest

from manifests import render as render_with_kubectl
from support import ROOT
from workshop import manifests
from workshop.stages import all_stages, stage_dir

KUSTOMIZATIONS = [stage_dir(s) / "k8s" for s in all_stages()] + [ROOT / "k8s"]


def key(obj):
    return obj["kind"], obj["metadata"]["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda path: str(path.relative_to(ROOT)))
def test_builtin_reader_renders_what_kubectl_renders(kustomization):
    by_kubectl = sorted(render_with_kubectl(kustomization), key=key)
    assert sorted(manifests.render_without_kubectl(kustomization), key=key) == by_kubectl


def executable(directory, name):
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_kubectl_beside_the_venvs_python_comes_first(tmp_path, monkeypatch):
    venv_bin = tmp_path / "venv-bin"
    kubectl = executable(venv_bin, "kubectl")
    executable(tmp_path / "path-bin", "kubectl")
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "path-bin"))
    assert manifests.kubectl_command() == [str(kubectl)]


def test_without_kubectl_minikube_kubectl_renders(tmp_path, monkeypatch):
    executable(tmp_path / "path-bin", "minikube")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv-bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "path-bin"))
    assert manifests.kubectl_command() == ["minikube", "kubectl", "--"]


def test_without_kubectl_or_minikube_the_builtin_reader_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv-bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert manifests.kubectl_command() is None
    assert sorted(manifests.render(ROOT / "k8s"), key=key) == sorted(
        manifests.render_without_kubectl(ROOT / "k8s"), key=key)


def test_builtin_reader_says_what_it_cannot_render(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\npatches:\n  - path: p.yaml\n")
    with pytest.raises(ValueError, match=r"cannot render \['patches'\].*install kubectl"):
        manifests.render_without_kubectl(tmp_path)
