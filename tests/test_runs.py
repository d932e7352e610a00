"""The self-describing model artifact: a run loads from its model card alone, and a card or weights
file that does not match is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import build_image_set, make_config  # noqa: E402

from pipeline.models.registry import model_spec  # noqa: E402
from pipeline.runs import MODEL_CARD, ModelArtifactError, load_ensemble, read_model_card, spec_from_card  # noqa: E402
from pipeline.train.loop import train_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("runs"), ensemble=2, epochs=1, calibration="platt")
    build_image_set(cfg, n_stocks=2)
    return train_run(cfg)


def test_card_describes_the_run(run):
    card = read_model_card(run)
    assert card["model"] == "I5" and card["image_set"] == "I5/week" and card["horizon"] == 5
    assert card["label_return"] == "period" and card["image_hw"] == [32, 15]
    assert spec_from_card(card) == model_spec("I5")
    assert [m["weights"] for m in card["members"]] == ["member_0/best.pt", "member_1/best.pt"]
    assert all(m["calibration"]["method"] == "platt" for m in card["members"])
    assert card["norm"] == json.loads((run / "norm.json").read_text())
    prov = card["provenance"]
    assert prov["torch"] == torch.__version__ and prov["cores"] >= 1 and "python" in prov


def test_load_ensemble_without_the_config(run, tmp_path):
    """Copied anywhere without the experiment's YAML, the run still loads and predicts the same."""
    import shutil

    copy = tmp_path / "elsewhere"
    shutil.copytree(run, copy)
    (copy / "config.yaml").unlink()
    a, b = load_ensemble(run), load_ensemble(copy)
    x = torch.rand(4, 1, 32, 15)
    with torch.no_grad():
        for m, n in zip(a.members, b.members):
            assert torch.equal(m(x), n(x))
    assert b.indices == [0, 1] and len(b.calibrations) == 2
    one = load_ensemble(copy, [1])
    assert one.indices == [1] and one.calibrations == [b.calibrations[1]]
    with pytest.raises(ModelArtifactError, match="no member 2"):
        load_ensemble(copy, [2])


def test_changed_weights_or_format_are_refused(run, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(run, copy)
    w = torch.load(copy / "member_0" / "best.pt", weights_only=True)
    k = next(iter(w))
    w[k] = w[k] + 1.0
    torch.save(w, copy / "member_0" / "best.pt")
    with pytest.raises(ModelArtifactError, match=r"member_0/best.pt does not match the SHA-256"):
        load_ensemble(copy)
    card = json.loads((copy / MODEL_CARD).read_text())
    card["format"] = 99
    (copy / MODEL_CARD).write_text(json.dumps(card))
    with pytest.raises(ModelArtifactError, match="format 99"):
        load_ensemble(copy)
    (copy / MODEL_CARD).unlink()
    with pytest.raises(ModelArtifactError, match="no model.json"):
        load_ensemble(copy)


def test_a_run_without_a_card_gets_one_when_train_runs_again(tmp_path):
    cfg = make_config(tmp_path, ensemble=1, epochs=1)
    build_image_set(cfg, n_stocks=2)
    run = train_run(cfg)
    before = read_model_card(run)["members"][0]["sha256"]
    (run / MODEL_CARD).unlink()
    assert train_run(cfg) == run  # skipped (already trained) but the card is written
    assert read_model_card(run)["members"][0]["sha256"] == before
    assert np.isfinite(read_model_card(run)["norm"]["mean"])
