"""Backends run a stage's Deployment: `local` (processes here) or `kube`."""


def make_backend(name, **options):
    if name == "local":
        from .local import LocalBackend
        return LocalBackend(**options)
    if name == "kube":
        from .kube import KubeBackend
        return KubeBackend(**options)
    raise ValueError(f"unknown backend {name!r}: local or kube")
