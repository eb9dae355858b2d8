"""The project's synthetic worlds, kept apart from what a real run uses (``datasets/``, ``clip_backbones/``).

- :mod:`synth.synthmed`: SynthMed, 6 generated classes in mixed file formats, for unit tests.
- :mod:`synth.synthlesion`: SynthLesion, the procedural lesion world in which prompt learning really learns
  (../shared/docs/SYNTHLESION.md).
- :mod:`synth.pretrain`: the pre-training of the tiny SynthLesion CLIP (``scripts/pretrain_tiny_clip.py``).

The datasets are registered like every other one, by their rows in ``datasets/catalogue.py``; the shipped
pre-trained model by its entry in ``clip_backbones/tiny.py``. Importing this package loads nothing heavy.
"""
