"""Image repositories with the private-registry overrides applied.

Seed 001 pulled everything from a private Harbor: every add-on image goes
through here, so one `addons.images.registry` (or a per-image override)
moves them all.
"""

from __future__ import annotations

from config.models import Images
from config.types import split_image


def repository(images: Images, upstream: str) -> str:
    """`nvcr.io/nvidia/k8s-device-plugin` -> the repository to pull it from."""
    if upstream in images.overrides:
        return images.overrides[upstream]
    if images.registry:
        host, _, path = upstream.partition("/")
        if "." in host or ":" in host:
            return f"{images.registry}/{path}"
        return f"{images.registry}/{upstream}"
    return upstream


def image(images: Images, upstream: str, tag: str) -> str:
    return f"{repository(images, upstream)}:{tag}"


def image_reference(images: Images, reference: str) -> str:
    """A full reference (repository:tag, repository@digest) with the registry and overrides applied."""
    repo, suffix = split_image(reference)
    return f"{repository(images, repo)}{suffix}"


def split_repository(repo: str) -> tuple[str, str]:
    """The GPU Operator's values split a repository into (registry path, image name)."""
    head, _, name = repo.rpartition("/")
    return head, name
