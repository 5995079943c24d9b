"""The benchmark scenarios, by name. A scenario module provides:

* ``DESCRIPTION`` (one line),
* ``add_arguments(group)`` its own options, each defaulting to None when the size decides it,
* ``resolve(args, size)`` fills in what the size (``small`` or ``large``) decides,
* ``async run(args, artefacts)`` runs the system under test and its baseline, returns a JSON-able dict,
* ``table(result)`` rows ``(metric, system, baseline, ratio)`` for the printed summary,
* ``targets(result)`` rows ``(target, measured, met)`` against issue #8's goals, for the final summary,
* ``plot(result, path)`` draws the run's PNG (helpers in ``bench.plots``).
"""

from __future__ import annotations

from types import ModuleType

from bench.scenarios import authorization, cdr_flow, full_load, gateway_ingest, isolation, status_fanout

SCENARIOS: dict[str, ModuleType] = {
    "status_fanout": status_fanout,
    "isolation": isolation,
    "authorization": authorization,
    "gateway_ingest": gateway_ingest,
    "full_load": full_load,
    "cdr_flow": cdr_flow,
}
