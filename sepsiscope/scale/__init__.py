"""The pipeline past one machine: partition tasks run in this process or on a Dask cluster.

``cluster``   mappers (serial / Dask), ``dask_client`` for ``--dask [ADDRESS]``, worker memory
``tasks``     screens and scoring per part of a partitioned cohort (atomic partitioned outputs)
"""

from sepsiscope.scale.cluster import DaskMapper, SerialMapper, dask_client
from sepsiscope.scale.tasks import build_screens_partitioned, cohort_concepts, predict_partitioned

__all__ = ["DaskMapper", "SerialMapper", "dask_client", "build_screens_partitioned", "cohort_concepts",
           "predict_partitioned"]
