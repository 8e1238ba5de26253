"""Small helpers every package may import: device choice, path expansion, known-file downloads."""

from automtd.utils._device import resolve_device
from automtd.utils._fetch import KNOWN_FILES, KnownFile, cache_dir, fetch, sha256_of
from automtd.utils._paths import expand_path

__all__ = ["KNOWN_FILES", "KnownFile", "cache_dir", "expand_path", "fetch", "resolve_device", "sha256_of"]
