"""hwsearch train: the final training stage, for real on digits, killed and resumed."""

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch

from hwsearch.search.engine import train_final
from hwsearch.search.engine._runner import run_search
from hwsearch.search.errors import SearchError
from hwsearch.search.outputs._export import export_trial
from hwsearch.search.outputs._results import RunResults
from hwsearch.search.spec import parse_spec
from hwsearch.search.study import FINAL_DIR, Fidelity, final_records
from tests.conftest import REPO, hwsearch_cmd, tiny_spec

FIDELITY = Fidelity(epochs=3, finetune_epochs=1, limit=None)  # all of digits' 1,797 images, not the search's 400


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    spec = parse_spec(tiny_spec(search={"trials": 4}))
    run_dir = tmp_path_factory.mktemp("final") / "run"
    run_search(spec, run_dir, progress=False, log=lambda m: None)
    return run_dir


@pytest.fixture(scope="module")
def trained(searched, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("final-trained") / "run"
    shutil.copytree(searched, run_dir)
    front = [r.number for r in RunResults(run_dir).pareto()][:2]
    out = train_final(run_dir, front, FIDELITY, progress=False, log=lambda m: None)
    return run_dir, front, out


def test_final_training_records_both_accuracies_on_all_the_data(trained):
    run_dir, front, out = trained
    assert sorted(out.records) == sorted(front) and not out.failed and not out.skipped
    results = RunResults(run_dir)
    by_number = {r.number: r for r in results.rows()}
    for n, record in final_records(run_dir).items():
        assert record.search_accuracy == by_number[n].accuracy  # the search's, as the study holds it
        assert by_number[n].final_accuracy == record.accuracy and 0.0 < record.accuracy <= 1.0
        assert record.train_images + record.val_images == 1797  # the search saw 400 of them
        assert record.fidelity == FIDELITY and record.host and record.images_per_s > 0
        assert [c["phase"] for c in record.curve] == ["dense"] * 3 + ["finetune"]
        assert (run_dir / record.weights).is_file()
    assert not list((run_dir / FINAL_DIR / "checkpoints").glob("*.pt"))  # removed once a candidate is done
    final_front = results.final_pareto()
    assert final_front and {r.number for r in final_front} <= set(front)
    assert all(r.final_accuracy is not None for r in final_front)


def test_final_training_skips_what_it_did_and_refuses_another_fidelity(trained):
    run_dir, front, _ = trained
    again = train_final(run_dir, front, FIDELITY, progress=False, log=lambda m: None)
    assert sorted(again.skipped) == sorted(front) and again.records.keys() == set(front)
    with pytest.raises(SearchError, match=r"another final fidelity \(3 \+ 1 epochs on all the data.*delete"):
        train_final(run_dir, front[:1], Fidelity(epochs=4, finetune_epochs=1), progress=False, log=lambda m: None)


def test_untrained_trials_are_refused(searched, tmp_path):
    results = RunResults(searched)
    trained = {r.number for r in results.rows() if r.state == "complete"}
    with pytest.raises(SearchError, match="has no trial 99"):
        train_final(searched, [99], FIDELITY, progress=False, log=lambda m: None)
    others = [r.number for r in results.rows() if r.number not in trained]
    if others:
        with pytest.raises(SearchError, match="only trained, feasible trials"):
            train_final(searched, others[:1], FIDELITY, progress=False, log=lambda m: None)


def test_export_uses_the_final_weights_and_says_so(trained, tmp_path):
    run_dir, front, _ = trained
    record = final_records(run_dir)[front[0]]
    card = export_trial(run_dir, front[0], tmp_path / "out").card
    assert card["weights"]["source"] == "final" and card["weights"]["file"] == record.weights
    assert card["accuracy"]["fidelity"] == "final" and card["accuracy"]["final"] == record.accuracy
    assert card["accuracy"]["torch"] == pytest.approx(record.accuracy, abs=1e-9)
    assert card["accuracy"]["validation_images"] == record.val_images
    assert not [w for w in card["warnings"] if "final weights" in w]


def test_pareto_prints_the_front_by_final_accuracy(trained):
    run_dir, front, _ = trained
    out = subprocess.run([*hwsearch_cmd(), "pareto", str(run_dir)], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "the front by final accuracy" in out.stdout and "3 + 1 epochs on all the data" in out.stdout
    as_json = json.loads(subprocess.run([*hwsearch_cmd(), "pareto", str(run_dir), "--json"], capture_output=True,
                                        text=True, cwd=REPO, timeout=120).stdout)
    assert {r["number"] for r in as_json["final"]} <= set(front)
    assert all(r["final_accuracy"] is not None for r in as_json["final"])


def _train(run_dir, trial: int, epochs: int) -> subprocess.Popen:
    return subprocess.Popen([*hwsearch_cmd(), "train", str(run_dir), "--trial", str(trial), "--epochs", str(epochs),
                             "--finetune-epochs", "1", "--limit", "300", "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_final_training_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_one(searched, tmp_path):
    number = RunResults(searched).pareto()[0].number
    epochs = 8
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    shutil.copytree(searched, whole)
    shutil.copytree(searched, killed)

    proc = _train(killed, number, epochs)
    progress = killed / FINAL_DIR / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        saved = [json.loads(p.read_text()) for p in progress.glob("*.json")] if progress.exists() else []
        if saved and saved[0]["epoch"] >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"it finished before it could be killed:\n{proc.communicate()[0]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = [json.loads(p.read_text()) for p in progress.glob("*.json")]
    assert saved and saved[0]["phase"] == "dense" and 2 <= saved[0]["epoch"] < epochs
    assert not final_records(killed)  # nothing recorded for a candidate that did not finish

    resumed = _train(killed, number, epochs)
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[0]
    reference = _train(whole, number, epochs)
    assert reference.wait(timeout=300) == 0, reference.communicate()[0]
    a, b = final_records(killed)[number], final_records(whole)[number]
    assert a.accuracy == b.accuracy and a.curve[-1]["loss"] == b.curve[-1]["loss"]
    assert [c["val_accuracy"] for c in a.curve] == [c["val_accuracy"] for c in b.curve]
    wa, wb = torch.load(killed / a.weights, weights_only=True), torch.load(whole / b.weights, weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
