"""The clinical data types a vault can hold, with their LOINC and FHIR codes.

Built in: the diabetes team's types from the paper and the documents around them. A network
adds its own in genesis (`data_types`); a genesis type may not redefine a built-in one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from carechain.consensus.genesis import DataType

BUILT_IN: tuple[DataType, ...] = (
    DataType("glucose", "Blood glucose", "Observation", ("2339-0", "14743-9")),
    DataType("cgm", "Continuous glucose monitoring report", "Observation", ("99504-3",)),
    DataType("hba1c", "Hemoglobin A1c", "Observation", ("4548-4",)),
    DataType("blood-pressure", "Blood pressure panel", "Observation", ("85354-9",)),
    DataType("prescriptions", "Prescriptions", "MedicationRequest", ()),
    DataType("ecg", "Electrocardiogram", "DocumentReference", ("11524-6",)),
    DataType("imaging", "Imaging study", "ImagingStudy", ()),
    DataType("lab-report", "Laboratory report", "DiagnosticReport", ("11502-2",)),
)


def data_type_registry(extra: Iterable[DataType] = ()) -> Mapping[str, DataType]:
    registry = {t.name: t for t in BUILT_IN}
    for data_type in extra:
        if data_type.name in registry:
            raise ValueError(f"genesis data type {data_type.name!r} redefines a built-in type")
        registry[data_type.name] = data_type
    return MappingProxyType(registry)
