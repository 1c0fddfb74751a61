"""What a run gives back: the read-only results API (:class:`RunResults`, used by ``hwsearch
pareto``, export and the app) and the export of trained candidates as verified ONNX files with
a model card.

Owns reading finished work. Must not import the engine, and never writes to a study.
"""

from __future__ import annotations

from hwsearch.search.outputs._export import (
                                             CARD_FILE,
                                             FP32_FILE,
                                             INT8_FILE,
                                             ExportError,
                                             ExportReport,
                                             export_pareto,
                                             export_trial,
                                             onnx_accuracy,
                                             onnx_predictions,
                                             quantize_int8,
                                             raw_pixels,
                                             with_input_adapter,
)
from hwsearch.search.outputs._results import (
                                             Repricing,
                                             Row,
                                             RunResults,
                                             TrialDetail,
                                             non_dominated,
                                             normalized_hypervolume,
                                             run_storage,
                                             storage_stamp,
                                             study_names,
)

__all__ = ["CARD_FILE", "FP32_FILE", "INT8_FILE", "ExportError", "ExportReport", "Repricing", "Row", "RunResults",
           "TrialDetail", "export_pareto", "export_trial", "non_dominated", "normalized_hypervolume", "onnx_accuracy",
           "onnx_predictions", "quantize_int8", "raw_pixels", "run_storage", "storage_stamp", "study_names",
           "with_input_adapter"]
