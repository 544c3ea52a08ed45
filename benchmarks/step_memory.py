"""Peak RSS of this process during each step of a Dagster run executing in it.

Each step start resets the kernel's peak-RSS mark of this process (writing 5 to
``/proc/self/clear_refs``, Linux 4.0+) and each step end reads it (VmHWM) and the RSS then
(VmRSS). Chosen over a thread sampling VmRSS every few tens of milliseconds because it is exact:
the kernel raises the mark on every page the process maps in, however brief the spike, where a
sampler sees only what is resident when it wakes, and wakes late while a step holds the GIL. It
holds one step at a time only, which the in-process executor gives (steps in order, in the run's
thread); a step starting while another is open raises rather than mixing their memory.

Resetting the mark loses the process's own peak, so the mark is kept before each reset:
``peak_rss_mb`` here is the process's peak since it started, whatever steps reset in between.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

_STARTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_RESTARTED}
# A step retried ends an attempt with STEP_UP_FOR_RETRY; its next attempt starts with STEP_RESTARTED.
_ENDS = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY}

_peak_before_resets_kb = 0


def status_kb(field: str) -> int:
    """A kB field of /proc/self/status (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) since it started, across the per-step resets."""
    return max(_peak_before_resets_kb, status_kb("VmHWM")) / 1024


def reset_peak() -> None:
    """Restart VmHWM from the current RSS, keeping the peak so far for :func:`peak_rss_mb`."""
    global _peak_before_resets_kb
    _peak_before_resets_kb = max(_peak_before_resets_kb, status_kb("VmHWM"))
    Path("/proc/self/clear_refs").write_text("5")


@dataclass(frozen=True)
class StepMemory:
    peak_rss_mb: float  # the process's peak while the step ran (over its attempts, if retried)
    end_rss_mb: float  # the process's RSS when the step ended


class _StepMemoryRecorder:
    """Listens to one run's events (``DagsterInstance.add_event_listener``, called in the thread
    that logs each event, so at the step's start and end) and keeps each step's memory, in the
    order the steps ran."""

    def __init__(self) -> None:
        self.steps: dict[str, StepMemory] = {}
        self._running: str | None = None

    def __call__(self, event: dg.EventLogEntry) -> None:
        kind, step = event.dagster_event_type, event.step_key
        if kind in _STARTS:
            if self._running is not None:
                raise RuntimeError(f"step {step} started while {self._running} ran: one peak cannot tell them apart")
            reset_peak()
            self._running = step
        elif kind in _ENDS and step is not None:
            peak = status_kb("VmHWM") / 1024
            earlier = self.steps.get(step)
            self.steps[step] = StepMemory(max(peak, earlier.peak_rss_mb if earlier else 0.0), status_kb("VmRSS") / 1024)
            self._running = None


def execute_in_process(
    job: dg.JobDefinition, instance: dg.DagsterInstance, **arguments: Any
) -> tuple[dg.ExecuteInProcessResult, dict[str, StepMemory]]:
    """``job.execute_in_process`` on ``instance`` (with ``arguments``), and each step's memory."""
    run_id = str(uuid.uuid4())  # the listener is registered for a run ID before the run exists
    recorder = _StepMemoryRecorder()
    instance.add_event_listener(run_id, recorder)
    return job.execute_in_process(instance=instance, run_id=run_id, **arguments), recorder.steps
