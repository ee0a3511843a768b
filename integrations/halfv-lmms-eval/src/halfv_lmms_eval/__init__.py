"""halfv models for lmms-eval: ``--model halfv`` (any backbone halfv supports) or a family
model (``halfv_llava``, ``halfv_llava_next``, ``halfv_qwen2_5_vl``, ``halfv_internvl``).

The classes live in :mod:`halfv_lmms_eval.model` and are imported by lmms-eval when a run
asks for them; importing this package does not import lmms-eval or transformers.
"""

__version__ = "0.1.0"
