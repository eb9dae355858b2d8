"""The dataset catalogue: one row per dataset. Adding a dataset = one row here + ``configs/datasets/<config>.yaml``.

``name`` is the registry key (``DATASET.NAME``), the folder under ``DATASET.ROOT`` and the split-file stem:
``ROOT/<name>/split_<name>.json`` with images under ``ROOT/<name>/<name>/<class_folder>/…``. The facts of the 11
benchmark datasets (class names in label order, split sizes, sources) are those of the BiomedCoOp / OGKD releases
(SPEC §5, §7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synth import synthlesion

HF_DATASET_REPO = "TahaKoleilat/BiomedCoOp"  # Hugging Face *dataset* repository holding the 11 archives


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # registry key = folder name = split-file stem
    config: str  # configs/datasets/<config>.yaml and the lower-case name used by the run scripts
    modality: str
    classnames: tuple[str, ...]  # label order (label id = position), as in the split file; () = not checked
    sizes: tuple[int, int, int] | None = None  # train / val / test items in the released split file
    hf_file: str = ""  # archive in HF_DATASET_REPO
    gdrive_id: str = ""  # Google Drive mirror of the same archive
    base_to_novel: bool = True  # part of the base-to-novel benchmark (BUSI is not)
    get_command: str = "python scripts/download_data.py --root {root} --datasets {config}"

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def split_file(self) -> str:
        return f"split_{self.name}.json"

    @property
    def base_classes(self) -> tuple[str, ...]:
        """The first ceil(n/2) classes in label order (SPEC §3.2)."""
        return self.classnames[: math.ceil(self.num_classes / 2)]

    @property
    def new_classes(self) -> tuple[str, ...]:
        return self.classnames[math.ceil(self.num_classes / 2):]

    def class_folder(self, classname: str) -> str:
        return classname.replace(" ", "_")

    def how_to_get(self, root: str) -> str:
        """The command that puts this dataset under ``root``."""
        return self.get_command.format(root=root, name=self.name, config=self.config)


def _benchmark(name: str, config: str, modality: str, classnames: tuple[str, ...], sizes: tuple[int, int, int],
               gdrive_id: str, *, base_to_novel: bool = True) -> DatasetInfo:
    return DatasetInfo(name=name, config=config, modality=modality, classnames=classnames, sizes=sizes,
                       hf_file=f"{name}.zip", gdrive_id=gdrive_id, base_to_novel=base_to_novel)


CATALOGUE: tuple[DatasetInfo, ...] = (
    _benchmark("BTMRI", "btmri", "brain MRI",
               ("glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain"),
               (2854, 1141, 1717), "1_lJLZRUmczqZqoN-dNqkAzGzmi4ONoU5"),
    _benchmark("BUSI", "busi", "breast ultrasound",
               ("benign tumor", "malignant tumor", "normal scan"),
               (389, 155, 236), "1hB5M7wcAUTV9EtiYrijACoQ36R6VmQaa", base_to_novel=False),
    _benchmark("CHMNIST", "chmnist", "colorectal histology",
               ("adipose tissue", "complex stroma", "debris", "empty background", "immune cells",
                "normal mucosal glands", "simple stroma", "tumour epithelium"),
               (2496, 1000, 1504), "1tyQiYQmqAGNaY4SCK_8U5vEbbaa1AD-g"),
    _benchmark("COVID_19", "covid", "chest X-ray",
               ("covid lungs", "lung opacity lungs", "viral pneumonia lungs", "normal lungs"),
               (10582, 4232, 6351), "1zMLN5q5e_tmH-deSZQiY4Xq0M1EqCrML"),
    _benchmark("CTKidney", "ctkidney", "kidney CT",
               ("cyst kidney", "kidney stone", "kidney tumor", "normal kidney"),
               (6221, 2487, 3738), "1PBZ299k--mZL8JU7nhC1Wy8yEmlqmVDh"),
    _benchmark("DermaMNIST", "dermamnist", "dermatoscopy",
               ("actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma", "melanoma",
                "melanocytic nevus", "vascular lesion"),
               (7006, 1003, 2005), "1Jxd1-DWljunRDZ8fY80dl5zUMefriQXt"),
    _benchmark("KneeXray", "kneexray", "knee X-ray",
               ("healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis", "moderate osteoarthritis",
                "severe osteoarthritis"),
               (5778, 826, 1656), "1DBVraYJmxy2UcQ_nGLYvTB2reITOm453"),
    _benchmark("Kvasir", "kvasir", "endoscopy",
               ("dyed lifted polyps", "dyed resection margins", "esophagitis", "normal cecum", "normal pylorus",
                "normal z line", "polyps", "ulcerative colitis"),
               (2000, 800, 1200), "1T_cqnNIjmGazNeg6gziarvCNWGsFEkRi"),
    _benchmark("LungColon", "lungcolon", "histology (LC25000)",
               ("colon adenocarcinoma", "colon benign tissue", "lung adenocarcinoma", "lung benign tissue",
                "lung squamous cell carcinoma"),
               (12500, 5000, 7500), "1YIu5fqMXgyemisiL1L1HCvES2nVpCtun"),
    _benchmark("OCTMNIST", "octmnist", "retinal OCT",
               ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal OCT scan"),
               (97477, 10832, 1000), "1mYZNWxbPxnnVvcwHQYybA8gdMzQAoOem"),
    _benchmark("RETINA", "retina", "fundus photography",
               ("diabetic retinopathy", "glaucoma", "cataract", "normal retina"),
               (2108, 841, 1268), "18U-Gc22h5QryomNNzY4r4Qfrq52yf5EO"),
    DatasetInfo(
        name="SynthMed", config="synthmed", modality="synthetic (generated offline)",
        classnames=("round cyst lesion", "spiculated mass lesion", "striped fibrous tissue", "dotted granular tissue",
                    "bright calcified nodule", "normal background tissue"),
        sizes=(240, 60, 120), get_command="python scripts/make_synthetic_data.py --root {root}",
    ),
    DatasetInfo(
        name=synthlesion.DATASET_NAME, config="synthlesion", modality="synthetic lesions (rendered offline)",
        classnames=synthlesion.SYNTHLESION_CLASSNAMES,
        sizes=tuple(n * len(synthlesion.SYNTHLESION_CLASSES) for n in (  # type: ignore[arg-type]
            synthlesion.N_TRAIN_PER_CLASS, synthlesion.N_VAL_PER_CLASS, synthlesion.N_TEST_PER_CLASS)),
        get_command="python scripts/make_synthetic_data.py --dataset synthlesion --root {root}",
    ),
    DatasetInfo(  # the same images in SynthLesion's clinical regime: medical labels, LLM-style bank, near domain
        name=synthlesion.CLINICAL_DATASET_NAME, config=synthlesion.CLINICAL_WORLD.key,
        modality="synthetic lesions, clinical regime (rendered offline)",
        classnames=synthlesion.CLINICAL_CLASSNAMES,
        sizes=tuple(n * len(synthlesion.SYNTHLESION_CLASSES) for n in (  # type: ignore[arg-type]
            synthlesion.N_TRAIN_PER_CLASS, synthlesion.N_VAL_PER_CLASS, synthlesion.N_TEST_PER_CLASS)),
        get_command="python scripts/make_synthetic_data.py --dataset synthlesion_clinical --root {root}",
    ),
)

BENCHMARK = tuple(row for row in CATALOGUE if row.hf_file)  # the 11 datasets of the paper


def get_info(name: str) -> DatasetInfo:
    """The row whose ``name`` (e.g. ``COVID_19``) or ``config`` (e.g. ``covid``) is ``name``."""
    for row in CATALOGUE:
        if name in (row.name, row.config):
            return row
    from engine.registry import RegistryError, suggest

    choices = [r.name for r in CATALOGUE] + [r.config for r in CATALOGUE]
    raise RegistryError(f"Unknown dataset {name!r}.{suggest(name, choices)} Known: "
                        f"{', '.join(r.config for r in CATALOGUE)}")
