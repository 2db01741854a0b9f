"""A fake `minikube` for the tests, put first on PATH. It behaves as minikube
v1.38 does where our code depends on it (cmd/minikube/cmd/image.go,
pkg/minikube/machine/build_images.go and cache_images.go):

- `image build`, `image tag` and `image rm` exit 0 even when they failed:
  the failure is only in their output;
- tags are normalised (`cloudnative-echo:01-plain` is listed as
  `docker.io/library/cloudnative-echo:01-plain`), `-f` is relative to DIR;
- `image ls` prints one tag per line, `image ls --format json` the images with
  their IDs and tags;
- the docker runtime (minikube's default) moves a tag on `image tag` and only
  untags on `image rm`; containerd's `ctr images tag` will not move an
  existing tag, and its CRI removes a whole image, every tag, on `image rm`;
- `profile list -o json [--light]` lists each valid profile with its Config
  (its Nodes); `--light` skips asking each machine its status, which is what
  takes seconds on VM drivers (cmd/minikube/cmd/config/profile_list.go);
- on a profile of several nodes `image build` builds on the control plane
  only, unless `--all` (pkg/minikube/machine/build_images.go; `minikube image
  build --help`: "--all: Build image on all nodes"), while `image ls` lists
  what any node has.
"""

import json
import os
import sys

from workshop.backends import minikube

FAKE_MINIKUBE = r'''
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = HERE / "state.json"


def normalise(reference):
    if "/" not in reference:
        reference = "docker.io/library/" + reference
    return reference if ":" in reference.rsplit("/", 1)[1] else reference + ":latest"


def image_of(images, reference):
    return next((i for i, tags in images.items() if normalise(reference) in tags), None)


def untag(images, reference):
    for tags in images.values():
        if normalise(reference) in tags:
            tags.remove(normalise(reference))


def build(state, arguments):
    every_node = "--all" in arguments
    arguments = [a for a in arguments if a != "--all"]
    options = dict(zip(arguments[::2], arguments[1::2]))
    directory = Path(arguments[-1])
    dockerfile = directory / options.get("-f", "Dockerfile")  # -f is relative to DIR
    print(f"#1 [internal] load build definition from {dockerfile.name}")
    if state["build_fails"] or not dockerfile.is_file():
        # minikube logs the failure and exits 0 (machine.BuildImage returns nil)
        print('#7 ERROR: process "/bin/sh -c pip install -r requirements.txt" did not complete successfully')
        print("ERROR: failed to solve: exit code: 1")
        return 0
    state["builds"] += 1
    new = hashlib.sha256(f"{options['-t']} {state['builds']}".encode()).hexdigest()
    untag(state["images"], options["-t"])
    state["images"][new] = [normalise(options["-t"])]
    state["built_on"][new] = list(range(state["nodes"])) if every_node else [0]  # 0: the control plane
    print(f"#9 naming to {normalise(options['-t'])} done")
    return 0


def main(argv):
    state = json.loads(STATE.read_text())
    with open(HERE / "calls.jsonl", "a") as calls:
        calls.write(json.dumps(argv) + "\n")
    if argv[:2] == ["profile", "list"]:
        if state["profile_list_s"]:
            import time
            time.sleep(state["profile_list_s"])  # a VM that does not answer
        nodes = [{"Name": "" if i == 0 else f"m0{i + 1}", "ControlPlane": i == 0} for i in range(state["nodes"])]
        print(json.dumps({"invalid": [], "valid": [
            {"Name": p, **({} if "--light" in argv else {"Status": "OK"}), "Config": {"Name": p, "Nodes": nodes}}
            for p in state["profiles"]]}))
        return 0
    profile, command, arguments = argv[1], argv[2:4], argv[4:]
    if argv[0] != "-p" or profile not in state["profiles"]:
        print(f'X Exiting due to MK_USAGE: loading profile: profile "{profile}" not found', file=sys.stderr)
        return 64
    images, containerd = state["images"], state["runtime"] == "containerd"
    code = 0
    if command == ["image", "build"]:
        code = build(state, arguments)
    elif command == ["image", "ls"]:
        if arguments == ["--format", "json"]:
            print(json.dumps([{"id": i, "repoDigests": [], "repoTags": tags, "size": "52428800"}
                              for i, tags in images.items() if tags]))
        else:
            print("\n".join(sorted((t for tags in images.values() for t in tags), reverse=True)))
    elif command == ["image", "tag"]:
        source, target = arguments
        found = image_of(images, source)
        if found is None or (containerd and image_of(images, target) is not None):
            print(f'ctr: image "{normalise(target)}": already exists', file=sys.stderr)  # logged; exit 0
        else:
            untag(images, target)
            images[found].append(normalise(target))
    elif command == ["image", "rm"]:
        found = image_of(images, arguments[0])
        if found is not None and containerd:
            del images[found]  # CRI RemoveImage: the whole image, every tag
        elif found is not None:
            untag(images, arguments[0])  # docker rmi of one of several tags: untag
    state["images"] = {i: tags for i, tags in images.items() if tags}
    STATE.write_text(json.dumps(state))
    return code


sys.exit(main(sys.argv[1:]))
'''


class FakeMinikube:
    """A `minikube` executable first on PATH, its node's images in a JSON file."""

    def __init__(self, directory, monkeypatch, profiles=("minikube",), runtime="docker"):
        directory.mkdir()
        self.directory = directory
        script = directory / "minikube"
        script.write_text(f"#!{sys.executable}\n{FAKE_MINIKUBE}")
        script.chmod(0o755)
        self.write({"profiles": list(profiles), "runtime": runtime, "build_fails": False, "builds": 0,
                    "images": {}, "nodes": 1, "built_on": {}, "profile_list_s": 0})
        monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")

    def read(self):
        return json.loads((self.directory / "state.json").read_text())

    def write(self, state):
        (self.directory / "state.json").write_text(json.dumps(state))

    def update(self, **changes):
        self.write({**self.read(), **changes})

    def add_image(self, reference, image_id):
        state = self.read()
        state["images"].setdefault(image_id, []).append(minikube.normalise(reference))
        self.write(state)

    def image_id(self, reference):
        wanted = minikube.normalise(reference)
        return next((i for i, tags in self.read()["images"].items() if wanted in tags), None)

    def nodes_with(self, reference):
        """Which nodes the image tagged `reference` was built on (0: the control plane)."""
        return self.read()["built_on"].get(self.image_id(reference), [])

    def tags(self):
        return {tag for tags in self.read()["images"].values() for tag in tags}

    def calls(self):
        path = self.directory / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
