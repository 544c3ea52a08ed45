"""One partition per documentation source, so one site can be refreshed alone.

Dynamic rather than static: the partition keys follow the sources file at run time
(see the ``source_partitions_sensor``) without reloading the code location.
"""

import dagster as dg

SOURCE_PARTITIONS = "sources"
source_partitions = dg.DynamicPartitionsDefinition(name=SOURCE_PARTITIONS)


def register_sources(instance: dg.DagsterInstance, names: list[str]) -> None:
    """Add partitions for sources not registered yet (used by the demo and tests)."""
    missing = [name for name in names if not instance.has_dynamic_partition(SOURCE_PARTITIONS, name)]
    if missing:
        instance.add_dynamic_partitions(SOURCE_PARTITIONS, missing)
