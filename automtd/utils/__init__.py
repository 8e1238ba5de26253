"""Small helpers every package may import: device choice, path expansion, safe outputs, known-file downloads,
timing."""

from automtd.utils._device import resolve_device
from automtd.utils._fetch import KNOWN_FILES, KnownFile, cache_dir, fetch, sha256_of
from automtd.utils._output import atomic_output, check_output
from automtd.utils._paths import expand_path
from automtd.utils._threads import (
    RunnerRegistry,
    ThreadPlan,
    TrialThreads,
    apply_threads,
    available_cores,
    choose_threads,
    plan_threads,
)
from automtd.utils._timing import forward_times, interleaved_medians, median_forward_time, num_threads

__all__ = [
    "KNOWN_FILES", "KnownFile", "atomic_output", "cache_dir", "check_output", "expand_path", "fetch",
    "forward_times", "interleaved_medians", "median_forward_time", "num_threads", "resolve_device", "sha256_of",
    "RunnerRegistry", "ThreadPlan", "TrialThreads", "apply_threads", "available_cores", "choose_threads",
    "plan_threads",
]
