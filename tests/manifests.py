"""Render kustomizations with the real kubectl and validate objects against the
real Kubernetes schemas (kubernetes-validate, strict)."""

import os
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

OLDEST_SUPPORTED = "1.30.0"
VERSIONS = [OLDEST_SUPPORTED, kubernetes_validate.latest_version()]


def render(kustomization_dir):
    kubectl = shutil.which("kubectl")
    if not kubectl:
        message = "kubectl is not installed (a workshop prerequisite)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run([kubectl, "kustomize", str(kustomization_dir)],
                            capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validation_errors(obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return str(error)
    return None


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]
