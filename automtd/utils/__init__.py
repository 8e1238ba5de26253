"""Small helpers every package may import: device choice, path expansion, known-file downloads, timing."""

from automtd.utils._device import resolve_device
from automtd.utils._fetch import KNOWN_FILES, KnownFile, cache_dir, fetch, sha256_of
from automtd.utils._paths import expand_path
from automtd.utils._timing import forward_times, interleaved_medians, median_forward_time, num_threads

__all__ = [
    "KNOWN_FILES", "KnownFile", "cache_dir", "expand_path", "fetch", "forward_times", "interleaved_medians",
    "median_forward_time", "num_threads", "resolve_device", "sha256_of",
]
