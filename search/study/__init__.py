"""The record of a search: the run's Optuna study, its storage (an append-only journal by
default), the run lock, objectives as directions and budgets as constraints, and the typed
record of each trial (:class:`TrialRecord`: its Optuna user attributes, written and read here).

Owns how trials are stored and read back. Must not import the algorithms, the engine or the
outputs, nor torch.
"""

from __future__ import annotations

from hwsearch.search.study._contract import SpecChanged, contract_of
from hwsearch.search.study._final import FINAL_DIR, Fidelity, FinalRecord, final_records, final_spec, write_final_record
from hwsearch.search.study._records import DEEPEST, GIVEN, LARGEST, RECORD_VERSION, Status, TrialRecord
from hwsearch.search.study._study import (
                                          INFEASIBLE_ACCURACY,
                                          JOURNAL,
                                          CorruptJournal,
                                          RunLocked,
                                          RunMismatch,
                                          TornRecordWarning,
                                          counts_toward_budget,
                                          is_feasible,
                                          load_study,
                                          open_study,
                                          recover_interrupted,
                                          run_lock,
                                          run_storage,
                                          storage_for,
                                          trial_seed,
)

__all__ = [
    "DEEPEST",
    "GIVEN",
    "LARGEST",
    "FINAL_DIR",
    "Fidelity",
    "FinalRecord",
    "final_records",
    "final_spec",
    "write_final_record",
    "INFEASIBLE_ACCURACY",
    "JOURNAL",
    "RECORD_VERSION",
    "Status",
    "TrialRecord",
    "CorruptJournal",
    "RunLocked",
    "RunMismatch",
    "SpecChanged",
    "contract_of",
    "TornRecordWarning",
    "counts_toward_budget",
    "is_feasible",
    "load_study",
    "open_study",
    "recover_interrupted",
    "run_lock",
    "run_storage",
    "storage_for",
    "trial_seed",
]
