"""minikube, as the kube backend uses it: which kubeconfig contexts are
minikube profiles (minikube names a profile's context after the profile), and
building the workshop's images into the node with the chapters' commands.

`minikube profile list` takes seconds on VM drivers (it asks every profile's
machine for its status): it is asked once per command, `--light` (the
profiles' config only, no status), and the answer is passed down. A profile
of several nodes gets its images built with `--all`: `minikube image build`
builds on the control plane only otherwise, while `image ls` lists what any
node has, so the check would pass and pods on the workers fail to pull
(pkg/minikube/machine/build_images.go; `minikube image build --help`).

`minikube image build` exits 0 even when the build failed (it logs the error
and returns nil: kubernetes/minikube#16576), and an older image may still
carry the tag. So a build is never trusted, it is checked on the node:

1. build to a tag that has never existed, `<image>-build-<random hex>`: if
   `minikube image ls` lists it, this build made it (a stale image cannot);
2. `minikube image tag` it to the real tag, and check that the real tag now
   names the same image ID (`image ls --format json`). `image tag` exits 0 on
   failure too, and containerd's `ctr images tag` will not move an existing
   tag: then the stale tag is removed and the tag made again;
3. `minikube image rm` the temporary tag. With docker (minikube's default)
   that only untags; containerd's CRI removes the whole image, every tag. So
   the real tag is checked again: if it went too, it is now known to be
   absent, and a plain build to it (from the builder's cache) that leaves it
   listed is proof again.
"""

import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time

from ..stages import ROOT, stage_dir

BUILD_TIMEOUT_S = 1800   # a first build downloads the base image and the wheels
PROFILE_LIST_TIMEOUT_S = 60
TAIL_LINES = 20          # of a failed build's output, in the error


class ImageBuildFailed(RuntimeError):
    """A build that did not leave its image on the node (minikube exited 0 anyway)."""


def profiles(run=subprocess.run):
    """The valid minikube profiles here, each name -> its number of nodes
    ({} without minikube). ContextRefused if minikube does not answer."""
    if shutil.which("minikube") is None:
        return {}
    command = ["minikube", "profile", "list", "-o", "json", "--light"]
    try:
        listed = run(command, capture_output=True, text=True, timeout=PROFILE_LIST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ContextRefused(f"`{shlex.join(command)}` did not answer within {PROFILE_LIST_TIMEOUT_S} s (is a "
                             "minikube VM stuck?). See what minikube says with:\n  minikube status") from None
    try:
        valid = json.loads(listed.stdout).get("valid") or []
    except ValueError:
        return {}
    return {profile["Name"]: len((profile.get("Config") or {}).get("Nodes") or [None]) for profile in valid}


def is_profile(context, run=subprocess.run, known=None):
    """True if kubeconfig context `context` is a minikube profile's;
    `known`: profiles() already asked."""
    return context in (profiles(run) if known is None else known)


def kubeconfig_file():
    """$KUBECONFIG as it is now (the client reads it once, when imported), or None: ~/.kube/config."""
    return os.environ.get("KUBECONFIG") or None


class ContextRefused(RuntimeError):
    """The context's cluster cannot get our images from us: say how to fix it."""


def current_context():
    """The kubeconfig's current context, or None when there is no kubeconfig."""
    from kubernetes import config
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig_file())
    except (config.ConfigException, OSError):
        return None
    return active["name"]


def choose_context(context=None, build_images=True, is_profile=is_profile, known=None):
    """The kubeconfig context to use: `context`, or the current one. A current
    context that is not a minikube profile is refused when images are to be
    built, with the command that fixes it."""
    if context is not None:
        return context
    current = current_context()
    if current is None:
        raise ContextRefused("no kubeconfig context. Start a cluster with:\n  minikube start")
    if build_images and not (current in known if known is not None else is_profile(current)):
        raise ContextRefused(
            f"the current kubeconfig context {current!r} is not a minikube profile, so the workshop "
            "cannot build its images into it. Fix it with:\n  kubectl config use-context minikube\n"
            "(or `minikube start` first), or pass --context NAME / --no-build if you have built "
            "the images into that cluster yourself.")
    return current


def build_command(stage, image, profile="minikube", nodes=1):
    """What the chapters tell users to run (with `--all` on a profile of
    several nodes); the load generator (stage None) builds from the
    repository root."""
    every_node = ["--all"] if nodes > 1 else []
    if stage is None:
        return ["minikube", "-p", profile, "image", "build", *every_node, "-t", image,
                "-f", "loadgen-image/Dockerfile", str(ROOT)]
    return ["minikube", "-p", profile, "image", "build", *every_node, "-t", image, str(stage_dir(stage))]


# -- what is on the node --

def normalise(reference):
    """An image reference as minikube lists it: `cloudnative-echo:01-plain`
    is `docker.io/library/cloudnative-echo:01-plain` (docker's rules)."""
    first, slash, _ = reference.partition("/")
    if not slash:
        reference = f"docker.io/library/{reference}"
    elif "." not in first and ":" not in first and first != "localhost":
        reference = f"docker.io/{reference}"
    if "@" not in reference and ":" not in reference.rsplit("/", 1)[1]:
        reference += ":latest"
    return reference


def _minikube(profile, *arguments, run=subprocess.run, timeout=120):
    return run(["minikube", "-p", profile, *arguments], capture_output=True, text=True, timeout=timeout)


def images_on_node(profile="minikube", run=subprocess.run):
    """Every image reference `minikube image ls` lists, normalised."""
    return set(image_ids(profile, run))


def has_image(image, listed):
    """True if `image` (e.g. `cloudnative-echo:04-shutdown`) is among `listed`."""
    return normalise(image) in {normalise(reference) for reference in listed}


def image_ids(profile="minikube", run=subprocess.run):
    """Each listed image reference (normalised) -> the ID of its image."""
    listed = _minikube(profile, "image", "ls", "--format", "json", run=run)
    if listed.returncode != 0:
        raise RuntimeError(f"`minikube -p {profile} image ls` failed: {tail(listed.stdout, listed.stderr)}")
    images = json.loads(listed.stdout.strip() or "[]")
    return {normalise(tag): image["id"] for image in images for tag in image.get("repoTags") or []}


def tail(*outputs, lines=TAIL_LINES):
    text = "\n".join(output for output in outputs if output and output.strip())
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


# -- building --

def workshop_images(stages):
    """(stage, image) for each stage's Deployment, and the load generator's (stage None)."""
    from ..manifests import load_stage
    from .cluster_job import LOADGEN_IMAGE
    return [(stage, load_stage(stage).image) for stage in stages] + [(None, LOADGEN_IMAGE)]


def build_images(stages, profile="minikube", progress=print, run=subprocess.run, nodes=1):
    """Build every stage's image and the load generator's into the profile's
    node(s), each checked there (see the module docstring); ImageBuildFailed
    at the first that is not. An image whose sources have not changed since
    it was built (its source tag, below, names it on the node) is not built
    again: a demo does not rebuild six images."""
    for stage, image in workshop_images(stages):
        started = time.monotonic()
        source = source_tag(image, source_hash(stage))
        ids = image_ids(profile, run)
        if ids.get(normalise(image)) is not None and ids.get(normalise(source)) == ids.get(normalise(image)):
            progress(f"{image} is up to date (built from these sources already)")
            continue
        build_image(stage, image, profile, run, nodes)
        _tag(image, source, image_ids(profile, run)[normalise(image)], profile, run)
        progress(f"built {image} in {time.monotonic() - started:.1f} s")


def source_hash(stage):
    """A digest of what an image is built from: the stage's folder, or for
    the load generator (stage None) its Dockerfile's folder and the driver
    package (what loadgen-image/Dockerfile copies). Python's caches left out."""
    roots = [stage_dir(stage)] if stage is not None else [ROOT / "loadgen-image", ROOT / "workshop"]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def source_tag(image, digest):
    """The second tag a built image gets: which sources it was built from."""
    return f"{image}-src-{digest}"


def build_image(stage, image, profile="minikube", run=subprocess.run, nodes=1):
    """Build one image and check it is on the node under its tag (the three
    steps of the module docstring)."""
    scratch = f"{image}-build-{secrets.token_hex(4)}"  # never seen before: only this build can make it
    new_id = _build(stage, scratch, image, profile, run, nodes)
    if not _tag(scratch, image, new_id, profile, run):
        _minikube(profile, "image", "rm", image, run=run)  # containerd does not move an existing tag
        if not _tag(scratch, image, new_id, profile, run):
            raise ImageBuildFailed(f"{image} was built (as {scratch}), but `minikube image tag` did not "
                                   f"point {image} at it. Remove the old one and build again:\n"
                                   f"  minikube -p {profile} image rm {image}")
    _minikube(profile, "image", "rm", scratch, run=run)
    if normalise(image) not in image_ids(profile, run):  # containerd removed every tag: absent, so build it
        _build(stage, image, image, profile, run, nodes)


def _tag(source, target, image_id, profile, run):
    """Point `target` at `image_id` (tagged as `source`); True if it does now."""
    if image_ids(profile, run).get(normalise(target)) != image_id:
        _minikube(profile, "image", "tag", source, target, run=run)
    return image_ids(profile, run).get(normalise(target)) == image_id


def _build(stage, tag, image, profile, run, nodes=1):
    """Build to `tag`, known not to be on the node; the ID of the image it names afterwards."""
    by_hand = shlex.join(build_command(stage, image, profile, nodes))
    try:
        built = run(build_command(stage, tag, profile, nodes), capture_output=True, text=True,
                    timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as expired:
        output = tail(_text(expired.stdout), _text(expired.stderr))
        raise ImageBuildFailed(f"building {image} did not finish within {BUILD_TIMEOUT_S} s. Run it by "
                               f"hand:\n  {by_hand}\n{output}") from None
    new_id = image_ids(profile, run).get(normalise(tag))
    if new_id is None:
        raise ImageBuildFailed(
            f"{image} was not built: minikube exited {built.returncode}, but no image {tag} is on the node "
            f"(minikube reports a failed build only in its output). See the error with:\n  {by_hand}\n"
            f"The build's last lines:\n{tail(built.stdout, built.stderr)}")
    return new_id


def _text(output):
    return output.decode(errors="replace") if isinstance(output, bytes) else output
