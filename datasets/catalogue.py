"""The dataset catalogue: one row per dataset. Adding a dataset = one row here + ``configs/datasets/<name>.yaml``.

``name`` is the registry key (``DATASET.NAME``), the folder under ``DATASET.ROOT`` and the split-file stem:
``ROOT/<name>/split_<name>.json`` with images under ``ROOT/<name>/<name>/``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # registry key = folder name = split-file stem
    modality: str
    num_classes: int
    hf_file: str = ""  # archive in the Hugging Face dataset repository (real datasets)
    gdrive_id: str = ""  # Google Drive mirror (real datasets)
    get_command: str = "python scripts/download_data.py --root {root} --datasets {name}"

    @property
    def split_file(self) -> str:
        return f"split_{self.name}.json"

    def how_to_get(self, root: str) -> str:
        """The command that puts this dataset under ``root``."""
        return self.get_command.format(root=root, name=self.name)


CATALOGUE: tuple[DatasetInfo, ...] = (
    DatasetInfo(
        name="SynthMed",
        modality="synthetic (generated offline)",
        num_classes=6,
        get_command="python scripts/make_synthetic_data.py --root {root}",
    ),
)


def get_info(name: str) -> DatasetInfo:
    for row in CATALOGUE:
        if row.name == name:
            return row
    raise KeyError(name)
