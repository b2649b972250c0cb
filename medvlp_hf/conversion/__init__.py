"""Converters of the authors' original checkpoints to medvlp-hf (`convert_<model>_original_checkpoint.py`, one per
model: its key table and model-specific steps), the steps they share (`conversion_utils`) and parity records
(`parity`). Run them with `medvlp convert MODEL ...`; they reach the models only through the Auto classes."""
