"""podman, as the container tests use it: images built from the stages'
Dockerfiles on a locally built base, run as they would run in a pod."""

import json
import os
import shutil
import subprocess
import time

import pytest

from support import ROOT, STAGES_DIR

os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "containers" / "containers.conf"))


BASE_BUILD_S = 900   # debootstrap and apt, the first time
IMAGE_BUILD_S = 600


def podman(*args, timeout=120, check=True):
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def require_podman():
    if shutil.which("podman"):
        return
    message = "podman is not installed (Debian package 'podman'; `make system-packages` installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def build_base_image():
    """The cached local stand-in for python:3.12-slim (see scripts/build-base-image.sh)."""
    result = subprocess.run([str(ROOT / "scripts" / "build-base-image.sh")], capture_output=True,
                            text=True, timeout=BASE_BUILD_S)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def build_image(tag, context, base_image, dockerfile=None):
    """Build as a user would, but FROM the local base; return seconds."""
    started = time.monotonic()
    file_args = ["-f", str(dockerfile)] if dockerfile else []
    podman("build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}", *file_args,
           "-t", tag, str(context), timeout=IMAGE_BUILD_S)
    return time.monotonic() - started


def build_stage_image(stage, base_image):
    return build_image(f"cloudnative-echo:{stage}", STAGES_DIR / stage, base_image)


class Container:
    """A stage's container the way a restricted pod runs it: read-only root,
    no capabilities, the image's own non-root user; host networking, so all
    traffic stays on loopback."""

    def __init__(self, stage, **env):
        self.stage = stage
        env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        self.id = podman("run", "-d", "--network", "host", "--read-only", "--cap-drop", "ALL",
                         *env_args, f"cloudnative-echo:{stage}").stdout.strip()

    def exec(self, *command):
        return podman("exec", self.id, *command, check=False, timeout=30)

    def logs(self):
        result = podman("logs", self.id)
        return result.stdout + result.stderr

    def state(self):
        return json.loads(podman("inspect", self.id).stdout)[0]["State"]

    def stop(self, timeout_s):
        """`podman stop -t`: SIGTERM, then SIGKILL after the timeout. Return
        (exit code, seconds it took)."""
        started = time.monotonic()
        podman("stop", "-t", str(timeout_s), self.id, timeout=timeout_s + 60)
        return self.state()["ExitCode"], time.monotonic() - started

    def remove(self):
        podman("rm", "-f", "-t", "0", self.id, check=False)
